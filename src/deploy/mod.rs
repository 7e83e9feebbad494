//! The deploy stage: every app of `umbrella-state/<env>/` applied with server-side apply in
//! kapp's order, each change waited for until really ready (failing fast on what will not
//! heal), then pruning what the inventories own but the state no longer has.

pub mod compare;
pub mod desired;
pub mod diff;
pub mod inventory;
pub mod order;
pub mod ready;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, LogParams, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::Value;

use crate::cluster::Cluster;
use crate::report::Progress;
use desired::{Desired, ObjectRef};
use inventory::{APP_LABEL, Inventories, Inventory, MANAGER};
use ready::Readiness;

/// The annotation with the state commit an object was deployed from.
pub const COMMIT_ANNOTATION: &str = "umbrella.dev/state-commit";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const DISABLE_WAIT: &str = "kapp.k14s.io/disable-wait";
/// How long a pod may stay unschedulable before the deploy gives up on it.
const UNSCHEDULABLE_GRACE: Duration = Duration::from_secs(30);

/// What to deploy, and how.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub state_dir: PathBuf,
    pub env: String,
    /// The state commit of each app (by app name), recorded on its objects and inventory.
    pub commits: BTreeMap<String, String>,
    pub context: Option<String>,
    pub wait_timeout: Duration,
    pub concurrency: usize,
    pub force_conflicts: bool,
    pub adopt: bool,
    pub inventory_namespace: String,
    pub lock_timeout: Duration,
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Create,
    Update,
    Unchanged,
    Delete,
}

/// What happened to one object in a deploy, prune or delete.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReport {
    pub app: String,
    pub object: String,
    pub op: Op,
    /// `ok`, `failed` or `timeout`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub duration_ms: u128,
}

impl ObjectReport {
    /// `ok`, or `failed` with the error as the message.
    fn new(
        app: &str,
        object: &ObjectRef,
        op: Op,
        error: Option<String>,
        duration_ms: u128,
    ) -> Self {
        ObjectReport {
            app: app.to_string(),
            object: object.to_string(),
            op,
            result: if error.is_some() {
                "failed".into()
            } else {
                "ok".into()
            },
            message: error,
            duration_ms,
        }
    }
}

/// Everything a deploy (or delete) did, object by object.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployReport {
    pub env: String,
    pub objects: Vec<ObjectReport>,
    pub deleted_apps: Vec<String>,
    pub duration_ms: u128,
}

/// The deploy did not succeed. Each variant has its exit status (see README).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("invalid input:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
    #[error("{0}")]
    Cluster(String),
    #[error("{reason}")]
    Failed {
        report: DeployReport,
        reason: String,
    },
    #[error("timed out; still not ready:\n  {}", waiting.join("\n  "))]
    Timeout {
        report: DeployReport,
        waiting: Vec<String>,
    },
}

impl DeployError {
    /// The report of what was applied before the failure, if anything was.
    pub fn report(&self) -> Option<&DeployReport> {
        match self {
            DeployError::Failed { report, .. } | DeployError::Timeout { report, .. } => {
                Some(report)
            }
            _ => None,
        }
    }
}

/// An object with how to reach it in the cluster (`None` until its CRD is established).
struct Target {
    desired: Desired,
    reference: ObjectRef,
    resource: Option<(ApiResource, bool)>,
    live_version: Option<String>,
}

fn cluster_error(e: impl std::fmt::Display) -> DeployError {
    DeployError::Cluster(e.to_string())
}

/// Deploys the app group. Everything that can be checked is checked before the first write.
pub async fn deploy(
    request: &DeployRequest,
    progress: &Progress,
) -> Result<DeployReport, DeployError> {
    let started = Instant::now();
    let desired = desired::load(&request.state_dir, &request.env).map_err(DeployError::Invalid)?;
    let cluster = Cluster::connect(request.context.as_deref())
        .await
        .map_err(cluster_error)?;
    let client = cluster.client.clone();
    let discovery = discover(&client).await?;
    let state_crds = crds_in_state(&desired);
    let mut targets = targets_of(desired, &discovery);
    let waves = plan_waves(&targets, &state_crds)?;
    preflight(&client, &mut targets, &state_crds, request).await?;

    let inventories = Inventories::new(client.clone(), &request.inventory_namespace, &request.env);
    with_group_lock(
        &inventories,
        request.lock_timeout,
        deploy_locked(
            request,
            progress,
            &client,
            targets,
            waves,
            &inventories,
            started,
        ),
    )
    .await
}

/// Runs `work` holding the group's lock (the inventory namespace is created if missing).
async fn with_group_lock<T>(
    inventories: &Inventories,
    lock_timeout: Duration,
    work: impl std::future::Future<Output = Result<T, DeployError>>,
) -> Result<T, DeployError> {
    inventories
        .ensure_namespace()
        .await
        .map_err(cluster_error)?;
    let holder = format!("{}@{}", std::process::id(), hostname());
    let lock = inventories
        .lock(&holder, lock_timeout)
        .await
        .map_err(DeployError::Cluster)?;
    let keep_alive = lock.keep_alive();
    let result = work.await;
    keep_alive.abort();
    lock.release().await;
    result
}

/// What `delete app-group` needs.
#[derive(Debug, Clone)]
pub struct DeleteRequest {
    pub env: String,
    pub context: Option<String>,
    pub wait_timeout: Duration,
    pub inventory_namespace: String,
    pub lock_timeout: Duration,
}

/// Deletes every object the group's inventories own, in reverse order, waits until they are
/// gone, then removes the inventories.
pub async fn delete_group(
    request: &DeleteRequest,
    progress: &Progress,
) -> Result<DeployReport, DeployError> {
    let started = Instant::now();
    let cluster = Cluster::connect(request.context.as_deref())
        .await
        .map_err(cluster_error)?;
    let client = cluster.client.clone();
    let inventories = Inventories::new(client.clone(), &request.inventory_namespace, &request.env);
    let work = async {
        let deadline = tokio::time::Instant::now() + request.wait_timeout;
        let previous = inventories.by_app().await.map_err(DeployError::Cluster)?;
        let mut report = DeployReport {
            env: request.env.clone(),
            ..Default::default()
        };
        prune(
            &client,
            progress,
            &previous,
            &BTreeMap::new(),
            deadline,
            &mut report,
        )
        .await?;
        for app in previous.keys() {
            inventories.delete(app).await.map_err(cluster_error)?;
            report.deleted_apps.push(app.clone());
        }
        report.duration_ms = started.elapsed().as_millis();
        Ok(report)
    };
    with_group_lock(&inventories, request.lock_timeout, work).await
}

/// The cluster's API resources. A group can vanish between the listing of groups and the read
/// of its resources (a CRD deleted meanwhile, by anyone): discovery is then run again.
async fn discover(client: &Client) -> Result<Discovery, DeployError> {
    let mut attempt = 1;
    loop {
        match Discovery::new(client.clone()).run().await {
            Ok(discovery) => return Ok(discovery),
            Err(error) if attempt == DISCOVERY_ATTEMPTS => {
                return Err(DeployError::Cluster(format!("API discovery: {error}")));
            }
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

const DISCOVERY_ATTEMPTS: u32 = 5;

/// The state's objects, each with how to reach it in the cluster.
fn targets_of(desired: Vec<Desired>, discovery: &Discovery) -> Vec<Target> {
    desired
        .into_iter()
        .map(|d| Target {
            reference: d.reference(),
            resource: resolve(discovery, &d.reference()),
            desired: d,
            live_version: None,
        })
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

async fn deploy_locked(
    request: &DeployRequest,
    progress: &Progress,
    client: &Client,
    mut targets: Vec<Target>,
    waves: Vec<Vec<usize>>,
    inventories: &Inventories,
    started: Instant,
) -> Result<DeployReport, DeployError> {
    let deadline = tokio::time::Instant::now() + request.wait_timeout;
    let previous = inventories.by_app().await.map_err(DeployError::Cluster)?;
    let wanted = wanted_by_app(&targets);
    // Record intent first: old and new objects together, so an interruption loses nothing.
    for (app, objects) in &wanted {
        let mut union = previous
            .get(app)
            .map(|i| i.objects.clone())
            .unwrap_or_default();
        union.extend(objects.iter().cloned());
        let commit = previous
            .get(app)
            .map(|i| i.commit.clone())
            .unwrap_or_default();
        write_inventory(inventories, app, union, commit).await?;
    }
    let mut report = DeployReport {
        env: request.env.clone(),
        ..Default::default()
    };
    for wave in &waves {
        refresh_resources(client, &mut targets, wave).await?;
        let applied = apply_wave(client, request, progress, &targets, wave).await;
        let mut positions = BTreeMap::new();
        let mut failure = None;
        let mut to_wait = Vec::new();
        for (index, op, result, duration_ms) in applied {
            positions.insert(index, report.objects.len());
            match &result {
                Ok(true) => progress.finish(&label_of(&targets[index]), "ready"),
                Ok(false) => to_wait.push(index),
                Err(_) => {}
            }
            if let Err(e) = &result {
                failure.get_or_insert_with(|| format!("{}: {e}", label_of(&targets[index])));
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
            return Err(DeployError::Failed { report, reason });
        }
        let (mut failed, mut waiting) = (None, Vec::new());
        for (index, result) in wait_wave(client, progress, &targets, &to_wait, deadline).await {
            let entry = &mut report.objects[positions[&index]];
            match result {
                Ok(()) => {}
                Err(WaitError::Failed(reason)) => {
                    entry.result = "failed".into();
                    entry.message = Some(reason.clone());
                    failed.get_or_insert(reason);
                }
                Err(WaitError::Timeout(last)) => {
                    entry.result = "timeout".into();
                    entry.message = Some(last.clone());
                    waiting.push(last);
                }
            }
        }
        if let Some(reason) = failed {
            return Err(DeployError::Failed { report, reason });
        }
        if !waiting.is_empty() {
            return Err(DeployError::Timeout { report, waiting });
        }
    }
    prune(client, progress, &previous, &wanted, deadline, &mut report).await?;
    for (app, objects) in wanted {
        let commit = request.commits.get(&app).cloned().unwrap_or_default();
        write_inventory(inventories, &app, objects, commit).await?;
    }
    for app in previous
        .keys()
        .filter(|app| !request_has_app(&targets, app))
    {
        inventories.delete(app).await.map_err(cluster_error)?;
        report.deleted_apps.push(app.clone());
    }
    report.duration_ms = started.elapsed().as_millis();
    Ok(report)
}

fn request_has_app(targets: &[Target], app: &str) -> bool {
    targets.iter().any(|t| t.desired.app == app)
}

async fn write_inventory(
    inventories: &Inventories,
    app: &str,
    objects: BTreeSet<ObjectRef>,
    commit: String,
) -> Result<(), DeployError> {
    let inventory = Inventory {
        app: app.to_string(),
        objects,
        commit,
        updated: inventory::timestamp(),
    };
    inventories.write(&inventory).await.map_err(cluster_error)
}

fn wanted_by_app(targets: &[Target]) -> BTreeMap<String, BTreeSet<ObjectRef>> {
    let mut wanted: BTreeMap<String, BTreeSet<ObjectRef>> = BTreeMap::new();
    for target in targets {
        wanted
            .entry(target.desired.app.clone())
            .or_default()
            .insert(target.reference.clone());
    }
    wanted
}

/// (group, kind) -> namespaced, for every CRD of the state.
fn crds_in_state(desired: &[Desired]) -> BTreeMap<(String, String), bool> {
    desired
        .iter()
        .filter(|d| d.value["kind"] == "CustomResourceDefinition")
        .filter_map(|d| {
            let spec = &d.value["spec"];
            Some((
                (
                    spec["group"].as_str()?.to_string(),
                    spec["names"]["kind"].as_str()?.to_string(),
                ),
                spec["scope"] != "Cluster",
            ))
        })
        .collect()
}

fn resolve(discovery: &Discovery, reference: &ObjectRef) -> Option<(ApiResource, bool)> {
    let (group, version) = match reference.api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", reference.api_version.as_str()),
    };
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &reference.kind);
    discovery
        .resolve_gvk(&gvk)
        .map(|(resource, caps): (ApiResource, ApiCapabilities)| {
            (resource, caps.scope == Scope::Namespaced)
        })
}

fn plan_waves(
    targets: &[Target],
    state_crds: &BTreeMap<(String, String), bool>,
) -> Result<Vec<Vec<usize>>, DeployError> {
    let changes: Vec<order::Change> = targets
        .iter()
        .map(|t| {
            let namespaced = t
                .resource
                .as_ref()
                .map(|r| r.1)
                .or_else(|| {
                    state_crds
                        .get(&(t.reference.group().into(), t.reference.kind.clone()))
                        .copied()
                })
                .unwrap_or(true);
            order::Change::of(&t.desired.value, namespaced)
        })
        .collect();
    let names: Vec<String> = targets
        .iter()
        .map(|t| format!("{} ({})", t.reference, t.desired.file.display()))
        .collect();
    let custom: BTreeSet<(String, String)> = state_crds.keys().cloned().collect();
    order::upsert_waves(&changes, &custom, &names)
        .map_err(|e| DeployError::Invalid(vec![e.to_string()]))
}

fn api_for(
    client: &Client,
    resource: &ApiResource,
    namespaced: bool,
    reference: &ObjectRef,
) -> Api<DynamicObject> {
    match (namespaced, &reference.namespace) {
        (true, Some(namespace)) => Api::namespaced_with(client.clone(), namespace, resource),
        (true, None) => Api::default_namespaced_with(client.clone(), resource),
        (false, _) => Api::all_with(client.clone(), resource),
    }
}

/// The object as applied: umbrella's labels and the state commit added.
fn prepared(target: &Target, commit: Option<&String>) -> Value {
    let mut value = target.desired.value.clone();
    if let Some(metadata) = value["metadata"].as_object_mut() {
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(MANAGED_BY.into(), "umbrella".into());
            labels.insert(APP_LABEL.into(), target.desired.app.clone().into());
        }
        if let Some(commit) = commit {
            let annotations = metadata
                .entry("annotations")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(annotations) = annotations.as_object_mut() {
                annotations.insert(COMMIT_ANNOTATION.into(), commit.clone().into());
            }
        }
    }
    value
}

/// Before the first write: every kind known (or defined by a CRD of the state), no object owned
/// by another app, and a server-side dry run of every object whose API and namespace exist.
async fn preflight(
    client: &Client,
    targets: &mut [Target],
    state_crds: &BTreeMap<(String, String), bool>,
    request: &DeployRequest,
) -> Result<(), DeployError> {
    let mut problems = Vec::new();
    for target in targets.iter() {
        if target.resource.is_none()
            && !state_crds.contains_key(&(
                target.reference.group().into(),
                target.reference.kind.clone(),
            ))
        {
            problems.push(format!(
                "{}: {} ({}): the cluster does not know this kind and no CRD in the state defines it",
                target.desired.file.display(),
                target.reference,
                target.reference.api_version
            ));
        }
    }
    if !problems.is_empty() {
        return Err(DeployError::Invalid(problems));
    }
    let existing = existing_namespaces(client, targets).await?;
    let checks = futures_util::stream::iter(targets.iter().enumerate())
        .map(|(index, target)| {
            let ready_to_check = target.resource.is_some()
                && target
                    .reference
                    .namespace
                    .as_ref()
                    .is_none_or(|ns| existing.contains(ns));
            async move {
                if !ready_to_check {
                    return (index, Ok(None));
                }
                (index, check_one(client, target, request).await)
            }
        })
        .buffer_unordered(request.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    for (index, check) in checks {
        let place = format!(
            "{}: {}",
            targets[index].desired.file.display(),
            targets[index].reference
        );
        match check {
            Ok(version) => targets[index].live_version = version,
            Err(CheckError::Invalid(problem)) => problems.push(format!("{place}: {problem}")),
            Err(CheckError::Cluster(problem)) => {
                return Err(DeployError::Cluster(format!(
                    "{place}: {problem}; nothing was applied"
                )));
            }
        }
    }
    problems.sort();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(DeployError::Invalid(problems))
    }
}

async fn existing_namespaces(
    client: &Client,
    targets: &[Target],
) -> Result<BTreeSet<String>, DeployError> {
    let api: Api<Namespace> = Api::all(client.clone());
    Ok(api
        .list(&Default::default())
        .await
        .map_err(cluster_error)?
        .items
        .iter()
        .map(|n| n.name_any())
        .filter(|n| {
            targets
                .iter()
                .any(|t| t.reference.namespace.as_deref() == Some(n))
        })
        .collect())
}

/// Ownership and a server-side dry run; returns the live resourceVersion, if the object exists.
async fn check_one(
    client: &Client,
    target: &Target,
    request: &DeployRequest,
) -> Result<Option<String>, CheckError> {
    let Some((resource, namespaced)) = &target.resource else {
        return Ok(None);
    };
    let api = api_for(client, resource, *namespaced, &target.reference);
    let live = api
        .get_opt(&target.reference.name)
        .await
        .map_err(CheckError::from)?;
    if let Some(live) = &live
        && let Some(owner) = live.labels().get(APP_LABEL)
        && owner != &target.desired.app
        && !request.adopt
    {
        return Err(CheckError::Invalid(format!(
            "owned by app {owner}; pass --adopt to move it to {}",
            target.desired.app
        )));
    }
    let params = apply_params(request.force_conflicts).dry_run();
    let object = prepared(target, request.commits.get(&target.desired.app));
    api.patch(&target.reference.name, &params, &Patch::Apply(&object))
        .await
        .map_err(CheckError::from)?;
    Ok(live.and_then(|l| l.resource_version()))
}

/// A preflight check that failed: because of the input (exit 2), or of the cluster (exit 1).
enum CheckError {
    Invalid(String),
    Cluster(String),
}

impl From<kube::Error> for CheckError {
    fn from(error: kube::Error) -> Self {
        match &error {
            // The API server judged the object: a problem of the input.
            kube::Error::Api(status)
                if status.code != 401 && status.code != 403 && status.code < 500 =>
            {
                CheckError::Invalid(describe_apply_error(&error))
            }
            _ => CheckError::Cluster(describe_apply_error(&error)),
        }
    }
}

fn describe_apply_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.code == 409 => format!(
            "{} (pass --force-conflicts to take these fields)",
            status.message
        ),
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// After CRDs of an earlier wave were established, their kinds become known.
async fn refresh_resources(
    client: &Client,
    targets: &mut [Target],
    wave: &[usize],
) -> Result<(), DeployError> {
    if wave.iter().all(|&i| targets[i].resource.is_some()) {
        return Ok(());
    }
    // An established CRD can take a moment to show in discovery: ask again a few times.
    for _ in 0..20 {
        let discovery = discover(client).await?;
        for &index in wave {
            if targets[index].resource.is_none() {
                targets[index].resource = resolve(&discovery, &targets[index].reference);
            }
        }
        if wave.iter().all(|&i| targets[i].resource.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// One apply: the target's index, what it did, whether it worked, how long it took.
type Outcome = (usize, Op, Result<bool, String>, u128);

async fn apply_wave(
    client: &Client,
    request: &DeployRequest,
    progress: &Progress,
    targets: &[Target],
    wave: &[usize],
) -> Vec<Outcome> {
    futures_util::stream::iter(wave.iter().copied())
        .map(|index| async move {
            let target = &targets[index];
            let label = label_of(target);
            progress.update(&label, "applying");
            let started = Instant::now();
            let result = apply_one(client, request, target).await;
            let (op, result) = match result {
                Ok((op, ready)) => {
                    progress.update(&label, &format!("{op:?}").to_lowercase());
                    (op, Ok(ready))
                }
                Err(e) => {
                    progress.finish(&label, &format!("FAILED: {e}"));
                    (
                        if target.live_version.is_some() {
                            Op::Update
                        } else {
                            Op::Create
                        },
                        Err(e),
                    )
                }
            };
            (index, op, result, started.elapsed().as_millis())
        })
        .buffer_unordered(request.concurrency.max(1))
        .collect()
        .await
}

/// The object as JSON with its type: items of a LIST carry none, and the rules need it.
fn with_type(object: &DynamicObject, reference: &ObjectRef) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    value["apiVersion"] = reference.api_version.clone().into();
    value["kind"] = reference.kind.clone().into();
    value
}

/// Server-side apply as umbrella's field manager; `force` takes fields other managers own.
fn apply_params(force: bool) -> PatchParams {
    let params = PatchParams::apply(MANAGER);
    if force { params.force() } else { params }
}

fn label_of(target: &Target) -> String {
    format!("{} {}", target.desired.app, target.reference)
}

async fn apply_one(
    client: &Client,
    request: &DeployRequest,
    target: &Target,
) -> Result<(Op, bool), String> {
    let (resource, namespaced) = target.resource.as_ref().ok_or_else(|| {
        format!(
            "{} ({}) is still unknown to the cluster",
            target.reference, target.reference.api_version
        )
    })?;
    let api = api_for(client, resource, *namespaced, &target.reference);
    let params = apply_params(request.force_conflicts);
    let object = prepared(target, request.commits.get(&target.desired.app));
    let applied = api
        .patch(&target.reference.name, &params, &Patch::Apply(&object))
        .await
        .map_err(|e| describe_apply_error(&e))?;
    // Most kinds are ready as applied (their answer says so): only the others are watched.
    let ready = ready::readiness(&with_type(&applied, &target.reference)) == Readiness::Ready;
    let op = match &target.live_version {
        None => Op::Create,
        Some(version) if applied.resource_version().as_ref() == Some(version) => Op::Unchanged,
        Some(_) => Op::Update,
    };
    Ok((op, ready))
}

async fn wait_wave(
    client: &Client,
    progress: &Progress,
    targets: &[Target],
    wave: &[usize],
    deadline: tokio::time::Instant,
) -> Vec<(usize, Result<(), WaitError>)> {
    let mut pending: futures_util::stream::FuturesUnordered<_> = wave
        .iter()
        .map(|&index| async move {
            let target = &targets[index];
            let label = label_of(target);
            let result = wait_ready(client, progress, target, &label, deadline).await;
            match &result {
                Ok(()) => progress.finish(&label, "ready"),
                Err(WaitError::Failed(reason)) => {
                    progress.finish(&label, &format!("FAILED: {reason}"))
                }
                Err(WaitError::Timeout(last)) => {
                    progress.finish(&label, &format!("TIMEOUT: {last}"))
                }
            }
            (index, result)
        })
        .collect();
    let mut results = Vec::new();
    while let Some((index, result)) = pending.next().await {
        let failed = matches!(result, Err(WaitError::Failed(_)));
        results.push((index, result));
        // Fail fast: the other waits of the wave are dropped, not waited out.
        if failed {
            break;
        }
    }
    results
}

#[derive(Debug)]
enum WaitError {
    Failed(String),
    Timeout(String),
}

/// Waits with watches until the object is ready; fails at once on what will not heal.
async fn wait_ready(
    client: &Client,
    progress: &Progress,
    target: &Target,
    label: &str,
    deadline: tokio::time::Instant,
) -> Result<(), WaitError> {
    if target.desired.value["metadata"]["annotations"][DISABLE_WAIT] == "true" {
        return Ok(());
    }
    let Some((resource, namespaced)) = &target.resource else {
        return Ok(());
    };
    let api = api_for(client, resource, *namespaced, &target.reference);
    let config =
        watcher::Config::default().fields(&format!("metadata.name={}", target.reference.name));
    let mut objects = watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut pods = pod_watch(client, target);
    let mut events = warning_watch(client, target);
    let mut watch = Watch::new(target, label);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let verdict = tokio::select! {
            event = objects.try_next() => match event {
                Ok(Some(object)) => watch.on_object(progress, &object),
                Ok(None) => Some(Err(WaitError::Failed(format!("{label}: the watch ended")))),
                // The watcher re-lists and reconnects by itself (with backoff): keep waiting.
                Err(e) => {
                    watch.last = format!("{label}: watch interrupted ({e}), reconnecting");
                    None
                }
            },
            event = next_item(&mut events) => watch.on_warning(&event),
            pod = next_item(&mut pods) => watch.on_pod(client, &pod).await,
            // A pod that stays unschedulable produces no new event: look at the clock too.
            _ = tick.tick() => watch.unschedulable_too_long(),
            _ = tokio::time::sleep_until(deadline) => Some(Err(WaitError::Timeout(watch.last.clone()))),
        };
        if let Some(verdict) = verdict {
            return verdict;
        }
    }
}

/// What a wait has seen so far; each event either settles the wait or leaves it going.
struct Watch<'a> {
    target: &'a Target,
    label: &'a str,
    /// The object and its pods: the Warning events that count.
    involved: BTreeSet<String>,
    applied_at: k8s_openapi::jiff::Timestamp,
    /// Pods seen unschedulable: since when, and why.
    unschedulable_since: BTreeMap<String, (Instant, String)>,
    /// The last state seen, for the timeout's message.
    last: String,
}

type Verdict = Option<Result<(), WaitError>>;

impl<'a> Watch<'a> {
    fn new(target: &'a Target, label: &'a str) -> Self {
        Watch {
            target,
            label,
            involved: BTreeSet::from([target.reference.name.clone()]),
            applied_at: k8s_openapi::jiff::Timestamp::now(),
            unschedulable_since: BTreeMap::new(),
            last: format!("{label}: waiting for the first status"),
        }
    }

    fn failed(&self, reason: impl std::fmt::Display) -> Verdict {
        Some(Err(WaitError::Failed(format!("{}: {reason}", self.label))))
    }

    fn on_object(&mut self, progress: &Progress, object: &DynamicObject) -> Verdict {
        match ready::readiness(&with_type(object, &self.target.reference)) {
            Readiness::Ready => Some(Ok(())),
            Readiness::Failed(reason) => self.failed(reason),
            Readiness::Waiting(message) => {
                progress.update(self.label, &format!("waiting: {message}"));
                self.last = format!("{}: {message}", self.label);
                None
            }
        }
    }

    fn on_warning(&self, event: &Event) -> Verdict {
        let value = serde_json::to_value(event).unwrap_or_default();
        let reason = ready::warning_failure(&value, &self.involved, self.applied_at)?;
        self.failed(reason)
    }

    async fn on_pod(&mut self, client: &Client, pod: &Pod) -> Verdict {
        self.involved.insert(pod.name_any());
        // Pods of an earlier rollout say nothing about this one.
        let recent = pod.creation_timestamp().is_none_or(|t| {
            t.0 >= self.applied_at - k8s_openapi::jiff::SignedDuration::from_secs(120)
        });
        if !recent {
            return None;
        }
        let value = serde_json::to_value(pod).unwrap_or_default();
        if let Some(reason) = ready::workload_pod_failure(&self.target.reference.kind, &value) {
            let logs = last_log_lines(client, pod).await;
            return self.failed(format!("{reason}{logs}"));
        }
        match ready::unschedulable(&value) {
            Some(reason) => {
                self.unschedulable_since
                    .entry(pod.name_any())
                    .or_insert_with(|| (Instant::now(), reason));
                self.unschedulable_too_long()
            }
            None => {
                self.unschedulable_since.remove(&pod.name_any());
                None
            }
        }
    }

    fn unschedulable_too_long(&self) -> Verdict {
        let (_, reason) = self
            .unschedulable_since
            .values()
            .find(|(since, _)| since.elapsed() > UNSCHEDULABLE_GRACE)?;
        self.failed(reason)
    }
}

type WatchStream<T> =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<T, watcher::Error>> + Send>>;

/// A watch on the pods of a workload (by its selector), for failing fast.
fn pod_watch(client: &Client, target: &Target) -> Option<WatchStream<Pod>> {
    let selector = ready::pod_selector(&target.desired.value)?;
    let namespace = target.reference.namespace.clone()?;
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    Some(
        watcher(api, watcher::Config::default().labels(&selector))
            .default_backoff()
            .applied_objects()
            .boxed(),
    )
}

/// A watch on the Warning events of the object's namespace, for failing fast on them.
fn warning_watch(client: &Client, target: &Target) -> Option<WatchStream<Event>> {
    let namespace = target.reference.namespace.clone()?;
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    Some(
        watcher(api, watcher::Config::default().fields("type=Warning"))
            .default_backoff()
            .applied_objects()
            .boxed(),
    )
}

/// The next item of an optional watch; never, when there is no watch or it has ended.
async fn next_item<T>(stream: &mut Option<WatchStream<T>>) -> T {
    if let Some(stream) = stream {
        // Errors are passing: the watcher reconnects with backoff.
        while let Some(item) = stream.next().await {
            if let Ok(item) = item {
                return item;
            }
        }
    }
    std::future::pending().await
}

async fn last_log_lines(client: &Client, pod: &Pod) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let params = LogParams {
        tail_lines: Some(10),
        ..Default::default()
    };
    match api.logs(&pod.name_any(), &params).await {
        Ok(logs) if !logs.trim().is_empty() => format!("\nlast log lines:\n{}", logs.trim_end()),
        _ => String::new(),
    }
}

/// What the previous inventories own (with the app owning it) that the state no longer has.
fn stale(
    previous: &BTreeMap<String, Inventory>,
    wanted: &BTreeMap<String, BTreeSet<ObjectRef>>,
) -> Vec<(String, ObjectRef)> {
    let kept: BTreeSet<_> = wanted.values().flatten().map(ObjectRef::key).collect();
    previous
        .iter()
        .flat_map(|(app, inventory)| {
            inventory
                .objects
                .iter()
                .map(move |o| (app.clone(), o.clone()))
        })
        .filter(|(_, o)| !kept.contains(&o.key()))
        .collect()
}

/// Deletes what the previous inventories own but the state no longer has (and apps whose
/// directory is gone), in reverse order, waiting until each is gone.
async fn prune(
    client: &Client,
    progress: &Progress,
    previous: &BTreeMap<String, Inventory>,
    wanted: &BTreeMap<String, BTreeSet<ObjectRef>>,
    deadline: tokio::time::Instant,
    report: &mut DeployReport,
) -> Result<(), DeployError> {
    let mut stale = stale(previous, wanted);
    if stale.is_empty() {
        return Ok(());
    }
    let discovery = discover(client).await?;
    let values: Vec<Value> = stale
        .iter()
        .map(|(_, o)| serde_json::json!({"apiVersion": o.api_version, "kind": o.kind}))
        .collect();
    let changes: Vec<order::Change> = values
        .iter()
        .zip(&stale)
        .map(|(v, (_, o))| order::Change::of(v, o.namespace.is_some()))
        .collect();
    let names: Vec<String> = stale.iter().map(|(_, o)| o.to_string()).collect();
    let custom = stale_crd_kinds(client, &stale).await;
    let waves =
        order::upsert_waves(&changes, &custom, &names).map_err(|e| DeployError::Failed {
            report: report.clone(),
            reason: format!("ordering the objects to prune: {e}"),
        })?;
    let ordered: Vec<Vec<(String, ObjectRef)>> = waves
        .into_iter()
        .rev()
        .map(|w| w.into_iter().map(|i| stale[i].clone()).collect())
        .collect();
    stale.clear();
    for wave in ordered {
        let results = futures_util::future::join_all(wave.iter().map(|(app, reference)| {
            let discovery = &discovery;
            async move {
                let label = format!("{app} {reference}");
                progress.update(&label, "deleting");
                let started = Instant::now();
                let result = delete_one(client, discovery, reference, deadline).await;
                progress.finish(
                    &label,
                    if result.is_ok() {
                        "deleted"
                    } else {
                        "FAILED to delete"
                    },
                );
                (
                    app.clone(),
                    reference.clone(),
                    result,
                    started.elapsed().as_millis(),
                )
            }
        }))
        .await;
        for (app, reference, result, duration_ms) in results {
            let failed = result.as_ref().err().cloned();
            report.objects.push(ObjectReport::new(
                &app,
                &reference,
                Op::Delete,
                failed.clone(),
                duration_ms,
            ));
            if let Some(reason) = failed {
                return Err(DeployError::Failed {
                    report: report.clone(),
                    reason: format!("deleting {reference}: {reason}"),
                });
            }
        }
    }
    Ok(())
}

/// The kinds the stale CRDs define, read from the live CRDs: their custom resources must be
/// deleted before them (the upsert order, backwards).
async fn stale_crd_kinds(
    client: &Client,
    stale: &[(String, ObjectRef)],
) -> BTreeSet<(String, String)> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut kinds = BTreeSet::new();
    for (_, reference) in stale
        .iter()
        .filter(|(_, o)| o.kind == "CustomResourceDefinition")
    {
        if let Ok(Some(crd)) = api.get_opt(&reference.name).await {
            kinds.insert((crd.spec.group.clone(), crd.spec.names.kind.clone()));
        }
    }
    kinds
}

async fn delete_one(
    client: &Client,
    discovery: &Discovery,
    reference: &ObjectRef,
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let Some((resource, namespaced)) = resolve(discovery, reference) else {
        // Its kind is gone (a CRD deleted first): so is the object.
        return Ok(());
    };
    let api = api_for(client, &resource, namespaced, reference);
    match api
        .delete(&reference.name, &DeleteParams::background())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.to_string()),
    }
    let config = watcher::Config::default().fields(&format!("metadata.name={}", reference.name));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut listed = false;
    loop {
        tokio::select! {
            event = events.try_next() => match event {
                Ok(Some(watcher::Event::Delete(_))) => return Ok(()),
                Ok(Some(watcher::Event::InitApply(_))) => listed = true,
                // The initial list is over: without the object in it, it is gone already.
                Ok(Some(watcher::Event::InitDone)) if !listed => return Ok(()),
                Ok(Some(watcher::Event::Init)) => listed = false,
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            },
            _ = tokio::time::sleep_until(deadline) => return Err("still there at the wait timeout".into()),
        }
    }
}
