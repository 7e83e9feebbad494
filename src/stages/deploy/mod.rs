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
mod delete;
pub mod desired;
pub mod diff;
mod fields;
pub mod history;
mod hook_run;
pub mod hooks;
pub mod inventory;
mod lease;
mod limits;
mod listed;
pub mod order;
mod outcome;
mod plan;
mod prune;
pub mod ready;
mod removal;
mod request;
mod run;
pub mod source;
pub mod status;
mod strategy;
mod wait;

use std::sync::Arc;
use std::time::Instant;

use crate::adapters::cluster;
use crate::adapters::retry::Retrier;
use crate::progress::Progress;
use run::Run;

pub use delete::{DeleteRequest, delete_group};
pub use outcome::{DeployError, DeployReport, ObjectReport, Op};
pub use request::{COMMIT_ANNOTATION, DeployRequest, Group};

/// Deploys the app group. Everything that can be checked is checked before the first write;
/// what needs the cluster (dry runs, ownership) is checked holding the group's lock, so it
/// sees what the previous deploy left. Calls that fail for a passing reason are retried.
pub async fn deploy(
    request: &DeployRequest,
    progress: Arc<dyn Progress>,
) -> Result<DeployReport, DeployError> {
    let started = Instant::now();
    let desired = desired::load(
        &request.source.dir,
        &request.group.env,
        desired::Encrypted::Decrypt,
    )
    .map_err(DeployError::Invalid)?;
    let state_crds = plan::crds_in_state(&desired);
    let (desired, hooks) = hooks::split(desired).map_err(DeployError::Invalid)?;
    let retrier = Retrier::reporting(progress.clone());
    let cluster = request.group.connect().await?;
    let discovery = cluster::discover(&cluster, &retrier).await?;
    let targets = plan::targets_of(desired, &discovery);
    let waves = plan::plan_waves(&targets, &state_crds)?;
    let hooks = plan::HookPlan::new(hooks, &discovery, &state_crds)?;
    let inventories = request.group.inventories(&cluster.client, &retrier);
    let locked = lease::with_group_lock(
        &inventories,
        request.lock_timeout,
        progress.as_ref(),
        |fence| async {
            let run = Run::holding(
                request,
                progress.as_ref(),
                &cluster,
                &discovery,
                &retrier,
                fence,
            );
            run.locked(targets, &state_crds, waves, hooks, &inventories)
                .await
        },
    );
    let mut outcome = locked.await;
    match &mut outcome {
        Ok(report) => report.retries = retrier.notes(),
        Err(DeployError::Failed { report, .. } | DeployError::Timeout { report, .. }) => {
            report.retries = retrier.notes();
        }
        Err(_) => {}
    }
    outcome
        .map_err(|e| e.with_duration(started))
        .map(|mut report| {
            report.duration_ms = started.elapsed().as_millis();
            report
        })
}
