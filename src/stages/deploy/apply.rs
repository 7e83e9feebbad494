//! Writing the state: the preflight that checks every object before the first write, and the
//! server-side applies of a wave.

use std::collections::BTreeSet;
use std::time::Instant;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::inventory::{APP_LABEL, GROUP_LABEL, foreign_owner};
use super::lease::Fence;
use super::outcome::{DeployError, Op};
use super::plan::{StateCrds, Target, defined_by_state, label_of};
use super::ready::Readiness;
use super::request::{COMMIT_ANNOTATION, DeployRequest, MANAGED_BY};
use crate::adapters::cluster::{self, ClusterError};
use crate::adapters::retry::Retrier;
use crate::formats::secrets;
use crate::progress::Progress;

/// The object as applied: umbrella's labels (its app and environment) and the state commit
/// added.
pub(super) fn prepared(target: &Target, env: &str, commit: Option<&String>) -> Value {
    let mut value = target.desired.value.clone();
    if let Some(metadata) = value["metadata"].as_object_mut() {
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(MANAGED_BY.into(), "umbrella".into());
            labels.insert(APP_LABEL.into(), target.desired.app.clone().into());
            labels.insert(GROUP_LABEL.into(), env.into());
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

/// The objects whose kind neither the cluster nor a CRD of the state defines.
fn unknown_kinds(targets: &[Target], state_crds: &StateCrds) -> Vec<String> {
    targets
        .iter()
        .filter(|t| t.resource.is_none() && !defined_by_state(&t.reference, state_crds))
        .map(|t| {
            format!(
                "{}: {} ({}): the cluster does not know this kind and no CRD in the state defines it",
                t.desired.file.display(),
                t.reference,
                t.reference.api_version
            )
        })
        .collect()
}

/// What applies the state's objects: the client, the request, the retry policy.
pub(super) struct Applier<'a> {
    pub client: &'a Client,
    pub request: &'a DeployRequest,
    pub retrier: &'a Retrier,
}

impl Applier<'_> {
    /// Before the first write: every kind known (or defined by a CRD of the state), no object owned
    /// by another app, and a server-side dry run of every object whose API and namespace exist.
    pub async fn preflight(
        &self,
        targets: &mut [Target],
        state_crds: &StateCrds,
    ) -> Result<(), DeployError> {
        let request = self.request;
        let unknown = unknown_kinds(targets, state_crds);
        if !unknown.is_empty() {
            return Err(DeployError::Invalid(unknown));
        }
        let existing = self.existing_namespaces(targets).await?;
        let homeless = without_namespace(targets, &existing);
        if !homeless.is_empty() {
            return Err(DeployError::Invalid(homeless));
        }
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
                        return (index, Ok(Found::default()));
                    }
                    (index, self.check_one(target).await)
                }
            })
            .buffer_unordered(request.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        let mut problems = Vec::new();
        for (index, check) in checks {
            let place = format!(
                "{}: {}",
                targets[index].desired.file.display(),
                targets[index].reference
            );
            match check {
                Ok(found) => {
                    targets[index].live_version = found.version;
                    targets[index].template_kept = found.template_kept;
                }
                Err(CheckError::Invalid(problem)) => problems.push(format!("{place}: {problem}")),
                Err(CheckError::Cluster(problem)) => {
                    return Err(DeployError::Preflight(format!(
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

    /// The namespaces of the state's objects that exist already.
    async fn existing_namespaces(
        &self,
        targets: &[Target],
    ) -> Result<BTreeSet<String>, ClusterError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let params = Default::default();
        let listed = cluster::call(self.retrier, "listing namespaces", || api.list(&params));
        let namespaces = listed
            .await
            .map_err(ClusterError::request("listing namespaces"))?;
        Ok(namespaces
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

    /// Ownership and a server-side dry run: what the live object is, if it exists.
    async fn check_one(&self, target: &Target) -> Result<Found, CheckError> {
        let request = self.request;
        let Some((resource, namespaced)) = &target.resource else {
            return Ok(Found::default());
        };
        let api = cluster::api_for(self.client, resource, *namespaced, &target.reference);
        let secret = &target.desired.value;
        let what = format!("reading {}", target.reference);
        let read = cluster::call(self.retrier, &what, || api.get_opt(&target.reference.name));
        let live = read.await.map_err(|e| CheckError::of(&e, secret))?;
        let env = &request.group.env;
        if let Some(live) = &live
            && let Some(owner) = foreign_owner(live.labels(), &target.desired.app, env)
            && !request.adopt
        {
            return Err(CheckError::Invalid(format!(
                "owned by app {owner}; pass --adopt to move it to {}",
                target.desired.app
            )));
        }
        let params = cluster::apply_params(request.force_conflicts).dry_run();
        let object = prepared(target, env, request.source.commits.get(&target.desired.app));
        let patch = Patch::Apply(&object);
        let what = format!("dry run of {}", target.reference);
        let dry_run = cluster::call(self.retrier, &what, || {
            api.patch(&target.reference.name, &params, &patch)
        });
        let answer = dry_run.await.map_err(|e| CheckError::of(&e, secret))?;
        let template = |o: &DynamicObject| o.data["spec"]["template"].clone();
        Ok(Found {
            template_kept: live.as_ref().is_some_and(|live| {
                template(live).is_object() && template(live) == template(&answer)
            }),
            version: live.and_then(|l| l.resource_version()),
        })
    }
}

/// What the preflight found of an object in the cluster.
#[derive(Default)]
struct Found {
    /// Its resourceVersion, when it exists.
    version: Option<String>,
    /// It has a pod template, which the deploy leaves as it is.
    template_kept: bool,
}

/// The namespaced objects whose namespace neither exists nor is created by the state.
fn without_namespace(targets: &[Target], existing: &BTreeSet<String>) -> Vec<String> {
    let created: BTreeSet<&str> = targets
        .iter()
        .filter(|t| t.reference.kind == "Namespace" && t.reference.group().is_empty())
        .map(|t| t.reference.name.as_str())
        .collect();
    targets
        .iter()
        .filter(|t| t.resource.as_ref().is_none_or(|(_, namespaced)| *namespaced))
        .filter_map(|t| {
            let namespace = t.reference.namespace.as_deref()?;
            (!existing.contains(namespace) && !created.contains(namespace)).then(|| {
                format!(
                    "{}: {}: field metadata.namespace: namespace {namespace} neither exists in the cluster nor is created by the state",
                    t.desired.file.display(),
                    t.reference
                )
            })
        })
        .collect()
}

/// A preflight check that failed: because of the input (exit 2), or of the cluster (exit 1).
enum CheckError {
    Invalid(String),
    Cluster(String),
}

impl CheckError {
    /// What a failed call about `object` says of the check.
    fn of(error: &kube::Error, object: &Value) -> Self {
        let message = describe_apply_error(error, object);
        match error {
            // The API server judged the object: a problem of the input.
            kube::Error::Api(status)
                if status.code != 401 && status.code != 403 && status.code < 500 =>
            {
                CheckError::Invalid(message)
            }
            _ => CheckError::Cluster(message),
        }
    }
}

/// What the API server said about an apply of `object`, with the way out of a conflict, and
/// never one of its secret values.
pub(super) fn describe_apply_error(error: &kube::Error, object: &Value) -> String {
    let message = match error {
        kube::Error::Api(status) if status.code == 409 => format!(
            "{} (pass --force-conflicts to take these fields)",
            status.message
        ),
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    };
    secrets::scrub(&message, object)
}

/// One apply: the target's index, what it did, whether it is ready as applied (or why it
/// failed), how long it took.
pub(super) type Outcome = (usize, Op, Result<bool, String>, u128);

impl<'a> Applier<'a> {
    /// Applies every target of the wave, `concurrency` at a time; each outcome as it comes.
    pub fn apply_wave(
        &'a self,
        progress: &'a dyn Progress,
        fence: &'a Fence,
        targets: &'a [Target],
        wave: &'a [usize],
    ) -> impl futures_util::Stream<Item = Outcome> + 'a {
        let request = self.request;
        futures_util::stream::iter(wave.iter().copied())
            .map(move |index| async move {
                let target = &targets[index];
                let label = label_of(target);
                progress.update(&label, "applying");
                let started = Instant::now();
                let (op, result) = match self.apply_one(fence, target).await {
                    Ok((op, ready)) => {
                        progress.update(&label, &format!("{op:?}").to_lowercase());
                        (op, Ok(ready))
                    }
                    Err(e) => {
                        progress.finish(&label, &format!("FAILED: {e}"));
                        let op = if target.live_version.is_some() {
                            Op::Update
                        } else {
                            Op::Create
                        };
                        (op, Err(e))
                    }
                };
                (index, op, result, started.elapsed().as_millis())
            })
            .buffer_unordered(request.concurrency.max(1))
    }

    async fn apply_one(&self, fence: &Fence, target: &Target) -> Result<(Op, bool), String> {
        let request = self.request;
        let (resource, namespaced) = target.resource.as_ref().ok_or_else(|| {
            format!(
                "{} ({}) is still unknown to the cluster",
                target.reference, target.reference.api_version
            )
        })?;
        let api = cluster::api_for(self.client, resource, *namespaced, &target.reference);
        let params = cluster::apply_params(request.force_conflicts);
        let commit = request.source.commits.get(&target.desired.app);
        let object = prepared(target, &request.group.env, commit);
        let patch = Patch::Apply(&object);
        let what = format!("applying {}", target.reference);
        // Retries, too, end when the lock is lost: the deploy's guard drops them.
        fence.check().map_err(|e| e.to_string())?;
        let applied = cluster::call(self.retrier, &what, || {
            api.patch(&target.reference.name, &params, &patch)
        });
        let applied = applied
            .await
            .map_err(|e| describe_apply_error(&e, &target.desired.value))?;
        // Most kinds are ready as applied (their answer says so): only the others are watched.
        let ready =
            target.readiness(&cluster::with_type(&applied, &target.reference)) == Readiness::Ready;
        let op = match &target.live_version {
            None => Op::Create,
            Some(version) if applied.resource_version().as_ref() == Some(version) => Op::Unchanged,
            Some(_) => Op::Update,
        };
        Ok((op, ready))
    }
}
