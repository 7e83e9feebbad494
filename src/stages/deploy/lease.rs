//! The group lock: one deploy (or delete) of an app group at a time, held as a Lease in the
//! inventory namespace and renewed while the work runs.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use super::inventory::{Inventories, InventoryError};

/// A lock whose holder died is free again this long after its last renewal.
const LEASE_SECONDS: i32 = 15;

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "another deploy of {group} holds the lock (Lease {namespace}/{name}, holder {holder}); retry later or wait with --lock-timeout"
    )]
    Held {
        group: String,
        namespace: String,
        name: String,
        holder: String,
    },
    #[error("the deploy lock (Lease {namespace}/{name}): {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// Runs `work` holding the group's lock (the inventory namespace is created if missing).
pub(super) async fn with_group_lock<T, E>(
    inventories: &Inventories,
    lock_timeout: Duration,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E>
where
    E: From<LeaseError> + From<InventoryError>,
{
    inventories.ensure_namespace().await?;
    let holder = format!("{}@{}", std::process::id(), hostname());
    let lock = GroupLock::take(inventories, &holder, lock_timeout).await?;
    let keep_alive = lock.keep_alive();
    let result = work.await;
    keep_alive.abort();
    lock.release().await;
    result
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn lease_expired(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    let renewed = spec.renew_time.as_ref().map_or(0, |t| t.0.as_second());
    renewed + duration < now.as_second()
}

/// A held group lock; renewed while held, released by [`GroupLock::release`].
pub(super) struct GroupLock {
    api: Api<Lease>,
    name: String,
    holder: String,
}

impl GroupLock {
    /// Takes the group's deploy lock, waiting up to `wait` for another holder to finish or its
    /// lease to expire. The holder identity says who has it.
    async fn take(
        inventories: &Inventories,
        holder: &str,
        wait: Duration,
    ) -> Result<Self, LeaseError> {
        let lock = GroupLock {
            api: Api::namespaced(inventories.client(), inventories.namespace()),
            name: format!("umbrella-lock-{}", inventories.group()),
            holder: holder.to_string(),
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Some(current) = lock.try_take().await? else {
                return Ok(lock);
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(LeaseError::Held {
                    group: inventories.group().to_string(),
                    namespace: inventories.namespace().to_string(),
                    name: lock.name.clone(),
                    holder: current,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Creates the lease, or takes over an expired one; `Some(holder)` when another holds it.
    async fn try_take(&self) -> Result<Option<String>, LeaseError> {
        let lease = self.fresh_lease();
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => return Ok(None),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(self.api_error(e)),
        }
        let current = self
            .api
            .get(&self.name)
            .await
            .map_err(|e| self.api_error(e))?;
        if lease_expired(&current, Timestamp::now()) {
            // A holder that died: take its lease over, but only the lease we saw (the
            // resourceVersion precondition), so two waiters cannot both win.
            let mut takeover = lease;
            takeover.metadata.resource_version = current.metadata.resource_version.clone();
            return match self
                .api
                .replace(&self.name, &PostParams::default(), &takeover)
                .await
            {
                Ok(_) => Ok(None),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Some(holder_of(&current))),
                Err(e) => Err(self.api_error(e)),
            };
        }
        Ok(Some(holder_of(&current)))
    }

    fn fresh_lease(&self) -> Lease {
        Lease {
            metadata: kube::api::ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.holder.clone()),
                lease_duration_seconds: Some(LEASE_SECONDS),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..Default::default()
            }),
        }
    }

    fn api_error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            namespace: self.api.namespace().unwrap_or_default().to_string(),
            name: self.name.clone(),
            source,
        }
    }

    /// Keeps the lease fresh until the returned task is aborted.
    fn keep_alive(&self) -> tokio::task::JoinHandle<()> {
        let api = self.api.clone();
        let name = self.name.clone();
        let holder = self.holder.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs((LEASE_SECONDS / 3) as u64)).await;
                let patch = serde_json::json!({"spec": {"holderIdentity": holder, "renewTime": MicroTime(Timestamp::now())}});
                let _ = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
        })
    }

    /// Deletes the lease if it is still ours: a lease another deploy took over stays.
    async fn release(self) {
        let Ok(current) = self.api.get(&self.name).await else {
            return;
        };
        if holder_of(&current) != self.holder {
            return;
        }
        let preconditions = kube::api::Preconditions {
            resource_version: current.metadata.resource_version.clone(),
            uid: current.metadata.uid.clone(),
        };
        let params = DeleteParams {
            preconditions: Some(preconditions),
            ..Default::default()
        };
        let _ = self.api.delete(&self.name, &params).await;
    }
}

fn holder_of(lease: &Lease) -> String {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_its_duration_after_the_last_renewal() {
        let renewed = Timestamp::from_second(1_000).unwrap();
        let lease = Lease {
            spec: Some(LeaseSpec {
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let at = |second| Timestamp::from_second(second).unwrap();
        assert!(!lease_expired(&lease, at(1_015)));
        assert!(lease_expired(&lease, at(1_016)));
        assert!(lease_expired(&Lease::default(), at(0)));
    }
}
