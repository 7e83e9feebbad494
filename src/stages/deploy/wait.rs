//! Waiting until applied objects are really ready, with watches: the object itself, the pods of
//! a workload and the Warning events around them. Each event either settles the wait or leaves
//! it going; what will not heal fails it at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DynamicObject, LogParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use super::plan::{Target, label_of};
use super::ready::{self, Readiness};
use super::request::DISABLE_WAIT;
use crate::adapters::cluster::{self, Sighting};
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

/// Waits until the target is ready, showing the outcome. The pods of a workload whose
/// template the deploy kept (`pods_of_any_age`) are its current ones, however old: their
/// failures count (an earlier rollout's pods say nothing of a new one).
pub(super) async fn wait_for(
    client: &Client,
    progress: &dyn Progress,
    target: &Target,
    pods_of_any_age: bool,
    deadline: tokio::time::Instant,
) -> Result<(), WaitError> {
    let label = label_of(target);
    let result = wait_ready(client, progress, target, &label, pods_of_any_age, deadline).await;
    let last = match &result {
        Ok(()) => "ready".to_string(),
        Err(WaitError::Failed(reason)) => format!("FAILED: {reason}"),
        Err(WaitError::Timeout(last)) => format!("TIMEOUT: {last}"),
    };
    progress.finish(&label, &last);
    result
}

/// Waits with watches until the object is ready; fails at once on what will not heal.
async fn wait_ready(
    client: &Client,
    progress: &dyn Progress,
    target: &Target,
    label: &str,
    pods_of_any_age: bool,
    deadline: tokio::time::Instant,
) -> Result<(), WaitError> {
    if target.desired.value["metadata"]["annotations"][DISABLE_WAIT] == "true" {
        return Ok(());
    }
    let Some((resource, namespaced)) = &target.resource else {
        return Ok(());
    };
    let api = cluster::api_for(client, resource, *namespaced, &target.reference);
    let mut objects = cluster::watch_one(api, &target.reference.name).boxed();
    let mut pods = pod_watch(client, target);
    let mut events = warning_watch(client, target);
    let mut watch = Watch::new(target, label, pods_of_any_age);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let verdict = tokio::select! {
            event = objects.try_next() => match event {
                Ok(Some(Sighting::Seen(object))) => watch.on_object(progress, &object),
                Ok(Some(Sighting::Gone)) => watch.on_gone(),
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
            _ = tick.tick() => watch.unschedulable_too_long(Instant::now()),
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
    /// The workload did not change: its existing pods are its current ones.
    pods_of_any_age: bool,
    /// The last state seen, for the timeout's message.
    last: String,
}

type Verdict = Option<Result<(), WaitError>>;

impl<'a> Watch<'a> {
    fn new(target: &'a Target, label: &'a str, pods_of_any_age: bool) -> Self {
        Watch {
            target,
            label,
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

    fn on_warning(&self, event: &Event) -> Verdict {
        let value = serde_json::to_value(event).unwrap_or_default();
        let reason = ready::warning_failure(&value, &self.involved, self.applied_at)?;
        self.failed(reason)
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

#[cfg(test)]
mod tests {
    use super::*;

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
