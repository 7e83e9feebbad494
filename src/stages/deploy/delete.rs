//! `delete app-group`: every object the group's inventories own deleted in reverse order and
//! waited for until gone, then the inventories; the state's `pre-delete` hooks run first and
//! its `post-delete` hooks last, as `helm uninstall` has them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::discovery::Discovery;

use super::apply::Applier;
use super::hooks::{self, Operation, Phase};
use super::inventory;
use super::lease::{self, Fence};
use super::outcome::{DeployError, DeployReport, failed};
use super::plan::HookPlan;
use super::removal::{live_stale, removal, stale};
use super::request::{DeployRequest, Group};
use super::run::Run;
use super::source::DeploySource;
use super::{desired, plan};
use crate::adapters::cluster;
use crate::adapters::git::RepositoryId;
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
    /// The repository deleting: another one's apps are refused.
    pub repository: RepositoryId,
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
    let state_hooks = match &request.hooks_from {
        Some(source) => hooks_of(source, &request.group.env, &discovery)?,
        None => HookPlan::new(Vec::new(), &discovery, &BTreeMap::new())?,
    };
    let lock_timeout = request.lock_timeout;
    let as_deploy = request.hooks_applied_as();
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
    let done = lease::with_group_lock(&inventories, lock_timeout, progress.as_ref(), work).await;
    done.map_err(|e: DeployError| e.with_duration(started))
        .map(|mut report| {
            report.duration_ms = started.elapsed().as_millis();
            report.retries = retrier.notes();
            report
        })
}

/// The delete hooks of the state in `source`.
fn hooks_of(
    source: &DeploySource,
    env: &str,
    discovery: &Discovery,
) -> Result<HookPlan, DeployError> {
    let desired = desired::load(&source.dir, env, desired::Encrypted::NamesOnly)
        .map_err(DeployError::Invalid)?;
    let state_crds = plan::crds_in_state(&desired);
    let (_, found) = hooks::split(desired).map_err(DeployError::Invalid)?;
    HookPlan::new(found, discovery, &state_crds)
}

impl DeleteRequest {
    /// What the hooks are applied under: the deploy of the state they come from (of no state
    /// when there is none, and then no hook).
    fn hooks_applied_as(self) -> DeployRequest {
        DeployRequest {
            group: self.group,
            source: self
                .hooks_from
                .unwrap_or_else(|| DeploySource::none(self.repository)),
            wait_timeout: self.wait_timeout,
            concurrency: HOOK_CONCURRENCY,
            force_conflicts: false,
            adopt: false,
            lock_timeout: self.lock_timeout,
            allow_empty: true,
            rollback: false,
        }
    }
}

/// Hooks of one weight applied at once.
const HOOK_CONCURRENCY: usize = 16;

impl Run<'_> {
    /// Holding the lock: the pre-delete hooks of the deployed apps, every owned object, the
    /// post-delete hooks, the inventories. Refused, nothing done, when another repository
    /// deployed the environment: its apps are not this repository's to delete.
    async fn delete_everything(
        &self,
        mut state_hooks: HookPlan,
        inventories: &inventory::Inventories,
    ) -> Result<DeployReport, DeployError> {
        let previous = inventories.by_app().await?;
        let (env, ours) = (&self.request.group.env, &self.request.source.repository);
        if let Some(other) = inventory::other_repository(env, &previous, ours) {
            return Err(DeployError::Invalid(vec![other]));
        }
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
