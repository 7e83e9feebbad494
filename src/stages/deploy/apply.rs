//! Writing the state: the preflight that checks every object before the first write, and the
//! server-side applies of a wave.

use std::collections::BTreeSet;
use std::time::Instant;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::change::comparable;
use super::inventory::foreign_owner;
use super::lease::Fence;
use super::listed::{Lister, Seen};
use super::outcome::{DeployError, Op};
use super::plan::{StateCrds, Target, defined_by_state, label_of};
use super::prune;
use super::ready::Readiness;
use super::request::DeployRequest;
use super::strategy::{self, UpdateStrategy};
use crate::adapters::cluster::{self, ClusterError};
use crate::adapters::retry::Retrier;
use crate::formats::secrets;
use crate::progress::Progress;

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
        let listed = self.lister().list(targets).await?;
        let checks = futures_util::stream::iter(targets.iter().zip(listed).enumerate())
            .map(|(index, (target, seen))| {
                let ready_to_check = target.resource.is_some()
                    && target
                        .reference
                        .namespace
                        .as_ref()
                        .is_none_or(|ns| existing.contains(ns));
                async move {
                    let listed = seen.is_some();
                    if let Some(kept) = seen.and_then(|seen| Found::kept(target, &seen)) {
                        return (index, Ok(kept));
                    }
                    if !ready_to_check {
                        return (index, Ok(Found::default()));
                    }
                    (index, self.check_one(target, listed).await)
                }
            })
            .buffer_unordered(request.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        let mut problems = record_checks(targets, checks)?;
        problems.sort();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DeployError::Invalid(problems))
        }
    }

    pub fn lister(&self) -> Lister<'_> {
        Lister {
            client: self.client,
            retrier: self.retrier,
            env: &self.request.group.env,
            commits: &self.request.source.commits,
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

    /// Ownership and a server-side dry run: what the live object is, if it exists. An object
    /// the LIST did not find is most likely new: its dry run comes first, and when the answer
    /// is a create's (no resourceVersion), that one request is all it costs.
    async fn check_one(&self, target: &Target, listed: bool) -> Result<Found, CheckError> {
        let request = self.request;
        let Some((resource, namespaced)) = &target.resource else {
            return Ok(Found::default());
        };
        let api = cluster::api_for(self.client, resource, *namespaced, &target.reference);
        let secret = &target.desired.value;
        let strategy = UpdateStrategy::of(secret).map_err(CheckError::Invalid)?;
        if !listed
            && let Ok(answer) = self.dry_run(&api, target, request.force_conflicts).await
            && answer.resource_version().is_none()
        {
            return Ok(Found::of(target, None, &answer));
        }
        let what = format!("reading {}", target.reference);
        let read = cluster::call(self.retrier, &what, || api.get_opt(&target.reference.name));
        let live = read.await.map_err(|e| CheckError::of(&e, secret))?;
        self.check_owner(target, live.as_ref())?;
        let version = live.as_ref().and_then(|l| l.resource_version());
        let replaced = Found {
            version: version.clone(),
            replace: true,
            ..Found::default()
        };
        if live.is_some() && strategy == UpdateStrategy::AlwaysReplace {
            return Ok(replaced);
        }
        let (answer, take_back) = match self.dry_run(&api, target, request.force_conflicts).await {
            Ok(answer) => (answer, None),
            Err(kube::Error::Api(e)) if e.code == 409 && !request.force_conflicts => {
                let note = strategy::repair(&e.message)
                    .map_err(|_| CheckError::of(&kube::Error::Api(e), secret))?;
                let answer = self.dry_run(&api, target, true).await;
                (answer.map_err(|e| CheckError::of(&e, secret))?, Some(note))
            }
            Err(kube::Error::Api(e))
                if live.is_some() && strategy::is_immutable_change(&e.message) =>
            {
                return match strategy {
                    UpdateStrategy::FallbackOnReplace => Ok(replaced),
                    _ => Err(CheckError::Invalid(strategy::immutable_advice(
                        &secrets::scrub(&e.message, secret),
                    ))),
                };
            }
            Err(e) => return Err(CheckError::of(&e, secret)),
        };
        Ok(Found {
            take_back,
            ..Found::of(target, live.as_ref(), &answer)
        })
    }

    /// No other app of the group owns the live object, unless `--adopt`.
    fn check_owner(&self, target: &Target, live: Option<&DynamicObject>) -> Result<(), CheckError> {
        let env = &self.request.group.env;
        match live.and_then(|live| foreign_owner(live.labels(), &target.desired.app, env)) {
            Some(owner) if !self.request.adopt => Err(CheckError::Invalid(format!(
                "owned by app {owner}; pass --adopt to move it to {}",
                target.desired.app
            ))),
            _ => Ok(()),
        }
    }

    /// A server-side dry run of the object's apply.
    async fn dry_run(
        &self,
        api: &Api<DynamicObject>,
        target: &Target,
        force: bool,
    ) -> Result<DynamicObject, kube::Error> {
        let request = self.request;
        let params = cluster::apply_params(force).dry_run();
        let commit = request.source.commits.get(&target.desired.app);
        let object = target.applied(&request.group.env, commit);
        let patch = Patch::Apply(&object);
        let what = format!("dry run of {}", target.reference);
        cluster::call(self.retrier, &what, || {
            patch_scrubbed(api, target, &params, &patch)
        })
        .await
    }
}

impl Found {
    /// What the live object and the dry run's answer say of an update. Content the apply
    /// would keep is not written: a nonce (new every deploy) is the exception.
    fn of(target: &Target, live: Option<&DynamicObject>, answer: &DynamicObject) -> Self {
        let template = |o: &DynamicObject| o.data["spec"]["template"].clone();
        let answer = cluster::with_type(answer, &target.reference);
        let content_kept = live.is_some_and(|live| {
            comparable(&cluster::with_type(live, &target.reference)) == comparable(&answer)
        });
        let unwritten = content_kept && !strategy::has_nonce(&target.desired.value);
        Found {
            template_kept: live.is_some_and(|live| {
                template(live).is_object() && template(live) == answer["spec"]["template"]
            }),
            content_kept,
            kept_ready: unwritten.then(|| target.readiness(&answer) == Readiness::Ready),
            version: live.and_then(|l| l.resource_version()),
            replace: false,
            take_back: None,
        }
    }

    /// Puts what was found on the target.
    fn record_on(self, target: &mut Target) {
        target.live_version = self.version;
        target.template_kept = self.template_kept;
        target.content_kept = self.content_kept;
        target.kept_ready = self.kept_ready;
        target.replace = self.replace;
        target.take_back = self.take_back;
    }

    /// What the LIST showed of an object an apply would not change: nothing to check or
    /// write (an object replaced on every deploy excepted).
    fn kept(target: &Target, seen: &Seen) -> Option<Self> {
        if !seen.kept(target) {
            return None;
        }
        let live = &seen.live;
        Some(Found {
            version: seen.version(),
            template_kept: live["spec"]["template"].is_object(),
            content_kept: true,
            kept_ready: Some(target.readiness(live) == Readiness::Ready),
            replace: false,
            take_back: None,
        })
    }
}

/// Checks again an object the preflight found unchanged, from what a new LIST saw of it
/// (`None`: not found): still unchanged, or to be applied after all.
pub(super) fn recheck(target: &mut Target, seen: Option<&Seen>) {
    let found = seen.and_then(|seen| Found::kept(target, seen));
    let changed = || Found {
        version: seen.and_then(Seen::version),
        ..Found::default()
    };
    found.unwrap_or_else(changed).record_on(target);
}

/// What the preflight found of an object in the cluster.
#[derive(Default)]
struct Found {
    /// Its resourceVersion, when it exists.
    version: Option<String>,
    /// It has a pod template, which the deploy leaves as it is.
    template_kept: bool,
    /// It exists and only umbrella's bookkeeping (the state commit) changes.
    content_kept: bool,
    /// It is left as it is, not written: whether it is ready.
    kept_ready: Option<bool>,
    /// It is deleted and created again.
    replace: bool,
    /// Fields set by hand the apply takes back: why.
    take_back: Option<String>,
}

/// Puts what the checks found on their targets; returns the input's problems, each naming
/// the file and object. A cluster's failure ends the preflight.
fn record_checks(
    targets: &mut [Target],
    checks: Vec<(usize, Result<Found, CheckError>)>,
) -> Result<Vec<String>, DeployError> {
    let mut problems = Vec::new();
    for (index, check) in checks {
        let target = &mut targets[index];
        let place = format!("{}: {}", target.desired.file.display(), target.reference);
        match check {
            Ok(found) => {
                found.record_on(target);
            }
            Err(CheckError::Invalid(problem)) => problems.push(format!("{place}: {problem}")),
            Err(CheckError::Cluster(problem)) => {
                return Err(DeployError::Preflight(format!(
                    "{place}: {problem}; nothing was applied"
                )));
            }
        }
    }
    Ok(problems)
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

/// The error of a call about `object` with none of its secret values in what the server said:
/// scrubbed before anything (a retry's note, a report) can show it.
/// A server-side apply (or its dry run) of the target, the server's refusal scrubbed of the
/// target's secret values before anything (a retry note, a report) sees it.
pub(super) async fn patch_scrubbed(
    api: &Api<DynamicObject>,
    target: &Target,
    params: &kube::api::PatchParams,
    patch: &Patch<&Value>,
) -> Result<DynamicObject, kube::Error> {
    api.patch(&target.reference.name, params, patch)
        .await
        .map_err(|e| scrubbed(e, &target.desired.value))
}

pub(super) fn scrubbed(error: kube::Error, object: &Value) -> kube::Error {
    let kube::Error::Api(mut status) = error else {
        return error;
    };
    status.message = secrets::scrub(&status.message, object);
    for cause in status.details.iter_mut().flat_map(|d| d.causes.iter_mut()) {
        cause.message = secrets::scrub(&cause.message, object);
    }
    kube::Error::Api(status)
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

/// One apply: the target's index, what it did, its answer (or why it failed), how long it took.
pub(super) type Outcome = (usize, Op, Result<Answer, String>, u128);

/// What the API server answered to an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Answer {
    /// Ready as applied: nothing to wait for.
    pub ready: bool,
    /// The object's uid, when it was written (not for an object kept unchanged).
    pub uid: Option<String>,
}

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

    async fn apply_one(&self, fence: &Fence, target: &Target) -> Result<(Op, Answer), String> {
        if let Some(ready) = target.kept_ready {
            return Ok((Op::Unchanged, Answer { ready, uid: None }));
        }
        let request = self.request;
        let (resource, namespaced) = target.resource.as_ref().ok_or_else(|| {
            format!(
                "{} ({}) is still unknown to the cluster",
                target.reference, target.reference.api_version
            )
        })?;
        let api = cluster::api_for(self.client, resource, *namespaced, &target.reference);
        if target.replace {
            prune::delete_until_gone(&api, &target.reference, self.retrier, fence).await?;
        }
        let force = request.force_conflicts || target.take_back.is_some();
        let params = cluster::apply_params(force);
        let commit = request.source.commits.get(&target.desired.app);
        let object = target.applied(&request.group.env, commit);
        let patch = Patch::Apply(&object);
        let what = format!("applying {}", target.reference);
        // Retries, too, end when the lock is lost: the deploy's guard drops them.
        fence.check().map_err(|e| e.to_string())?;
        let applied = cluster::call(self.retrier, &what, || {
            patch_scrubbed(&api, target, &params, &patch)
        });
        let applied = applied
            .await
            .map_err(|e| describe_apply_error(&e, &target.desired.value))?;
        // Most kinds are ready as applied (their answer says so): only the others are watched.
        let ready =
            target.readiness(&cluster::with_type(&applied, &target.reference)) == Readiness::Ready;
        let op = match &target.live_version {
            _ if target.replace => Op::Replace,
            None => Op::Create,
            // A new state commit rewrites the annotation of every object of the app: what
            // counts is whether the content changed, as `diff` shows it.
            Some(_) if target.content_kept => Op::Unchanged,
            Some(version) if applied.resource_version().as_ref() == Some(version) => Op::Unchanged,
            Some(_) => Op::Update,
        };
        Ok((
            op,
            Answer {
                ready,
                uid: applied.uid(),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::stages::deploy::plan::test_target;

    fn config_map(annotations: Value) -> Target {
        test_target(
            "e-a",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "x", "namespace": "n", "annotations": annotations}}),
        )
    }

    fn seen(version: &str, difference: Option<&str>) -> Seen {
        Seen {
            live: json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "x", "namespace": "n", "resourceVersion": version}}),
            difference: difference.map(str::to_string),
        }
    }

    #[test]
    fn an_object_found_unchanged_again_stays_unwritten() {
        let mut target = config_map(json!({}));
        recheck(&mut target, Some(&seen("8", None)));
        assert_eq!(target.kept_ready, Some(true));
        assert_eq!(target.live_version.as_deref(), Some("8"));
    }

    #[test]
    fn an_object_changed_or_gone_since_the_preflight_is_applied() {
        let mut changed = config_map(json!({}));
        changed.kept_ready = Some(true);
        changed.content_kept = true;
        recheck(
            &mut changed,
            Some(&seen("9", Some(".data.k holds another value"))),
        );
        assert_eq!(changed.kept_ready, None);
        assert!(!changed.content_kept);
        assert_eq!(changed.live_version.as_deref(), Some("9"));

        let mut gone = config_map(json!({}));
        gone.kept_ready = Some(true);
        gone.live_version = Some("8".into());
        recheck(&mut gone, None);
        assert_eq!(gone.kept_ready, None);
        assert_eq!(gone.live_version, None, "it is created again");
    }

    #[test]
    fn an_object_replaced_on_every_deploy_is_never_kept() {
        let target = config_map(json!({strategy::UPDATE_STRATEGY: "always-replace"}));
        assert!(Found::kept(&target, &seen("8", None)).is_none());
    }
}
