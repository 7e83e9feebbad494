//! The state against the live cluster, without writing to it: `umbrella diff` (what a deploy
//! would change, by server-side dry run) and `umbrella status` (is the cluster still what was
//! deployed, and is it healthy).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch};
use kube::discovery::Discovery;
use serde::Serialize;
use serde_json::Value;

use super::desired::{self, ObjectRef};
use super::inventory::{APP_LABEL, Inventories, Inventory};
use super::ready::{self, Readiness};
use super::{
    DeployError, DeployRequest, Op, Target, api_for, apply_params, cluster_error, crds_in_state,
    describe_apply_error, discover, prepared, resolve, stale, targets_of, wanted_by_app, with_type,
};
use crate::cluster::Cluster;

/// One object in a diff.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDiff {
    pub app: String,
    pub object: String,
    pub op: Op,
    /// The unified diff, Secret data masked; empty when unchanged or deleted.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub diff: String,
    /// What the deploy will meet, e.g. fields other managers own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Why the object could not be compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
}

impl DiffReport {
    /// A deploy would change something.
    pub fn has_changes(&self) -> bool {
        !self.deleted_apps.is_empty() || self.objects.iter().any(|o| o.op != Op::Unchanged)
    }

    /// Some object could not be compared.
    pub fn has_errors(&self) -> bool {
        self.objects.iter().any(|o| o.error.is_some())
    }
}

/// Compares every object of the request's state with the cluster, and lists what pruning would
/// delete. Nothing is written: updates are server-side dry runs.
pub async fn diff_group(request: &DeployRequest) -> Result<DiffReport, DeployError> {
    let desired = desired::load(&request.state_dir, &request.env).map_err(DeployError::Invalid)?;
    let client = Cluster::connect(request.context.as_deref())
        .await
        .map_err(cluster_error)?
        .client;
    let discovery = discover(&client).await?;
    let state_crds = crds_in_state(&desired);
    let targets = targets_of(desired, &discovery);
    let comparison = Comparison {
        client: &client,
        commits: &request.commits,
        state_crds: &state_crds,
        force_conflicts: request.force_conflicts,
        adopt: request.adopt,
    };
    let mut objects: Vec<ObjectDiff> = comparison
        .all(&targets, request.concurrency)
        .await
        .into_iter()
        .map(|(diff, _)| diff)
        .collect();
    let previous = Inventories::new(client.clone(), &request.inventory_namespace, &request.env)
        .by_app()
        .await
        .map_err(DeployError::Cluster)?;
    let wanted = wanted_by_app(&targets);
    objects.extend(pruned(&client, &discovery, &previous, &wanted).await);
    Ok(DiffReport {
        env: request.env.clone(),
        objects,
        deleted_apps: previous
            .keys()
            .filter(|app| !wanted.contains_key(*app))
            .cloned()
            .collect(),
    })
}

/// How often a comparison reads again when the object changed between its read and its dry run.
const SNAPSHOT_ATTEMPTS: usize = 5;

/// The live object, and the dry run's answer (with its note) or why it failed.
type DryRunSnapshot = (Option<Value>, Result<(Value, Option<String>), kube::Error>);

/// How the state's objects are compared with the live ones.
struct Comparison<'a> {
    client: &'a Client,
    commits: &'a BTreeMap<String, String>,
    state_crds: &'a BTreeMap<(String, String), bool>,
    force_conflicts: bool,
    /// Objects another app owns may be taken over (deploy's `--adopt`).
    adopt: bool,
}

impl Comparison<'_> {
    /// Every target compared, in the targets' order, each with its live object.
    async fn all(
        &self,
        targets: &[Target],
        concurrency: usize,
    ) -> Vec<(ObjectDiff, Option<Value>)> {
        futures_util::stream::iter(targets)
            .map(|target| self.one(target))
            .buffered(concurrency.max(1))
            .collect()
            .await
    }

    async fn one(&self, target: &Target) -> (ObjectDiff, Option<Value>) {
        let label = target.reference.to_string();
        let object = prepared(target, self.commits.get(&target.desired.app));
        let mut report = ObjectDiff {
            app: target.desired.app.clone(),
            object: label.clone(),
            op: Op::Create,
            diff: String::new(),
            note: None,
            error: None,
        };
        let Some((resource, namespaced)) = &target.resource else {
            self.unknown_kind(target, &object, &mut report);
            return (report, None);
        };
        let api = api_for(self.client, resource, *namespaced, &target.reference);
        let (live, dry_run) = match self.snapshot(&api, target, &object).await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                report.error = Some(error);
                return (report, None);
            }
        };
        if live.is_some() {
            report.op = Op::Update;
        }
        if let Some(error) = self.owned_elsewhere(target, live.as_ref()) {
            report.error = Some(error);
            return (report, live);
        }
        let after = match dry_run {
            Ok((after, note)) => {
                report.note = note;
                // A create shows the object as umbrella sends it: server defaults stay out.
                if live.is_some() { after } else { object }
            }
            // Its namespace does not exist yet: the deploy creates it first.
            Err(kube::Error::Api(e)) if e.code == 404 && live.is_none() => object,
            Err(e) => {
                report.error = Some(describe_apply_error(&e));
                return (report, live);
            }
        };
        let change = super::diff::change(&label, live.as_ref(), &after);
        report.op = change.op;
        report.diff = change.diff;
        (report, live)
    }

    /// The live object and the dry run's answer, both of the same version of the object: a
    /// controller writing between the two (a Deployment's revision annotation, say) would
    /// otherwise show as a change the deploy makes.
    async fn snapshot(
        &self,
        api: &Api<DynamicObject>,
        target: &Target,
        object: &Value,
    ) -> Result<DryRunSnapshot, String> {
        let version = |v: &Value| v["metadata"]["resourceVersion"].clone();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let live = api
                .get_opt(&target.reference.name)
                .await
                .map_err(|e| describe_apply_error(&e))?
                .map(|l| with_type(&l, &target.reference));
            let dry_run = self.dry_run(api, target, object).await;
            let moved = match (&live, &dry_run) {
                (Some(live), Ok((after, _))) => version(live) != version(after),
                _ => false,
            };
            if !moved || attempts == SNAPSHOT_ATTEMPTS {
                return Ok((live, dry_run));
            }
        }
    }

    /// An object whose kind the cluster does not know yet: created after its CRD, if the state
    /// has one; an error otherwise.
    fn unknown_kind(&self, target: &Target, object: &Value, report: &mut ObjectDiff) {
        let reference = &target.reference;
        if self
            .state_crds
            .contains_key(&(reference.group().into(), reference.kind.clone()))
        {
            report.diff = super::diff::change(&report.object, None, object).diff;
            report.note = Some("its kind comes from a CRD this deploy creates".into());
        } else {
            report.error = Some(format!(
                "the cluster does not know {} ({}) and no CRD in the state defines it",
                reference.kind, reference.api_version
            ));
        }
    }

    /// Why deploy would refuse the object: another app owns it (without `--adopt`).
    fn owned_elsewhere(&self, target: &Target, live: Option<&Value>) -> Option<String> {
        let owner = live?["metadata"]["labels"][APP_LABEL].as_str()?;
        (owner != target.desired.app && !self.adopt).then(|| {
            format!(
                "owned by app {owner}; deploy needs --adopt to move it to {}",
                target.desired.app
            )
        })
    }

    /// The server's answer to the apply, not persisted. A conflict with other field managers
    /// is noted and the dry run repeated with force, to show what `--force-conflicts` would do.
    async fn dry_run(
        &self,
        api: &Api<DynamicObject>,
        target: &Target,
        object: &Value,
    ) -> Result<(Value, Option<String>), kube::Error> {
        let apply = |force: bool| {
            let params = apply_params(force).dry_run();
            async move {
                api.patch(&target.reference.name, &params, &Patch::Apply(object))
                    .await
                    .map(|o| with_type(&o, &target.reference))
            }
        };
        match apply(self.force_conflicts).await {
            Err(kube::Error::Api(e)) if e.code == 409 && !self.force_conflicts => {
                let note = format!(
                    "{}; deploy needs --force-conflicts to take these fields back",
                    e.message
                );
                Ok((apply(true).await?, Some(note)))
            }
            other => other.map(|after| (after, None)),
        }
    }
}

/// What the inventories own, the state no longer has, and the cluster still holds.
async fn pruned(
    client: &Client,
    discovery: &Discovery,
    previous: &BTreeMap<String, Inventory>,
    wanted: &BTreeMap<String, BTreeSet<ObjectRef>>,
) -> Vec<ObjectDiff> {
    let mut deletions = Vec::new();
    for (app, reference) in stale(previous, wanted) {
        let (exists, error) = match live_object(client, discovery, &reference).await {
            Ok(live) => (live.is_some(), None),
            Err(e) => (true, Some(e)),
        };
        if exists {
            deletions.push(ObjectDiff {
                app,
                object: reference.to_string(),
                op: Op::Delete,
                diff: String::new(),
                note: None,
                error,
            });
        }
    }
    deletions
}

/// The live object, `None` when it (or its kind) is gone.
async fn live_object(
    client: &Client,
    discovery: &Discovery,
    reference: &ObjectRef,
) -> Result<Option<Value>, String> {
    let Some((resource, namespaced)) = resolve(discovery, reference) else {
        return Ok(None);
    };
    api_for(client, &resource, namespaced, reference)
        .get_opt(&reference.name)
        .await
        .map(|live| live.map(|l| with_type(&l, reference)))
        .map_err(|e| e.to_string())
}

/// What `status app-group` needs.
#[derive(Debug, Clone)]
pub struct StatusRequest {
    /// The repository root: the state of each live commit is read from its git objects.
    pub root: PathBuf,
    pub env: String,
    pub context: Option<String>,
    pub inventory_namespace: String,
    pub concurrency: usize,
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
        self.objects.iter().all(|o| o.health == Health::Healthy)
    }
}

/// What `status app-group` found, app by app.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub env: String,
    pub apps: Vec<AppStatus>,
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
pub async fn status_group(request: &StatusRequest) -> Result<StatusReport, DeployError> {
    let client = Cluster::connect(request.context.as_deref())
        .await
        .map_err(cluster_error)?
        .client;
    let inventories = Inventories::new(client.clone(), &request.inventory_namespace, &request.env)
        .by_app()
        .await
        .map_err(DeployError::Cluster)?;
    let scratch = tempfile::tempdir().map_err(cluster_error)?;
    let unreadable = export_live_states(request, &inventories, scratch.path());
    let desired = desired::load(scratch.path(), &request.env).map_err(DeployError::Invalid)?;
    let discovery = discover(&client).await?;
    let state_crds = crds_in_state(&desired);
    let targets = targets_of(desired, &discovery);
    let commits = inventories
        .iter()
        .map(|(app, inventory)| (app.clone(), inventory.commit.clone()))
        .collect();
    let comparison = Comparison {
        client: &client,
        commits: &commits,
        state_crds: &state_crds,
        force_conflicts: true,
        adopt: true,
    };
    let compared = comparison.all(&targets, request.concurrency).await;
    let mut apps = Vec::new();
    for (app, inventory) in &inventories {
        let status = match unreadable.get(app) {
            Some(reason) => unverified_app(&client, &discovery, inventory, reason.clone()).await,
            None => compared_app(&client, inventory, &compared).await,
        };
        apps.push(status);
    }
    Ok(StatusReport {
        env: request.env.clone(),
        apps,
    })
}

/// Writes each app's directory as its live commit holds it under `scratch`; returns, by app,
/// why the ones that cannot be read could not.
fn export_live_states(
    request: &StatusRequest,
    inventories: &BTreeMap<String, Inventory>,
    scratch: &Path,
) -> BTreeMap<String, String> {
    let mut unreadable = BTreeMap::new();
    let prefix = format!("{}-", request.env);
    for (app, inventory) in inventories {
        let directory = app.strip_prefix(&prefix).unwrap_or(app);
        let path = format!("{}/{}/{directory}", crate::render::STATE_DIR, request.env);
        if inventory.commit.is_empty() {
            unreadable.insert(app.clone(), "no deploy of it has finished yet".to_string());
            continue;
        }
        if inventory.commit == crate::state::UNCOMMITTED {
            unreadable.insert(app.clone(), "deployed from uncommitted state".to_string());
            continue;
        }
        if let Err(e) = crate::state::export_tree(
            &request.root,
            &inventory.commit,
            &path,
            &scratch.join(directory),
        ) {
            unreadable.insert(app.clone(), e.to_string());
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
        let ((health, message), error) = match live_object(client, discovery, reference).await {
            Ok(live) => (health_of(client, live.as_ref()).await, None),
            Err(e) => ((Health::Unknown, None), Some(e)),
        };
        objects.push(ObjectStatus {
            object: reference.to_string(),
            health,
            message,
            drifted: false,
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
