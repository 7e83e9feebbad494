//! `umbrella diff app-group`: what a deploy would change, object by object (from LISTs of the
//! live objects, server-side dry runs of those that differ), and what pruning would delete.
//! Nothing is written.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::Client;
use kube::discovery::Discovery;
use serde::Serialize;

use super::compare::{Comparison, ObjectDiff};
use super::hooks;
use super::inventory::{self, Inventory};
use super::outcome::{DeployError, Op};
use super::request::Group;
use super::source::{DeploySource, SourceError};
use super::{desired, plan, removal};
use crate::adapters::cluster;
use crate::adapters::retry::{Retrier, RetryNote};
use crate::exit::{self, ExitStatus};
use crate::formats::object_ref::ObjectRef;
use crate::progress::Progress;

/// What `diff app-group` compares, and as which deploy.
#[derive(Debug)]
pub struct DiffRequest {
    pub group: Group,
    pub source: DeploySource,
    /// Objects compared at the same time.
    pub concurrency: usize,
    /// Compare as `deploy --force-conflicts` would apply.
    pub force_conflicts: bool,
    /// Compare as `deploy --adopt` would apply.
    pub adopt: bool,
}

/// What `deploy app-group` would change, object by object. An object whose only change would
/// be umbrella's state-commit annotation counts as unchanged: its content is.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffReport {
    pub env: String,
    pub objects: Vec<ObjectDiff>,
    /// Apps whose directory is gone from the state: a deploy deletes them.
    pub deleted_apps: Vec<String>,
    /// The helm hooks a deploy would run (`app Kind/name (event)`), in their order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
    /// Calls that failed for a passing reason and were tried again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<RetryNote>,
}

impl DiffReport {
    /// A deploy would change something.
    pub fn has_changes(&self) -> bool {
        !self.deleted_apps.is_empty()
            || !self.hooks.is_empty()
            || self.objects.iter().any(|o| o.op != Op::Unchanged)
    }

    /// Some object could not be compared.
    pub fn has_errors(&self) -> bool {
        self.objects.iter().any(|o| o.error.is_some())
    }

    /// 1 when some object could not be compared; else 2 when `changes_fail` (`--exit-code`)
    /// and a deploy would change something; else 0.
    pub fn exit_code(&self, changes_fail: bool) -> u8 {
        if self.has_errors() {
            exit::FAILURE
        } else if changes_fail && self.has_changes() {
            exit::REFUSED
        } else {
            exit::SUCCESS
        }
    }
}

/// Why `diff` or `status` could not compare: exit 1 whatever the cause, since their 2 means
/// "changes" (or "drift"), which a failure must never be taken for.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
}

impl ExitStatus for CompareError {
    fn exit_code(&self) -> u8 {
        exit::FAILURE
    }
}

/// Compares every object of the request's state with the cluster, and lists what pruning would
/// delete. Nothing is written: updates are server-side dry runs.
pub async fn diff_group(
    request: &DiffRequest,
    progress: Arc<dyn Progress>,
) -> Result<DiffReport, CompareError> {
    Ok(compare_group(request, Retrier::reporting(progress)).await?)
}

async fn compare_group(request: &DiffRequest, retrier: Retrier) -> Result<DiffReport, DeployError> {
    let env = &request.group.env;
    let desired = desired::load(&request.source.dir, env, desired::Encrypted::Decrypt)
        .map_err(DeployError::Invalid)?;
    let state_crds = plan::crds_in_state(&desired);
    let (desired, hooks) = hooks::split(desired).map_err(DeployError::Invalid)?;
    let cluster = request.group.connect().await?;
    let client = cluster.client.clone();
    let discovery = cluster::discover(&cluster, &retrier).await?;
    let targets = plan::targets_of(desired, &discovery);
    let comparison = Comparison {
        client: &client,
        retrier: &retrier,
        env,
        commits: &request.source.commits,
        state_crds: &state_crds,
        force_conflicts: request.force_conflicts,
        adopt: request.adopt,
    };
    let mut objects: Vec<ObjectDiff> = comparison
        .all(&targets, request.concurrency)
        .await?
        .into_iter()
        .map(|(diff, _)| diff)
        .collect();
    let previous = request
        .group
        .inventories(&client, &retrier)
        .by_app()
        .await?;
    if let Some(other) = inventory::other_repository(env, &previous, &request.source.repository) {
        return Err(DeployError::Invalid(vec![other]));
    }
    let wanted = plan::wanted_by_app(&targets);
    objects.extend(pruned(&client, &retrier, &discovery, &previous, &wanted).await?);
    Ok(DiffReport {
        env: env.clone(),
        hooks: hooks::would_run(
            &hooks,
            &hooks::operations(
                &hooks,
                &inventory::deployed_commits(&previous),
                &request.source.commits,
                false,
            ),
        ),
        objects,
        deleted_apps: previous
            .keys()
            .filter(|app| !wanted.contains_key(*app))
            .cloned()
            .collect(),
        retries: retrier.notes(),
    })
}

/// What the inventories own, the state no longer has, and the cluster still holds: deleted,
/// or let go; a deletion deploy would refuse carries why.
async fn pruned(
    client: &Client,
    retrier: &Retrier,
    discovery: &Discovery,
    previous: &BTreeMap<String, Inventory>,
    wanted: &BTreeMap<String, BTreeSet<ObjectRef>>,
) -> Result<Vec<ObjectDiff>, DeployError> {
    let stale = removal::stale(previous, wanted);
    let live = removal::live_stale(client, retrier, discovery, stale).await?;
    Ok(live
        .iter()
        .map(|stale| ObjectDiff {
            app: stale.owned.0.clone(),
            object: stale.owned.1.to_string(),
            op: if stale.orphan { Op::Orphan } else { Op::Delete },
            diff: String::new(),
            note: None,
            error: removal::forbidden(std::slice::from_ref(stale), wanted).pop(),
        })
        .collect())
}
