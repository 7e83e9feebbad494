//! Waiting until applied objects are really ready, with watches: the object itself, the pods of
//! a workload and the Warning events around them. Each event either settles the wait or leaves
//! it going; what will not heal fails it at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DynamicObject, LogParams};
use kube::{Client, ResourceExt};

use super::plan::{Target, label_of};
use super::ready::{self, Readiness};
use super::request::DISABLE_WAIT;
use crate::adapters::cluster;
use crate::adapters::feeds::{Feeds, Subscription, Update};
use crate::progress::Progress;

/// How long a pod may stay unschedulable before the deploy gives up on it.
const UNSCHEDULABLE_GRACE: Duration = Duration::from_secs(30);

/// Why an object did not get ready.
#[derive(Debug)]
pub(super) enum WaitError {
    /// It will not heal: the reason.
    Failed(String),
    /// The deadline passed: the last state seen.
    Timeout(String),
}

/// Waits until the target is ready, showing the outcome. `uid` is the object's as applied
/// (when this deploy applied it): an earlier object of the same name says nothing of it. The
/// pods of a workload whose template the deploy kept (`pods_of_any_age`) are its current ones,
/// however old: their failures count (an earlier rollout's pods say nothing of a new one).
pub(super) async fn wait_for(
    feeds: &Feeds,
    client: &Client,
    progress: &dyn Progress,
    target: &Target,
    uid: Option<&str>,
    pods_of_any_age: bool,
    deadline: tokio::time::Instant,
) -> Result<(), WaitError> {
    let label = label_of(target);
    let watch = Watch::new(target, &label, uid, pods_of_any_age);
    let result = wait_ready(feeds, client, progress, watch, deadline).await;
    let last = match &result {
        Ok(()) => "ready".to_string(),
        Err(WaitError::Failed(reason)) => format!("FAILED: {reason}"),
        Err(WaitError::Timeout(last)) => format!("TIMEOUT: {last}"),
    };
    progress.finish(&label, &last);
    result
}

/// Waits, on the deploy's shared watches, until the object is ready; fails at once on what
/// will not heal.
async fn wait_ready(
    feeds: &Feeds,
    client: &Client,
    progress: &dyn Progress,
    mut watch: Watch<'_>,
    deadline: tokio::time::Instant,
) -> Result<(), WaitError> {
    let target = watch.target;
    if target.desired.value["metadata"]["annotations"][DISABLE_WAIT] == "true" {
        return Ok(());
    }
    let Some((resource, _)) = &target.resource else {
        return Ok(());
    };
    let namespace = target.reference.namespace.as_deref();
    let mut objects = feeds.objects(resource, namespace, &target.reference.name);
    let selector = ready::pod_match_labels(&target.desired.value);
    let mut pods = namespace
        .filter(|_| selector.is_some())
        .map(|ns| feeds.pods(ns));
    let selector = selector.unwrap_or_default();
    let mut events = namespace.map(|ns| feeds.warnings(ns));
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let verdict = tokio::select! {
            update = objects.next() => watch.on_object_update(progress, update),
            update = next_update(&mut events) => watch.on_warnings(update),
            update = next_update(&mut pods) => watch.on_pods(client, &selector, update).await,
            // A pod that stays unschedulable produces no new event: look at the clock too.
            _ = tick.tick() => watch.unschedulable_too_long(Instant::now()),
            _ = tokio::time::sleep_until(deadline) => Some(Err(WaitError::Timeout(watch.last.clone()))),
        };
        if let Some(verdict) = verdict {
            return verdict;
        }
    }
}

/// The next update of an optional watch; never, when there is none.
async fn next_update<K>(subscription: &mut Option<Subscription<K>>) -> Update<K> {
    match subscription {
        Some(subscription) => subscription.next().await,
        None => std::future::pending().await,
    }
}

/// What one update of the object's kind and namespace says about the object: the object
/// named `name` (with `uid`, when known), not one deleted before it or created after it.
fn sighting(update: Update<DynamicObject>, name: &str, uid: Option<&str>) -> Option<Sighting> {
    let ours = |object: &DynamicObject| {
        object.metadata.name.as_deref() == Some(name)
            && uid.is_none_or(|uid| object.metadata.uid.as_deref() == Some(uid))
    };
    match update {
        Update::Snapshot { objects, relisted } => match objects.into_iter().find(|o| ours(o)) {
            Some(object) => Some(Sighting::Seen(object)),
            None => relisted.then_some(Sighting::Gone),
        },
        Update::Applied(object) => ours(&object).then_some(Sighting::Seen(object)),
        Update::Deleted(object) => ours(&object).then_some(Sighting::Gone),
        Update::Interrupted(reason) => Some(Sighting::Interrupted(reason)),
    }
}

/// What the object's watch tells of it.
#[derive(Debug, PartialEq)]
enum Sighting {
    Seen(Arc<DynamicObject>),
    Gone,
    Interrupted(String),
}

/// Whether `pod` carries every label of the workload's `selector`.
fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.labels();
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// What a wait has seen so far; each event either settles the wait or leaves it going.
struct Watch<'a> {
    target: &'a Target,
    label: &'a str,
    /// The object's as applied, when this deploy applied it.
    uid: Option<&'a str>,
    /// The object and its pods: the Warning events that count.
    involved: BTreeSet<String>,
    applied_at: k8s_openapi::jiff::Timestamp,
    /// Pods seen unschedulable: since when, and why.
    unschedulable_since: BTreeMap<String, (Instant, String)>,
    /// The workload did not change: its existing pods are its current ones.
    pods_of_any_age: bool,
    /// The last state seen, for the timeout's message.
    last: String,
}

type Verdict = Option<Result<(), WaitError>>;

impl<'a> Watch<'a> {
    fn new(
        target: &'a Target,
        label: &'a str,
        uid: Option<&'a str>,
        pods_of_any_age: bool,
    ) -> Self {
        Watch {
            target,
            label,
            uid,
            involved: BTreeSet::from([target.reference.name.clone()]),
            applied_at: k8s_openapi::jiff::Timestamp::now(),
            unschedulable_since: BTreeMap::new(),
            pods_of_any_age,
            last: format!("{label}: waiting for the first status"),
        }
    }

    fn failed(&self, reason: impl std::fmt::Display) -> Verdict {
        Some(Err(WaitError::Failed(format!("{}: {reason}", self.label))))
    }

    /// The object was deleted after it was applied: a Job only once it completed (its
    /// `ttlSecondsAfterFinished`, or a hook's delete policy), so it counts as completed; any
    /// other kind is waited for still (the deadline says what was last seen).
    fn on_gone(&mut self) -> Verdict {
        if ready::completes_when_gone(&self.target.reference) {
            return Some(Ok(()));
        }
        self.last = format!("{}: deleted while waiting for it to be ready", self.label);
        None
    }

    fn on_object_update(
        &mut self,
        progress: &dyn Progress,
        update: Update<DynamicObject>,
    ) -> Verdict {
        match sighting(update, &self.target.reference.name, self.uid)? {
            Sighting::Seen(object) => self.on_object(progress, &object),
            Sighting::Gone => self.on_gone(),
            Sighting::Interrupted(reason) => {
                self.last = format!("{}: watch interrupted ({reason}), reconnecting", self.label);
                None
            }
        }
    }

    fn on_object(&mut self, progress: &dyn Progress, object: &DynamicObject) -> Verdict {
        match self
            .target
            .readiness(&cluster::with_type(object, &self.target.reference))
        {
            Readiness::Ready => Some(Ok(())),
            Readiness::Failed(reason) => self.failed(reason),
            Readiness::Waiting(message) => {
                progress.update(self.label, &format!("waiting: {message}"));
                self.last = format!("{}: {message}", self.label);
                None
            }
        }
    }

    fn on_warnings(&self, update: Update<Event>) -> Verdict {
        update
            .objects()
            .iter()
            .find_map(|event| self.on_warning(event))
    }

    fn on_warning(&self, event: &Event) -> Verdict {
        let value = serde_json::to_value(event).unwrap_or_default();
        let reason = ready::warning_failure(&value, &self.involved, self.applied_at)?;
        self.failed(reason)
    }

    async fn on_pods(
        &mut self,
        client: &Client,
        selector: &BTreeMap<String, String>,
        update: Update<Pod>,
    ) -> Verdict {
        for pod in update.objects().iter().filter(|pod| selects(selector, pod)) {
            if let Some(verdict) = self.on_pod(client, pod).await {
                return Some(verdict);
            }
        }
        None
    }

    async fn on_pod(&mut self, client: &Client, pod: &Pod) -> Verdict {
        self.involved.insert(pod.name_any());
        // Pods of an earlier rollout say nothing about this one.
        let recent = self.pods_of_any_age
            || pod.creation_timestamp().is_none_or(|t| {
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
                self.unschedulable_too_long(Instant::now())
            }
            None => {
                self.unschedulable_since.remove(&pod.name_any());
                None
            }
        }
    }

    fn unschedulable_too_long(&self, now: Instant) -> Verdict {
        let reason = unschedulable_past_grace(&self.unschedulable_since, now)?;
        self.failed(reason)
    }
}

/// The reason of a pod unschedulable for longer than the grace period, if one is.
fn unschedulable_past_grace(
    since: &BTreeMap<String, (Instant, String)>,
    now: Instant,
) -> Option<&str> {
    since
        .values()
        .find(|(first_seen, _)| now.duration_since(*first_seen) > UNSCHEDULABLE_GRACE)
        .map(|(_, reason)| reason.as_str())
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

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;

    fn job(uid: &str) -> Arc<DynamicObject> {
        Arc::new(DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name: Some("migrate".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            data: serde_json::Value::Null,
        })
    }

    #[test]
    fn only_the_object_as_applied_is_seen_and_only_a_relist_proves_it_gone() {
        let seen = |update, uid| sighting(update, "migrate", uid);
        let snapshot =
            |objects: Vec<Arc<DynamicObject>>, relisted| Update::Snapshot { objects, relisted };
        assert_eq!(
            seen(snapshot(vec![job("old")], false), Some("new")),
            None,
            "an earlier object of the name is not the one applied"
        );
        assert_eq!(
            seen(snapshot(vec![], false), Some("new")),
            None,
            "not seen yet"
        );
        assert_eq!(
            seen(snapshot(vec![job("old")], true), Some("new")),
            Some(Sighting::Gone)
        );
        assert_eq!(
            seen(Update::Applied(job("new")), Some("new")),
            Some(Sighting::Seen(job("new")))
        );
        assert_eq!(seen(Update::Deleted(job("old")), Some("new")), None);
        assert_eq!(
            seen(Update::Deleted(job("new")), Some("new")),
            Some(Sighting::Gone)
        );
        assert_eq!(
            seen(Update::Applied(job("any")), None),
            Some(Sighting::Seen(job("any"))),
            "an object kept unchanged is known by its name"
        );
    }

    #[test]
    fn a_pod_fails_only_once_unschedulable_past_the_grace() {
        let start = Instant::now();
        let since = BTreeMap::from([(
            "web-1".to_string(),
            (start, "0/3 nodes are available".to_string()),
        )]);
        assert_eq!(
            unschedulable_past_grace(&since, start + UNSCHEDULABLE_GRACE),
            None
        );
        assert_eq!(
            unschedulable_past_grace(&since, start + UNSCHEDULABLE_GRACE + Duration::from_secs(1)),
            Some("0/3 nodes are available")
        );
        assert_eq!(
            unschedulable_past_grace(&BTreeMap::new(), start + UNSCHEDULABLE_GRACE * 2),
            None
        );
    }
}
