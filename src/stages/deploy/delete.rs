//! `delete app-group`: every object the group's inventories own deleted in reverse order and
//! waited for until gone, then the inventories; the state's `pre-delete` hooks run first and
//! its `post-delete` hooks last, as `helm uninstall` has them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::apply::Applier;
use super::hooks::{self, Operation, Phase};
use super::lease::{self, Fence};
use super::outcome::{DeployError, DeployReport, failed};
use super::plan::HookPlan;
use super::removal::{live_stale, removal, stale};
use super::request::{DeployRequest, Group};
use super::run::Run;
use super::source::DeploySource;
use super::{desired, plan};
use crate::adapters::cluster;
use crate::adapters::retry::Retrier;
use crate::progress::Progress;

/// What `delete app-group` needs.
#[derive(Debug)]
pub struct DeleteRequest {
    pub group: Group,
    pub wait_timeout: Duration,
    pub lock_timeout: Duration,
    /// The state whose delete hooks run, when the repository has one for the environment.
    pub hooks_from: Option<DeploySource>,
}

/// Deletes every object the group's inventories own, in reverse order, waits until they are
/// gone, then removes the inventories; the state's delete hooks of the deployed apps around.
pub async fn delete_group(
    request: DeleteRequest,
    progress: Arc<dyn Progress>,
) -> Result<DeployReport, DeployError> {
    let started = Instant::now();
    let retrier = Retrier::reporting(progress.clone());
    let cluster = request.group.connect().await?;
    let inventories = request.group.inventories(&cluster.client, &retrier);
    let discovery = cluster::discover(&cluster, &retrier).await?;
    let (state_hooks, as_deploy) = delete_hooks(request.hooks_from, &request.group, &discovery)?;
    let as_deploy = DeployRequest {
        wait_timeout: request.wait_timeout,
        lock_timeout: request.lock_timeout,
        ..as_deploy
    };
    let work = |fence: Fence| async {
        let run = Run::holding(
            &as_deploy,
            progress.as_ref(),
            &cluster,
            &discovery,
            &retrier,
            fence,
        );
        run.delete_everything(state_hooks, &inventories).await
    };
    let done = lease::with_group_lock(&inventories, request.lock_timeout, work).await;
    done.map_err(|e: DeployError| e.with_duration(started))
        .map(|mut report| {
            report.duration_ms = started.elapsed().as_millis();
            report.retries = retrier.notes();
            report
        })
}

/// The hooks of the state (none without one), and the request they are applied under.
fn delete_hooks(
    source: Option<DeploySource>,
    group: &Group,
    discovery: &kube::discovery::Discovery,
) -> Result<(HookPlan, DeployRequest), DeployError> {
    let found = match &source {
        Some(source) => {
            let desired = desired::load(&source.dir, &group.env).map_err(DeployError::Invalid)?;
            let state_crds = plan::crds_in_state(&desired);
            let (_, found) = hooks::split(desired).map_err(DeployError::Invalid)?;
            HookPlan::new(found, discovery, &state_crds)?
        }
        None => HookPlan::new(Vec::new(), discovery, &BTreeMap::new())?,
    };
    let request = DeployRequest {
        group: group.clone(),
        source: match source {
            Some(source) => source,
            None => DeploySource::none(),
        },
        wait_timeout: Duration::ZERO,
        concurrency: 16,
        force_conflicts: false,
        adopt: false,
        lock_timeout: Duration::ZERO,
        allow_empty: true,
        rollback: false,
    };
    Ok((found, request))
}

impl Run<'_> {
    /// Holding the lock: the pre-delete hooks of the deployed apps, every owned object, the
    /// post-delete hooks, the inventories.
    async fn delete_everything(
        &self,
        mut state_hooks: HookPlan,
        inventories: &super::inventory::Inventories,
    ) -> Result<DeployReport, DeployError> {
        let previous = inventories.by_app().await?;
        let mut report = DeployReport {
            env: self.request.group.env.clone(),
            ..Default::default()
        };
        state_hooks.operations = previous
            .keys()
            .map(|app| (app.clone(), Operation::Delete))
            .collect();
        let applier = Applier {
            client: &self.cluster.client,
            request: self.request,
            retrier: self.retrier,
        };
        self.run_hooks(&applier, &mut state_hooks, Phase::Pre, &mut report)
            .await?;
        let owned = stale(&previous, &BTreeMap::new());
        let live = live_stale(&self.cluster.client, self.retrier, self.discovery, owned).await?;
        let removal = removal(&live)
            .map_err(|e| failed(&report, format!("ordering the objects to delete: {e}")))?;
        let deleter = self.deleter();
        deleter
            .remove(self.discovery, &removal, &mut report)
            .await?;
        self.run_hooks(&applier, &mut state_hooks, Phase::Post, &mut report)
            .await?;
        for (app, inventory) in &previous {
            let deleted = self.limits.guard(inventories.delete(inventory)).await;
            deleted.map_err(|stop| stop.failure(&report, Vec::new()))??;
            report.deleted_apps.push(app.clone());
        }
        Ok(report)
    }
}
