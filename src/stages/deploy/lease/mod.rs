//! The group lock: one deploy (or delete) of an app group at a time, held as a Lease in the
//! inventory namespace with client-go's leader-election rules.
//!
//! - Every change of the Lease is conditional on the `resourceVersion` last read, so two
//!   writers can never both win; a conflict means re-reading, never overwriting.
//! - A candidate judges a Lease expired by its own clock: only after it has seen the same
//!   version of it for a whole lease duration (the holder's timestamps are not trusted).
//! - The holder renews every retry period. When a renewal has not succeeded for the renew
//!   deadline (shorter than the lease duration), the holder has lost the lock: its [`Fence`]
//!   stops every write at once, before anyone else can take the Lease over.
//! - At the end the holder waits for its renewal in flight (bounded by the renew deadline),
//!   then deletes the Lease on condition of the version it last saw, passing failures retried
//!   for a bounded time (short when the work failed: a failed deploy exits by its deadline);
//!   a Lease it could not release is said, with when it expires.

mod error;
mod rules;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::inventory::{Inventories, InventoryError};
use crate::adapters::cluster;
use crate::adapters::retry::Retrier;
use crate::progress::Progress;

pub use error::LeaseError;
use rules::{
    FAILED_END_WAIT, LEASE_DURATION, Observed, RELEASE_ATTEMPT, RELEASE_WAIT, RENEW_DEADLINE,
    RETRY_PERIOD, holder_of, unheld,
};

/// Whether the holder may still write: every write of a deploy asks it first, and every wait
/// of a deploy ends when it says the lock is lost.
#[derive(Debug, Clone)]
pub(super) struct Fence {
    lease: String,
    /// The moment the lock is lost unless a renewal succeeds before.
    deadline: watch::Receiver<Instant>,
    cause: watch::Receiver<Option<String>>,
}

impl Fence {
    /// `Ok` while the lock is held.
    pub fn check(&self) -> Result<(), LeaseError> {
        if Instant::now() < *self.deadline.borrow() {
            Ok(())
        } else {
            Err(self.lost_error())
        }
    }

    fn lost_error(&self) -> LeaseError {
        LeaseError::Lost {
            lease: self.lease.clone(),
            cause: self.cause.borrow().clone(),
        }
    }

    /// Resolves when the lock is lost.
    pub async fn lost(&self) -> LeaseError {
        let mut deadline = self.deadline.clone();
        loop {
            let until = *deadline.borrow_and_update();
            if Instant::now() >= until {
                return self.lost_error();
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                changed = deadline.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep_until(until).await;
                    }
                }
            }
        }
    }
}

/// Runs `work` holding the group's lock (the inventory namespace is created if missing). The
/// work gets the lock's [`Fence`]; should the lock be lost, the work is stopped.
pub(super) async fn with_group_lock<T, E, F, W>(
    inventories: &Inventories,
    lock_timeout: Duration,
    progress: &dyn Progress,
    work: F,
) -> Result<T, E>
where
    E: From<LeaseError> + From<InventoryError>,
    F: FnOnce(Fence) -> W,
    W: Future<Output = Result<T, E>>,
{
    bounded(inventories, inventories.ensure_namespace()).await??;
    let lock = GroupLock::take(inventories, lock_timeout).await?;
    let (keeper, fence) = lock.keep_alive();
    let result = tokio::select! {
        done = work(fence.clone()) => done,
        lost = fence.lost() => Err(lost.into()),
    };
    // Work that succeeded waits for the renewal in flight and the release, each bounded by the
    // clock; work that failed ends promptly.
    let give_up = result.is_err().then(|| Instant::now() + FAILED_END_WAIT);
    let stopped = keeper.stop(give_up).await;
    if let Err(left) = lock.end(stopped, give_up).await {
        // The work's outcome stands; the lock left behind is said, never silent.
        progress.finish("deploy lock", &format!("warning: {left}"));
    }
    result
}

/// The API server's answer within five retry periods; a stalled server is an error by the clock.
async fn bounded<T>(
    inventories: &Inventories,
    call: impl Future<Output = T>,
) -> Result<T, LeaseError> {
    tokio::time::timeout(RETRY_PERIOD * 5, call)
        .await
        .map_err(|_| LeaseError::NoAnswer {
            lease: lease_name(inventories),
        })
}

fn lease_name(inventories: &Inventories) -> String {
    format!(
        "{}/umbrella-lock-{}",
        inventories.namespace(),
        inventories.group()
    )
}

/// `pid@host`, and a random tail: two deploys never share an identity.
fn holder_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}@{host}-{nanos:08x}", std::process::id())
}

/// A held group lock.
pub(super) struct GroupLock {
    retrier: Retrier,
    api: Api<Lease>,
    name: String,
    lease: String,
    holder: String,
    /// The version of the Lease our last write made.
    version: String,
    /// When that write was sent: the renew deadline counts from there.
    sent: Instant,
}

impl GroupLock {
    /// Takes the group's lock, waiting up to `wait` for its holder to finish or to be gone.
    async fn take(inventories: &Inventories, wait: Duration) -> Result<Self, LeaseError> {
        let candidate = Candidate {
            retrier: inventories.retrier().clone(),
            api: Api::namespaced(inventories.client(), inventories.namespace()),
            name: format!("umbrella-lock-{}", inventories.group()),
            lease: lease_name(inventories),
            holder: holder_identity(),
        };
        let give_up = Instant::now() + wait;
        let mut observed = None;
        loop {
            let seen = match candidate.try_take(&mut observed).await? {
                Attempt::Taken(lock) => return Ok(lock),
                Attempt::Held(lease) => lease,
            };
            let now = Instant::now();
            if now >= give_up {
                return Err(candidate.held_error(inventories.group(), &seen));
            }
            tokio::time::sleep_until((now + RETRY_PERIOD).min(give_up)).await;
        }
    }

    /// Starts renewing; the [`Fence`] says for how long the lock is still ours.
    fn keep_alive(&self) -> (Keeper, Fence) {
        let (deadline_sender, deadline) = watch::channel(self.sent + RENEW_DEADLINE);
        let (cause_sender, cause) = watch::channel(None);
        let (stop, stopped) = oneshot::channel();
        let renewer = Renewer {
            api: self.api.clone(),
            name: self.name.clone(),
            holder: self.holder.clone(),
            version: self.version.clone(),
            deadline: deadline_sender,
            cause: cause_sender,
        };
        let fence = Fence {
            lease: self.lease.clone(),
            deadline,
            cause,
        };
        let keeper = Keeper {
            stop,
            task: tokio::spawn(renewer.run(stopped)),
            deadline: fence.deadline.clone(),
        };
        (keeper, fence)
    }

    /// Once renewing has stopped: releases the lock while it is still ours. `Err` says that our
    /// Lease may stay behind, and until when.
    async fn end(&self, stopped: Stopped, give_up: Option<Instant>) -> Result<(), LeaseError> {
        let cause = match stopped.ended {
            Ended::Held(version) => match self.release(version, give_up).await {
                Ok(()) => return Ok(()),
                Err(cause) => cause,
            },
            Ended::Lost => "it could not be renewed in time".to_string(),
            Ended::Unanswered => "a renewal was still unanswered when the work ended".to_string(),
            // Someone else's now: nothing of ours is left.
            Ended::Taken => return Ok(()),
        };
        let since = Instant::now().saturating_duration_since(stopped.renewed);
        let expires = Timestamp::now()
            .checked_sub(since)
            .and_then(|t| t.checked_add(LEASE_DURATION))
            .and_then(|t| t.round(k8s_openapi::jiff::Unit::Second))
            .unwrap_or_else(|_| Timestamp::now());
        Err(LeaseError::LeftBehind {
            lease: self.lease.clone(),
            cause,
            expires,
        })
    }

    /// Deletes the Lease, on condition that it is still the version our last write made; when a
    /// write of ours whose answer was lost moved it on (we still hold it), on condition of the
    /// version read then. A Lease anyone else has written since stays. Passing failures are
    /// retried for [`RELEASE_WAIT`] (or until `give_up`); `Err` says why the Lease may still
    /// be there.
    async fn release(&self, version: String, give_up: Option<Instant>) -> Result<(), String> {
        let started = Instant::now();
        let until = give_up.map_or(started + RELEASE_WAIT, |g| g.min(started + RELEASE_WAIT));
        let released = tokio::time::timeout_at(until, self.release_from(version)).await;
        released.unwrap_or_else(|_| {
            Err(format!(
                "no answer from the API server in {:.1}s",
                started.elapsed().as_secs_f64()
            ))
        })
    }

    async fn release_from(&self, mut version: String) -> Result<(), String> {
        let what = format!("releasing the deploy lock {}", self.lease);
        loop {
            let params = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    resource_version: Some(version.clone()),
                    uid: None,
                }),
                ..Default::default()
            };
            let deleted = self
                .call(&what, || self.api.delete(&self.name, &params))
                .await;
            match deleted {
                // Gone: deleted now, or by an attempt of ours whose answer was lost.
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.to_string()),
            }
            let current = self.call(&what, || self.api.get_opt(&self.name)).await;
            match current.map_err(|e| e.to_string())? {
                Some(lease) if holder_of(&lease) == self.holder => {
                    version = lease.metadata.resource_version.unwrap_or_default();
                }
                // Gone, or someone else's: not ours to delete.
                _ => return Ok(()),
            }
        }
    }

    /// A call of the release with the retry policy, each attempt bounded by the clock.
    async fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        cluster::call_within(&self.retrier, what, RELEASE_ATTEMPT, call).await
    }
}

/// Someone who wants the lock.
struct Candidate {
    retrier: Retrier,
    api: Api<Lease>,
    name: String,
    lease: String,
    holder: String,
}

enum Attempt {
    Taken(GroupLock),
    Held(Lease),
}

impl Candidate {
    fn api_error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            lease: self.lease.clone(),
            source,
        }
    }

    /// A Lease call with the retry policy: every one of them is conditional or a read.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        cluster::call(
            &self.retrier,
            &format!("the deploy lock {}", self.lease),
            call,
        )
        .await
    }

    /// Creates the Lease, or takes over one that is free or expired by our own observation.
    async fn try_take(&self, observed: &mut Option<Observed>) -> Result<Attempt, LeaseError> {
        let sent = Instant::now();
        let fresh = self.lease_object(None, 0);
        let params = PostParams::default();
        match self.call(|| self.api.create(&params, &fresh)).await {
            Ok(created) => return Ok(Attempt::Taken(self.taken(created, sent))),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(self.api_error(e)),
        }
        let Some(current) = self.current().await? else {
            // Released between our create and our read: try again at once.
            return Box::pin(self.try_take(observed)).await;
        };
        if holder_of(&current) == self.holder {
            // Our create landed, but its answer was lost (and retried into a conflict).
            return Ok(Attempt::Taken(self.taken(current, sent)));
        }
        let seen = Observed::update(observed.take(), &current, Instant::now());
        let free = unheld(&current) || seen.expired(Instant::now());
        *observed = Some(seen);
        if !free {
            return Ok(Attempt::Held(current));
        }
        self.take_over(current).await
    }

    /// Replaces a free or expired Lease, on condition that it is still the version we saw.
    async fn take_over(&self, current: Lease) -> Result<Attempt, LeaseError> {
        let transitions = current
            .spec
            .as_ref()
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0);
        let takeover =
            self.lease_object(current.metadata.resource_version.clone(), transitions + 1);
        let sent = Instant::now();
        let params = PostParams::default();
        match self
            .call(|| self.api.replace(&self.name, &params, &takeover))
            .await
        {
            Ok(taken) => Ok(Attempt::Taken(self.taken(taken, sent))),
            // Someone wrote it first (then it is theirs, and our observation starts over), or
            // our own replace landed and its answer was lost.
            Err(kube::Error::Api(e)) if e.code == 409 => match self.current().await? {
                Some(now) if holder_of(&now) == self.holder => {
                    Ok(Attempt::Taken(self.taken(now, sent)))
                }
                _ => Ok(Attempt::Held(current)),
            },
            Err(e) => Err(self.api_error(e)),
        }
    }

    async fn current(&self) -> Result<Option<Lease>, LeaseError> {
        self.call(|| self.api.get_opt(&self.name))
            .await
            .map_err(|e| self.api_error(e))
    }

    fn lease_object(&self, version: Option<String>, transitions: i32) -> Lease {
        let now = MicroTime(Timestamp::now());
        Lease {
            metadata: kube::api::ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: version,
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.holder.clone()),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }

    fn taken(&self, lease: Lease, sent: Instant) -> GroupLock {
        GroupLock {
            retrier: self.retrier.clone(),
            api: self.api.clone(),
            name: self.name.clone(),
            lease: self.lease.clone(),
            holder: self.holder.clone(),
            version: lease.metadata.resource_version.unwrap_or_default(),
            sent,
        }
    }

    fn held_error(&self, group: &str, lease: &Lease) -> LeaseError {
        let spec = lease.spec.clone().unwrap_or_default();
        let renewed = match spec.renew_time {
            Some(MicroTime(at)) => {
                let ago = Timestamp::now().as_second() - at.as_second();
                format!("at {at} by its clock, {ago}s ago by ours")
            }
            None => "never".to_string(),
        };
        LeaseError::Held {
            group: group.to_string(),
            lease: self.lease.clone(),
            holder: spec.holder_identity.unwrap_or_default(),
            renewed,
        }
    }
}
/// How renewing ended.
#[derive(Debug, PartialEq)]
enum Ended {
    /// Stopped while the lock was ours: the Lease's version as our last write made it.
    Held(String),
    /// The renew deadline passed: our Lease stays until it expires.
    Lost,
    /// A renewal was still in flight when the end of the work gave up waiting for it: our
    /// Lease stays until it expires.
    Unanswered,
    /// Someone else holds the Lease now.
    Taken,
}

/// How renewing ended, and when the last renewal that succeeded was sent.
struct Stopped {
    ended: Ended,
    renewed: Instant,
}

/// The renewing task's handle.
struct Keeper {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Ended>,
    deadline: watch::Receiver<Instant>,
}

impl Keeper {
    /// Stops renewing once the renewal in flight (if any) has ended: a release beside it would
    /// race it. That renewal ends by the renew deadline at the latest (it is bounded by it), so
    /// a stalled API server holds the end of a deploy no longer than that, or than `give_up`.
    async fn stop(self, give_up: Option<Instant>) -> Stopped {
        let _ = self.stop.send(());
        let bound = *self.deadline.borrow() + RETRY_PERIOD;
        let bound = give_up.map_or(bound, |g| g.min(bound));
        let mut task = self.task;
        let ended = match tokio::time::timeout_at(bound, &mut task).await {
            Ok(Ok(ended)) => ended,
            // The task is gone (it cannot panic but for a bug): the lock counts as lost.
            Ok(Err(_)) => Ended::Lost,
            Err(_) => {
                task.abort();
                Ended::Unanswered
            }
        };
        let renewed = *self.deadline.borrow();
        Stopped {
            ended,
            renewed: renewed.checked_sub(RENEW_DEADLINE).unwrap_or(renewed),
        }
    }
}

/// Renews the Lease every retry period, each renewal conditional on the version the last one
/// made.
struct Renewer {
    api: Api<Lease>,
    name: String,
    holder: String,
    version: String,
    deadline: watch::Sender<Instant>,
    cause: watch::Sender<Option<String>>,
}

impl Renewer {
    async fn run(mut self, mut stopped: oneshot::Receiver<()>) -> Ended {
        loop {
            let stopping = tokio::select! {
                _ = &mut stopped => true,
                _ = tokio::time::sleep(RETRY_PERIOD) => false,
            };
            let deadline = *self.deadline.borrow();
            if Instant::now() >= deadline {
                return Ended::Lost;
            }
            if stopping {
                return Ended::Held(self.version);
            }
            // A renewal in flight is finished (or given up at the deadline) before stopping:
            // releasing beside it would race it.
            match tokio::time::timeout_at(deadline, self.renew()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    self.deadline.send_replace(Instant::now());
                    return Ended::Taken;
                }
                Ok(Err(cause)) => {
                    self.cause.send_replace(Some(cause));
                }
                Err(_) => {
                    self.cause
                        .send_replace(Some("the API server did not answer".into()));
                    return Ended::Lost;
                }
            }
        }
    }

    /// One renewal: `Ok(true)` renewed, `Ok(false)` someone else holds the Lease now, `Err`
    /// the renewal failed (tried again at the next period).
    async fn renew(&mut self) -> Result<bool, String> {
        let sent = Instant::now();
        let mut current = self.api.get(&self.name).await.map_err(|e| e.to_string())?;
        let spec = current.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.holder.as_str()) {
            return Ok(false);
        }
        if current.metadata.resource_version.as_deref() != Some(self.version.as_str()) {
            // Our own earlier renewal landed after its answer was lost: the version moved, the
            // holder did not. Anything else would have changed the holder.
            self.version = current
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default();
        }
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &current)
            .await
        {
            Ok(renewed) => {
                self.version = renewed.metadata.resource_version.unwrap_or_default();
                self.deadline.send_replace(sent + RENEW_DEADLINE);
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Err(format!("conflict: {}", e.message)),
            Err(e) => Err(e.to_string()),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn lease(version: &str, holder: Option<&str>) -> Lease {
        Lease {
            metadata: kube::api::ObjectMeta {
                resource_version: Some(version.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn expiry_is_judged_by_the_candidates_own_clock_from_the_last_change() {
        let start = Instant::now();
        let seen = Observed::update(None, &lease("1", Some("a")), start);
        assert!(!seen.expired(start + Duration::from_secs(14)));
        // The same version seen later keeps the first sighting.
        let again = Observed::update(
            Some(seen),
            &lease("1", Some("a")),
            start + Duration::from_secs(10),
        );
        assert_eq!(again.since, start);
        assert!(again.expired(start + Duration::from_secs(15)));
        // A renewal (a new version) restarts the clock.
        let renewed = Observed::update(
            Some(again),
            &lease("2", Some("a")),
            start + Duration::from_secs(14),
        );
        assert!(!renewed.expired(start + Duration::from_secs(20)));
        assert!(renewed.expired(start + Duration::from_secs(29)));
        assert!(unheld(&lease("3", None)) && unheld(&lease("3", Some(""))));
        assert!(!unheld(&lease("3", Some("a"))));
    }

    #[test]
    fn the_holder_stops_before_any_candidate_can_take_over() {
        assert!(RENEW_DEADLINE + RETRY_PERIOD < LEASE_DURATION);
    }

    #[test]
    fn a_lock_left_behind_says_which_when_it_expires_and_how_to_wait() {
        let left = LeaseError::LeftBehind {
            lease: "umbrella-system/umbrella-lock-prod".into(),
            cause: "no answer from the API server within 10s".into(),
            expires: "2030-01-02T03:04:05Z".parse().expect("a timestamp"),
        };
        let text = left.to_string();
        assert!(
            text.contains("Lease umbrella-system/umbrella-lock-prod")
                && text.contains("no answer from the API server")
                && text.contains("expires at 2030-01-02T03:04:05Z")
                && text.contains("holds the lock")
                && text.contains("--lock-timeout 34s"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fence_is_lost_at_its_deadline_unless_renewed() {
        let start = Instant::now();
        let (deadline, receiver) = watch::channel(start + RENEW_DEADLINE);
        let (_cause, cause) = watch::channel(None);
        let fence = Fence {
            lease: "ns/l".into(),
            deadline: receiver,
            cause,
        };
        assert!(fence.check().is_ok());
        let almost = RENEW_DEADLINE - Duration::from_secs(1);
        tokio::time::sleep(almost).await;
        deadline.send_replace(Instant::now() + RENEW_DEADLINE);
        tokio::time::sleep(almost).await;
        assert!(
            fence.check().is_ok(),
            "renewed just in time: held for another deadline"
        );
        let lost = fence.lost().await;
        assert_eq!(
            Instant::now().duration_since(start),
            almost + RENEW_DEADLINE
        );
        assert!(lost.to_string().contains("lost the deploy lock"), "{lost}");
        assert!(fence.check().is_err());
    }
}
