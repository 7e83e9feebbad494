//! The lock's rules of time, as client-go's leader election has them: how long a Lease stays
//! taken, when its holder must stop writing, and how a candidate judges it expired.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use tokio::time::Instant;

/// How long a Lease nobody renews stays taken, as its candidates count it. Twice client-go's
/// default: a deploy rides out an API server outage of 10 s and more, where a controller
/// would rather hand over fast.
pub(super) const LEASE_DURATION: Duration = Duration::from_secs(30);
/// How long the holder goes on without a successful renewal before it stops writing: a third
/// of the lease duration is left between the two, for requests still under way.
pub(super) const RENEW_DEADLINE: Duration = Duration::from_secs(20);
/// How often the holder renews, and a waiting candidate looks again.
pub(super) const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// A `--lock-timeout` that outlasts a Lease nobody renews: its duration and two looks more.
pub(super) const TAKEOVER_WAIT: Duration =
    Duration::from_secs(LEASE_DURATION.as_secs() + RETRY_PERIOD.as_secs() * 2);
/// How long the release of the lock is tried (each attempt bounded, passing failures retried):
/// a slow API server still gets the Lease deleted; a stalled one holds the exit no longer.
pub(super) const RELEASE_WAIT: Duration = Duration::from_secs(10);
/// How long one attempt of the release may take.
pub(super) const RELEASE_ATTEMPT: Duration = Duration::from_secs(4);
/// How long the end of work that failed waits for its renewal in flight and its release
/// together: a failed deploy exits by its deadline (`--wait-timeout`), a stalled API server or
/// not, and says so when its Lease stays.
pub(super) const FAILED_END_WAIT: Duration = Duration::from_secs(1);

/// What a candidate has seen of a Lease it does not hold: which version, since when (by the
/// candidate's own clock).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Observed {
    version: String,
    pub(super) since: Instant,
    duration: Duration,
}

impl Observed {
    /// The same version seen again keeps its first sighting; a new one restarts the clock.
    pub(super) fn update(previous: Option<Observed>, lease: &Lease, now: Instant) -> Observed {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let duration = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map_or(LEASE_DURATION, Duration::from_secs);
        match previous {
            Some(seen) if seen.version == version => seen,
            _ => Observed {
                version,
                since: now,
                duration,
            },
        }
    }

    /// Expired: unchanged for its whole duration, by our clock.
    pub(super) fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.since) >= self.duration
    }
}

/// Who holds the Lease (empty when nobody does).
pub(super) fn holder_of(lease: &Lease) -> &str {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or_default()
}

/// Free to take at once: no holder (released).
pub(super) fn unheld(lease: &Lease) -> bool {
    holder_of(lease).is_empty()
}
