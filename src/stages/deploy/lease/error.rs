//! Why the lock could not be taken, was lost, or stays behind.

use k8s_openapi::jiff::Timestamp;

use super::rules::{LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD, TAKEOVER_WAIT};

/// The lock could not be taken, or was lost.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "another deploy of {group} holds the lock (Lease {lease}, holder {holder}, last renewed {renewed}); if it is still running, retry later or wait with --lock-timeout; if it is gone, the lock is free once it has gone {seconds}s without a renewal: a deploy with --lock-timeout {wait}s or more takes it over then",
        seconds = LEASE_DURATION.as_secs(),
        wait = TAKEOVER_WAIT.as_secs()
    )]
    Held {
        group: String,
        lease: String,
        holder: String,
        /// When, by the holder's clock, and how long ago by ours.
        renewed: String,
    },
    #[error(
        "lost the deploy lock (Lease {lease}): it could not be renewed for {}s, so this deploy stopped writing before another could take the lock over{}",
        RENEW_DEADLINE.as_secs(),
        cause.as_deref().map(|c| format!("; last error: {c}")).unwrap_or_default()
    )]
    Lost {
        lease: String,
        cause: Option<String>,
    },
    #[error("the deploy lock (Lease {lease}): {source}")]
    Api { lease: String, source: kube::Error },
    #[error("the deploy lock (Lease {lease}): no answer from the API server within {}s", RETRY_PERIOD.as_secs() * 5)]
    NoAnswer { lease: String },
    #[error(
        "the deploy lock (Lease {lease}) was not released ({cause}): it stays until it expires at {expires} by this machine's clock, {seconds}s after its last renewal; the next deploy of the group fails with \"holds the lock\" unless it waits with --lock-timeout {wait}s or more, and then takes it over",
        seconds = LEASE_DURATION.as_secs(),
        wait = TAKEOVER_WAIT.as_secs()
    )]
    LeftBehind {
        lease: String,
        cause: String,
        expires: Timestamp,
    },
}
