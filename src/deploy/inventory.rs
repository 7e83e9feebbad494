//! What each app owns in the cluster: a ConfigMap per app in the inventory namespace
//! (`umbrella-system` by default) listing its objects, the state commit and the time. It is
//! written before anything is applied (old and new objects together) and narrowed after a
//! successful deploy, so an interrupted deploy never loses track of an object.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use super::desired::ObjectRef;

/// The field manager of everything umbrella writes.
pub const MANAGER: &str = "umbrella";
pub const APP_LABEL: &str = "umbrella.dev/app";
pub const GROUP_LABEL: &str = "umbrella.dev/group";
pub const INVENTORY_LABEL: &str = "umbrella.dev/inventory";

/// One app's inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub app: String,
    pub objects: BTreeSet<ObjectRef>,
    pub commit: String,
    pub updated: String,
}

fn config_map_name(app: &str) -> String {
    format!("umbrella-app-{app}")
}

/// Access to the inventories of one app group.
pub struct Inventories {
    api: Api<ConfigMap>,
    client: Client,
    namespace: String,
    group: String,
}

impl Inventories {
    pub fn new(client: Client, namespace: &str, group: &str) -> Self {
        Inventories {
            api: Api::namespaced(client.clone(), namespace),
            client,
            namespace: namespace.to_string(),
            group: group.to_string(),
        }
    }

    /// Creates the inventory namespace if it is missing.
    pub async fn ensure_namespace(&self) -> Result<(), kube::Error> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": self.namespace}}))
                .map_err(kube::Error::SerdeError)?;
        match api.create(&PostParams::default(), &namespace).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every inventory of the group. One that cannot be read is an error: dropping it would
    /// forget the objects it lists, and they would never be pruned.
    pub async fn list(&self) -> Result<Vec<Inventory>, String> {
        let params = ListParams::default().labels(&format!(
            "{INVENTORY_LABEL}=true,{GROUP_LABEL}={}",
            self.group
        ));
        let maps = self
            .api
            .list(&params)
            .await
            .map_err(|e| e.to_string())?
            .items;
        maps.iter()
            .map(|map| {
                parse(map).ok_or_else(|| {
                    format!(
                        "inventory ConfigMap {}/{} cannot be read; fix or delete it",
                        self.namespace,
                        map.name_any()
                    )
                })
            })
            .collect()
    }

    /// Every inventory of the group, keyed by app.
    pub async fn by_app(&self) -> Result<BTreeMap<String, Inventory>, String> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .map(|i| (i.app.clone(), i))
            .collect())
    }

    /// Writes (creates or replaces) an app's inventory.
    pub async fn write(&self, inventory: &Inventory) -> Result<(), kube::Error> {
        let objects = serde_json::to_string(&inventory.objects).map_err(kube::Error::SerdeError)?;
        let map = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": config_map_name(&inventory.app),
                "namespace": self.namespace,
                "labels": {INVENTORY_LABEL: "true", GROUP_LABEL: self.group, APP_LABEL: inventory.app},
            },
            "data": {"app": inventory.app, "objects": objects, "commit": inventory.commit, "updated": inventory.updated},
        });
        self.api
            .patch(
                &config_map_name(&inventory.app),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&map),
            )
            .await
            .map(|_| ())
    }

    pub async fn delete(&self, app: &str) -> Result<(), kube::Error> {
        match self
            .api
            .delete(&config_map_name(app), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Takes the group's deploy lock (a Lease), waiting up to `wait` for another holder to
    /// finish or its lease to expire. The holder identity says who has it.
    pub async fn lock(&self, holder: &str, wait: std::time::Duration) -> Result<GroupLock, String> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = format!("umbrella-lock-{}", self.group);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(holder.to_string()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(MicroTime(Timestamp::now())),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    return Ok(GroupLock {
                        api,
                        name,
                        holder: holder.to_string(),
                    });
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let current = api.get(&name).await.map_err(|e| e.to_string())?;
                    if lease_expired(&current) {
                        // A holder that died: take its lease over, but only the lease we saw
                        // (the resourceVersion precondition), so two waiters cannot both win.
                        let mut takeover = lease.clone();
                        takeover.metadata.resource_version =
                            current.metadata.resource_version.clone();
                        match api.replace(&name, &PostParams::default(), &takeover).await {
                            Ok(_) => {
                                return Ok(GroupLock {
                                    api,
                                    name,
                                    holder: holder.to_string(),
                                });
                            }
                            Err(kube::Error::Api(e)) if e.code == 409 => continue,
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    let other = current
                        .spec
                        .and_then(|s| s.holder_identity)
                        .unwrap_or_default();
                    if tokio::time::Instant::now() >= deadline {
                        return Err(format!(
                            "another deploy of {} holds the lock (Lease {}/{name}, holder {other}); retry later or wait with --lock-timeout",
                            self.group, self.namespace
                        ));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// A lock whose holder died is free again this long after its last renewal.
const LEASE_SECONDS: i32 = 15;

fn lease_expired(lease: &Lease) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    let renewed = spec.renew_time.as_ref().map_or(0, |t| t.0.as_second());
    renewed + duration < Timestamp::now().as_second()
}

/// A held group lock; renewed while held, released by [`GroupLock::release`].
pub struct GroupLock {
    api: Api<Lease>,
    name: String,
    holder: String,
}

impl GroupLock {
    /// Keeps the lease fresh until the returned task is aborted.
    pub fn keep_alive(&self) -> tokio::task::JoinHandle<()> {
        let api = self.api.clone();
        let name = self.name.clone();
        let holder = self.holder.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs((LEASE_SECONDS / 3) as u64))
                    .await;
                let patch = serde_json::json!({"spec": {"holderIdentity": holder, "renewTime": MicroTime(Timestamp::now())}});
                let _ = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
        })
    }

    /// Deletes the lease if it is still ours: a lease another deploy took over stays.
    pub async fn release(self) {
        let Ok(current) = self.api.get(&self.name).await else {
            return;
        };
        if current
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            != Some(self.holder.as_str())
        {
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

fn parse(map: &ConfigMap) -> Option<Inventory> {
    let data = map.data.as_ref()?;
    Some(Inventory {
        app: data
            .get("app")
            .cloned()
            .or_else(|| map.labels().get(APP_LABEL).cloned())?,
        objects: serde_json::from_str(data.get("objects")?).ok()?,
        commit: data
            .get("commit")
            .map(|commit| {
                // Written before commits were found by content: `<sha>-dirty` named no commit.
                if commit.ends_with("-dirty") {
                    crate::state::UNCOMMITTED.to_string()
                } else {
                    commit.clone()
                }
            })
            .unwrap_or_default(),
        updated: data.get("updated").cloned().unwrap_or_default(),
    })
}

/// The time now, as written in inventories.
pub fn timestamp() -> String {
    Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory_with_commit(commit: &str) -> Inventory {
        let map: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "umbrella-app-prod-web"},
            "data": {"app": "prod-web", "objects": "[]", "commit": commit, "updated": "t"},
        }))
        .expect("a ConfigMap");
        parse(&map).expect("an inventory")
    }

    #[test]
    fn an_older_dirty_commit_reads_as_uncommitted() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(inventory_with_commit(sha).commit, sha);
        assert_eq!(
            inventory_with_commit(&format!("{sha}-dirty")).commit,
            crate::state::UNCOMMITTED
        );
    }
}
