//! The deploy stage: every app of `umbrella-state/<env>/` applied with server-side apply in
//! kapp's order, each change waited for until really ready (failing fast on what will not
//! heal), then pruning what the inventories own but the state no longer has. Beside it, the
//! commands that read the same state against the cluster: `diff`, `status`, `history`.
//!
//! Pure decisions (order, readiness, change, stale objects, rollback target) are functions over
//! data; `apply`, `wait`, `prune`, `lease` and `inventory` do the cluster I/O.

mod apply;
pub mod change;
mod compare;
pub mod desired;
pub mod diff;
pub mod history;
pub mod inventory;
mod lease;
pub mod order;
mod outcome;
mod plan;
mod prune;
pub mod ready;
mod request;
pub mod source;
pub mod status;
mod wait;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use kube::Client;

use crate::adapters::cluster;
use crate::formats::object_ref::ObjectRef;
use crate::progress::Progress;
use inventory::{Inventories, Inventory, InventoryError};
use outcome::failed;
use plan::Target;
use wait::WaitError;

pub use outcome::{DeployError, DeployReport, ObjectReport, Op};
pub use prune::{DeleteRequest, delete_group};
pub use request::{COMMIT_ANNOTATION, DeployRequest, Group};

/// Deploys the app group. Everything that can be checked is checked before the first write.
pub async fn deploy(
    request: &DeployRequest,
    progress: &dyn Progress,
) -> Result<DeployReport, DeployError> {
    let started = Instant::now();
    let desired =
        desired::load(&request.source.dir, &request.group.env).map_err(DeployError::Invalid)?;
    let client = request.group.connect().await?;
    let discovery = cluster::discover(&client).await?;
    let state_crds = plan::crds_in_state(&desired);
    let mut targets = plan::targets_of(desired, &discovery);
    let waves = plan::plan_waves(&targets, &state_crds)?;
    apply::preflight(&client, &mut targets, &state_crds, request).await?;
    let run = Run {
        request,
        progress,
        client: &client,
        started,
    };
    let inventories = request.group.inventories(&client);
    lease::with_group_lock(
        &inventories,
        request.lock_timeout,
        run.locked(targets, waves, &inventories),
    )
    .await
}

/// One deploy under way, holding the group's lock.
struct Run<'a> {
    request: &'a DeployRequest,
    progress: &'a dyn Progress,
    client: &'a Client,
    started: Instant,
}

impl Run<'_> {
    async fn locked(
        &self,
        mut targets: Vec<Target>,
        waves: Vec<Vec<usize>>,
        inventories: &Inventories,
    ) -> Result<DeployReport, DeployError> {
        let deadline = tokio::time::Instant::now() + self.request.wait_timeout;
        let previous = inventories.by_app().await?;
        let wanted = plan::wanted_by_app(&targets);
        record_intent(inventories, &previous, &wanted).await?;
        let mut report = DeployReport {
            env: self.request.group.env.clone(),
            ..Default::default()
        };
        for wave in &waves {
            plan::refresh_resources(self.client, &mut targets, wave).await?;
            self.run_wave(&targets, wave, deadline, &mut report).await?;
        }
        prune::prune(
            self.client,
            self.progress,
            &previous,
            &wanted,
            deadline,
            &mut report,
        )
        .await?;
        self.settle_inventories(inventories, &previous, &wanted, &mut report)
            .await?;
        report.duration_ms = self.started.elapsed().as_millis();
        Ok(report)
    }

    /// Applies a wave, then waits for what its answers did not show ready.
    async fn run_wave(
        &self,
        targets: &[Target],
        wave: &[usize],
        deadline: tokio::time::Instant,
        report: &mut DeployReport,
    ) -> Result<(), DeployError> {
        let applied =
            apply::apply_wave(self.client, self.request, self.progress, targets, wave).await;
        let mut positions = BTreeMap::new();
        let mut failure = None;
        let mut to_wait = Vec::new();
        for (index, op, result, duration_ms) in applied {
            positions.insert(index, report.objects.len());
            match &result {
                Ok(true) => self
                    .progress
                    .finish(&plan::label_of(&targets[index]), "ready"),
                Ok(false) => to_wait.push(index),
                Err(e) => {
                    failure
                        .get_or_insert_with(|| format!("{}: {e}", plan::label_of(&targets[index])));
                }
            }
            report.objects.push(ObjectReport::new(
                &targets[index].desired.app,
                &targets[index].reference,
                op,
                result.err(),
                duration_ms,
            ));
        }
        if let Some(reason) = failure {
            return Err(failed(report, reason));
        }
        let waited = wait::wait_wave(self.client, self.progress, targets, &to_wait, deadline).await;
        settle_waits(report, &positions, waited)
    }

    /// The inventories narrowed to what the state has, and those of deleted apps removed.
    async fn settle_inventories(
        &self,
        inventories: &Inventories,
        previous: &BTreeMap<String, Inventory>,
        wanted: &BTreeMap<String, BTreeSet<ObjectRef>>,
        report: &mut DeployReport,
    ) -> Result<(), DeployError> {
        for (app, objects) in wanted {
            let commit = self.request.source.commits.get(app).cloned();
            write_inventory(
                inventories,
                app,
                objects.clone(),
                commit.unwrap_or_default(),
            )
            .await?;
        }
        for app in previous.keys().filter(|app| !wanted.contains_key(*app)) {
            inventories.delete(app).await?;
            report.deleted_apps.push(app.clone());
        }
        Ok(())
    }
}

/// Records intent before anything is applied: each app's old and new objects together, so an
/// interruption loses track of nothing.
async fn record_intent(
    inventories: &Inventories,
    previous: &BTreeMap<String, Inventory>,
    wanted: &BTreeMap<String, BTreeSet<ObjectRef>>,
) -> Result<(), DeployError> {
    for (app, objects) in wanted {
        let before = previous.get(app);
        let mut union = before.map(|i| i.objects.clone()).unwrap_or_default();
        union.extend(objects.iter().cloned());
        let commit = before.map(|i| i.commit.clone()).unwrap_or_default();
        write_inventory(inventories, app, union, commit).await?;
    }
    Ok(())
}

/// Puts each wait's outcome on its object's line; the first failure, or the timeouts, end the
/// deploy.
fn settle_waits(
    report: &mut DeployReport,
    positions: &BTreeMap<usize, usize>,
    waited: Vec<(usize, Result<(), WaitError>)>,
) -> Result<(), DeployError> {
    let (mut failure, mut waiting) = (None, Vec::new());
    for (index, result) in waited {
        let entry = &mut report.objects[positions[&index]];
        match result {
            Ok(()) => {}
            Err(WaitError::Failed(reason)) => {
                entry.result = "failed".into();
                entry.message = Some(reason.clone());
                failure.get_or_insert(reason);
            }
            Err(WaitError::Timeout(last)) => {
                entry.result = "timeout".into();
                entry.message = Some(last.clone());
                waiting.push(last);
            }
        }
    }
    if let Some(reason) = failure {
        return Err(failed(report, reason));
    }
    if !waiting.is_empty() {
        return Err(DeployError::Timeout {
            report: report.clone(),
            waiting,
        });
    }
    Ok(())
}

async fn write_inventory(
    inventories: &Inventories,
    app: &str,
    objects: BTreeSet<ObjectRef>,
    commit: String,
) -> Result<(), InventoryError> {
    let inventory = Inventory {
        app: app.to_string(),
        objects,
        commit,
        updated: inventory::timestamp(),
    };
    inventories.write(&inventory).await
}
