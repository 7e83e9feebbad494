//! `umbrella status app-group`: per app, the state commit live in the cluster, whether the
//! cluster still matches that commit's state, and the health of every object.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::discovery::Discovery;
use serde::Serialize;
use serde_json::Value;

use super::compare::{Comparison, ObjectDiff, live_object};
use super::diff::CompareError;
use super::inventory::{self, Inventory};
use super::outcome::{DeployError, Op};
use super::ready::{self, Readiness};
use super::request::DISABLE_WAIT;
use super::request::Group;
use super::{desired, hooks, plan};
use crate::adapters::retry::{Retrier, RetryNote};
use crate::adapters::{cluster, git};
use crate::exit;
use crate::formats::layout::AppId;
use crate::progress::Progress;

/// What `status app-group` needs.
#[derive(Debug, Clone)]
pub struct StatusRequest {
    /// The repository root: the state of each live commit is read from its git objects.
    pub root: PathBuf,
    pub group: Group,
    /// Objects compared at the same time.
    pub concurrency: usize,
}

/// What makes `status` exit 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FailOn {
    /// Drift or an unhealthy object.
    #[default]
    Any,
    Drift,
    Unhealthy,
    /// Always exit 0 once the status was read.
    Never,
}

/// An object's health by the deploy's readiness rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Progressing,
    Failed,
    Missing,
    /// The object could not be read or compared (see its error).
    Unknown,
}

/// One object of an app: its health and whether it drifted from the live commit's state.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    pub object: String,
    pub health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The object differs from the live commit's state.
    pub drifted: bool,
    /// Deploy waits for it to be ready (it has no `kapp.k14s.io/disable-wait: "true"`).
    #[serde(skip_serializing_if = "is_true")]
    pub waited: bool,
    /// Why the object could not be read or compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How, Secret data masked.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub diff: String,
}

/// One app of the group as the cluster holds it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    pub app: String,
    /// The state commit the inventory records.
    pub commit: String,
    /// `None` when the commit's state cannot be read, so drift cannot be told.
    pub in_sync: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub objects: Vec<ObjectStatus>,
}

impl AppStatus {
    /// Every object of the app is healthy.
    pub fn healthy(&self) -> bool {
        self.objects.iter().all(ObjectStatus::healthy)
    }
}

impl ObjectStatus {
    /// Healthy by deploy's rules: ready, or still progressing where deploy does not wait
    /// (a failure counts either way).
    pub fn healthy(&self) -> bool {
        self.health == Health::Healthy || (self.health == Health::Progressing && !self.waited)
    }
}

fn is_true(value: &bool) -> bool {
    *value
}

/// Whether deploy waits for the object (absent: it would, once created).
fn waited(live: Option<&Value>) -> bool {
    live.is_none_or(|l| l["metadata"]["annotations"][DISABLE_WAIT] != "true")
}

/// What `status app-group` found, app by app.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub env: String,
    pub apps: Vec<AppStatus>,
    /// Calls that failed for a passing reason and were tried again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<RetryNote>,
}

impl StatusReport {
    /// Every app deployed is healthy.
    pub fn healthy(&self) -> bool {
        self.apps.iter().all(AppStatus::healthy)
    }

    /// Some app differs from its live commit, or cannot be compared with it.
    pub fn drifted(&self) -> bool {
        self.apps.iter().any(|a| a.in_sync != Some(true))
    }

    /// Some object could not be read or compared: the status is incomplete.
    pub fn has_errors(&self) -> bool {
        self.apps
            .iter()
            .flat_map(|a| &a.objects)
            .any(|o| o.error.is_some())
    }
}

/// Per app of the group: the live state commit, whether the cluster still matches that
/// commit's state (server-side dry runs, nothing written), and each object's health.
pub async fn status_group(
    request: &StatusRequest,
    progress: Arc<dyn Progress>,
) -> Result<StatusReport, CompareError> {
    Ok(look(request, Retrier::reporting(progress)).await?)
}

async fn look(request: &StatusRequest, retrier: Retrier) -> Result<StatusReport, DeployError> {
    let env = &request.group.env;
    let cluster = request.group.connect().await?;
    let client = cluster.client.clone();
    let inventories = request
        .group
        .inventories(&client, &retrier)
        .by_app()
        .await?;
    let scratch = tempfile::tempdir().map_err(DeployError::Scratch)?;
    let unreadable = export_live_states(&request.root, env, &inventories, scratch.path());
    let desired = desired::load(scratch.path(), env, desired::Encrypted::Decrypt)
        .map_err(DeployError::Invalid)?;
    let state_crds = plan::crds_in_state(&desired);
    // Hooks are not the app's objects: gone after they ran is how they should be.
    let (desired, _hooks) = hooks::split(desired).map_err(DeployError::Invalid)?;
    let discovery = cluster::discover(&cluster, &retrier).await?;
    let targets = plan::targets_of(desired, &discovery);
    let commits = inventory::deployed_commits(&inventories);
    let comparison = Comparison {
        client: &client,
        retrier: &retrier,
        env,
        commits: &commits,
        state_crds: &state_crds,
        force_conflicts: true,
        adopt: true,
    };
    let compared = comparison.all(&targets, request.concurrency).await?;
    let mut apps = Vec::new();
    for (app, inventory) in &inventories {
        let status = match unreadable.get(app) {
            Some(reason) => unverified_app(&client, &discovery, inventory, reason.clone()).await,
            None => compared_app(&client, inventory, &compared).await,
        };
        apps.push(status);
    }
    Ok(StatusReport {
        env: env.clone(),
        apps,
        retries: retrier.notes(),
    })
}

/// Writes each app's directory as its live commit holds it under `scratch`; returns, by app,
/// why the ones that cannot be read could not.
fn export_live_states(
    root: &Path,
    env: &str,
    inventories: &BTreeMap<String, Inventory>,
    scratch: &Path,
) -> BTreeMap<String, String> {
    let mut unreadable = BTreeMap::new();
    let ours = git::repository_id(root);
    for (app, inventory) in inventories {
        if inventory.repository.differs_from(&ours) {
            let why = format!(
                "deployed from another repository ({}): its commits are not in this one",
                inventory.repository
            );
            unreadable.insert(app.clone(), why);
            continue;
        }
        let Some(id) = AppId::from_name(env, app) else {
            unreadable.insert(app.clone(), format!("not an app of {env}"));
            continue;
        };
        let why = match inventory.commit.as_str() {
            "" => Some("no deploy of it has finished yet".to_string()),
            git::UNCOMMITTED => Some("deployed from uncommitted state".to_string()),
            commit => git::export_tree(root, commit, &id.path(), &scratch.join(id.dir()))
                .err()
                .map(|e| e.to_string()),
        };
        if let Some(why) = why {
            unreadable.insert(app.clone(), why);
        }
    }
    unreadable
}

/// The object's health by deploy's rules; a workload not ready whose pod failed (a crash loop,
/// an image that cannot be pulled, a failed container) is failed, with the pod's reason.
async fn health_of(client: &Client, live: Option<&Value>) -> (Health, Option<String>) {
    let Some(live) = live else {
        return (Health::Missing, None);
    };
    match ready::readiness(live) {
        Readiness::Ready => (Health::Healthy, None),
        Readiness::Failed(message) => (Health::Failed, Some(message)),
        Readiness::Waiting(message) => match failed_pod(client, live).await {
            Some(reason) => (Health::Failed, Some(reason)),
            None => (Health::Progressing, Some(message)),
        },
    }
}

/// Why a pod of the workload failed, if one did. Pods being deleted, and pods a node ended
/// (evicted, shut down: their status carries a pod-level reason), are left out: they say
/// nothing about the workload itself.
async fn failed_pod(client: &Client, workload: &Value) -> Option<String> {
    let selector = ready::pod_selector(workload)?;
    let namespace = workload["metadata"]["namespace"].as_str()?;
    let kind = workload["kind"].as_str()?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .ok()?;
    pods.items
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| pod.status.as_ref().is_none_or(|s| s.reason.is_none()))
        .find_map(|pod| {
            ready::workload_pod_failure(kind, &serde_json::to_value(pod).unwrap_or_default())
        })
}

/// An app whose live commit's state was compared with the cluster. Objects its inventory
/// lists that the commit's state lacks (left by an unfinished deploy) are drift too.
async fn compared_app(
    client: &Client,
    inventory: &Inventory,
    compared: &[(ObjectDiff, Option<Value>)],
) -> AppStatus {
    let mut objects = Vec::new();
    for (diff, live) in compared
        .iter()
        .filter(|(diff, _)| diff.app == inventory.app)
    {
        let (health, message) = match &diff.error {
            Some(_) if live.is_none() => (Health::Unknown, None),
            _ => health_of(client, live.as_ref()).await,
        };
        objects.push(ObjectStatus {
            object: diff.object.clone(),
            health,
            message,
            drifted: diff.error.is_none() && diff.op != Op::Unchanged,
            waited: waited(live.as_ref()),
            error: diff.error.clone(),
            diff: diff.diff.clone(),
        });
    }
    let compared_names: BTreeSet<&str> = objects.iter().map(|o| o.object.as_str()).collect();
    let extra: Vec<String> = inventory
        .objects
        .iter()
        .map(ToString::to_string)
        .filter(|name| !compared_names.contains(name.as_str()))
        .collect();
    let in_sync = if objects.iter().any(|o| o.error.is_some()) {
        None
    } else {
        Some(extra.is_empty() && objects.iter().all(|o| !o.drifted))
    };
    AppStatus {
        app: inventory.app.clone(),
        commit: inventory.commit.clone(),
        in_sync,
        note: (!extra.is_empty()).then(|| {
            format!(
                "the inventory also lists objects the commit's state lacks (an unfinished deploy?): {}",
                extra.join(", ")
            )
        }),
        objects,
    }
}

/// An app whose live commit cannot be read: only the health of what its inventory lists.
async fn unverified_app(
    client: &Client,
    discovery: &Discovery,
    inventory: &Inventory,
    reason: String,
) -> AppStatus {
    let mut objects = Vec::new();
    for reference in &inventory.objects {
        let ((health, message), error, waited) =
            match live_object(client, discovery, reference).await {
                Ok(live) => (
                    health_of(client, live.as_ref()).await,
                    None,
                    waited(live.as_ref()),
                ),
                Err(e) => ((Health::Unknown, None), Some(e), true),
            };
        objects.push(ObjectStatus {
            object: reference.to_string(),
            health,
            message,
            drifted: false,
            waited,
            error,
            diff: String::new(),
        });
    }
    AppStatus {
        app: inventory.app.clone(),
        commit: inventory.commit.clone(),
        in_sync: None,
        note: Some(format!("drift cannot be told: {reason}")),
        objects,
    }
}

impl StatusReport {
    /// Whether `fail_on` counts what was found as a failure: nothing deployed always does.
    pub fn fails(&self, fail_on: FailOn) -> bool {
        let deployed = !self.apps.is_empty();
        match fail_on {
            FailOn::Any => !deployed || self.drifted() || !self.healthy(),
            FailOn::Drift => !deployed || self.drifted(),
            FailOn::Unhealthy => !deployed || !self.healthy(),
            FailOn::Never => false,
        }
    }

    /// 1 when some object could not be read or compared; else 2 when `fail_on` counts what
    /// was found as a failure; else 0.
    pub fn exit_code(&self, fail_on: FailOn) -> u8 {
        if self.has_errors() {
            exit::FAILURE
        } else if self.fails(fail_on) {
            exit::REFUSED
        } else {
            exit::SUCCESS
        }
    }
}
