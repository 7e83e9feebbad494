//! The state's objects against the live cluster, without writing to it: from a LIST of the
//! group's objects where it proves an apply would change nothing, else the live object and
//! the server's answer to a server-side apply dry run of the same version of it. Shared by
//! `diff` and `status`.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch};
use kube::discovery::Discovery;
use serde::Serialize;
use serde_json::Value;

use super::apply::{describe_apply_error, patch_scrubbed};
use super::inventory::foreign_owner;
use super::listed::{Lister, Seen};
use super::outcome::Op;
use super::plan::{StateCrds, Target, defined_by_state};
use super::strategy::{self, UpdateStrategy};
use crate::adapters::cluster::{self, ClusterError};
use crate::adapters::retry::Retrier;
use crate::formats::object_ref::ObjectRef;
use crate::formats::secrets;

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

/// How often a comparison reads again when the object changed between its read and its dry run.
const SNAPSHOT_ATTEMPTS: usize = 5;

/// The live object, and the dry run's answer (with its note) or why it failed.
type DryRunSnapshot = (Option<Value>, Result<(Value, Option<String>), kube::Error>);

/// How the state's objects are compared with the live ones.
pub(super) struct Comparison<'a> {
    pub client: &'a Client,
    pub retrier: &'a Retrier,
    /// The environment the state's objects belong to.
    pub env: &'a str,
    pub commits: &'a BTreeMap<String, String>,
    pub state_crds: &'a StateCrds,
    pub force_conflicts: bool,
    /// Objects another app owns may be taken over (deploy's `--adopt`).
    pub adopt: bool,
}

impl Comparison<'_> {
    /// Every target compared, in the targets' order, each with its live object: those a LIST
    /// shows an apply would not change at once, the others by a read and a dry run.
    pub(super) async fn all(
        &self,
        targets: &[Target],
        concurrency: usize,
    ) -> Result<Vec<(ObjectDiff, Option<Value>)>, ClusterError> {
        let lister = Lister {
            client: self.client,
            retrier: self.retrier,
            env: self.env,
            commits: self.commits,
        };
        let listed = lister.list(targets).await?;
        Ok(futures_util::stream::iter(targets.iter().zip(listed))
            .map(|(target, seen)| self.one(target, seen))
            .buffered(concurrency.max(1))
            .collect()
            .await)
    }

    async fn one(&self, target: &Target, seen: Option<Seen>) -> (ObjectDiff, Option<Value>) {
        let label = target.reference.to_string();
        let mut report = ObjectDiff {
            app: target.desired.app.clone(),
            object: label.clone(),
            op: Op::Create,
            diff: String::new(),
            note: None,
            error: None,
        };
        if let Some(seen) = seen.filter(|seen| seen.kept(target)) {
            report.op = Op::Unchanged;
            return (report, Some(seen.live));
        }
        let object = target.applied(self.env, self.commits.get(&target.desired.app));
        let Some((resource, namespaced)) = &target.resource else {
            self.unknown_kind(target, &object, &mut report);
            return (report, None);
        };
        let api = cluster::api_for(self.client, resource, *namespaced, &target.reference);
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
        let outcome = compared(target, &label, live.as_ref(), object, dry_run);
        (outcome.unwrap_or_else(|e| e.into_report(report)), live)
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
            let what = format!("reading {}", target.reference);
            let read = cluster::call(self.retrier, &what, || api.get_opt(&target.reference.name));
            let live = read
                .await
                .map_err(|e| describe_apply_error(&e, &target.desired.value))?
                .map(|l| cluster::with_type(&l, &target.reference));
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
        if defined_by_state(reference, self.state_crds) {
            report.diff = super::change::change(&report.object, None, object).diff;
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
        let labels = serde_json::from_value(live?["metadata"]["labels"].clone()).ok()?;
        let owner = foreign_owner(&labels, &target.desired.app, self.env)?;
        (!self.adopt).then(|| {
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
        let what = format!("dry run of {}", target.reference);
        let apply = |force: bool| {
            let params = cluster::apply_params(force).dry_run();
            let what = &what;
            async move {
                let patch = Patch::Apply(object);
                let sent = || patch_scrubbed(api, target, &params, &patch);
                cluster::call(self.retrier, what, sent)
                    .await
                    .map(|o| cluster::with_type(&o, &target.reference))
            }
        };
        match apply(self.force_conflicts).await {
            Err(kube::Error::Api(e)) if e.code == 409 && !self.force_conflicts => {
                let message = secrets::scrub(&e.message, &target.desired.value);
                let note = match strategy::repair(&e.message) {
                    Ok(repaired) => {
                        format!("{message}; deploy takes these fields back ({repaired})")
                    }
                    Err(others) if !others.is_empty() => format!(
                        "{message}; deploy needs --force-conflicts to take these fields from {}",
                        others.join(", ")
                    ),
                    Err(_) => {
                        format!(
                            "{message}; deploy needs --force-conflicts to take these fields back"
                        )
                    }
                };
                Ok((apply(true).await?, Some(note)))
            }
            other => other.map(|after| (after, None)),
        }
    }
}

/// What a deploy does with an object, from the live object and the dry run's answer.
struct Compared {
    op: Op,
    diff: String,
    note: Option<String>,
}

/// Why an object cannot be compared as deploy would apply it.
struct NotCompared(String);

impl NotCompared {
    fn into_report(self, mut report: ObjectDiff) -> ObjectDiff {
        report.error = Some(self.0);
        report
    }
}

/// The change deploy makes, by the object's update strategy: replaced (always, or on an
/// immutable field with fallback-on-replace), created, or updated as the dry run answered.
fn compared(
    target: &Target,
    label: &str,
    live: Option<&Value>,
    object: Value,
    dry_run: Result<(Value, Option<String>), kube::Error>,
) -> Result<ObjectDiff, NotCompared> {
    let strategy = UpdateStrategy::of(&target.desired.value).map_err(NotCompared)?;
    let changed = |after: &Value, note: Option<String>| {
        let change = super::change::change(label, live, after);
        Compared {
            op: change.op,
            diff: change.diff,
            note,
        }
    };
    let replacement = |object: &Value| Compared {
        op: Op::Replace,
        note: Some(format!(
            "deploy deletes it and creates it again ({})",
            strategy::UPDATE_STRATEGY
        )),
        ..changed(object, None)
    };
    let compared = match dry_run {
        _ if live.is_some() && strategy == UpdateStrategy::AlwaysReplace => replacement(&object),
        // A create shows the object as umbrella sends it: server defaults stay out.
        Ok((after, note)) => changed(if live.is_some() { &after } else { &object }, note),
        // Its namespace does not exist yet: the deploy creates it first.
        Err(kube::Error::Api(e)) if e.code == 404 && live.is_none() => changed(&object, None),
        Err(e) => {
            let message = describe_apply_error(&e, &target.desired.value);
            let immutable = live.is_some() && strategy::is_immutable_change(&message);
            match strategy {
                UpdateStrategy::FallbackOnReplace if immutable => replacement(&object),
                _ if immutable => return Err(NotCompared(strategy::immutable_advice(&message))),
                _ => return Err(NotCompared(message)),
            }
        }
    };
    Ok(ObjectDiff {
        app: target.desired.app.clone(),
        object: label.to_string(),
        op: compared.op,
        diff: compared.diff,
        note: compared.note,
        error: None,
    })
}

/// The live object, `None` when it (or its kind) is gone.
pub(super) async fn live_object(
    client: &Client,
    discovery: &Discovery,
    reference: &ObjectRef,
) -> Result<Option<Value>, String> {
    let Some((resource, namespaced)) = cluster::resolve(discovery, reference) else {
        return Ok(None);
    };
    cluster::api_for(client, &resource, namespaced, reference)
        .get_opt(&reference.name)
        .await
        .map(|live| live.map(|l| cluster::with_type(&l, reference)))
        .map_err(|e| e.to_string())
}
