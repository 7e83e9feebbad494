//! What each app owns in the cluster: a ConfigMap per app in the inventory namespace
//! (`umbrella-system` by default) listing its objects, the state commit and the time. It is
//! written before anything is applied (old and new objects together) and narrowed after a
//! successful deploy, so an interrupted deploy never loses track of an object.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PostParams};
use kube::{Client, ResourceExt};

use crate::adapters::cluster;
use crate::adapters::git::UNCOMMITTED;
use crate::formats::object_ref::ObjectRef;

pub const APP_LABEL: &str = "umbrella.dev/app";
pub const GROUP_LABEL: &str = "umbrella.dev/group";
pub const INVENTORY_LABEL: &str = "umbrella.dev/inventory";

/// The inventories could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("inventories in namespace {namespace}: {source}")]
    Api {
        namespace: String,
        source: kube::Error,
    },
    #[error("inventory ConfigMap {namespace}/{name} cannot be read; fix or delete it")]
    Unreadable { namespace: String, name: String },
}

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

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The namespace of the inventories and the group's lock.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The app group: the environment's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    fn api_error(&self, source: kube::Error) -> InventoryError {
        InventoryError::Api {
            namespace: self.namespace.clone(),
            source,
        }
    }

    /// Creates the inventory namespace if it is missing.
    pub async fn ensure_namespace(&self) -> Result<(), InventoryError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(self.namespace.clone());
        match api.create(&PostParams::default(), &namespace).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(self.api_error(e)),
        }
    }

    /// Every inventory of the group. One that cannot be read is an error: dropping it would
    /// forget the objects it lists, and they would never be pruned.
    pub async fn list(&self) -> Result<Vec<Inventory>, InventoryError> {
        let params = ListParams::default().labels(&format!(
            "{INVENTORY_LABEL}=true,{GROUP_LABEL}={}",
            self.group
        ));
        let maps = self
            .api
            .list(&params)
            .await
            .map_err(|e| self.api_error(e))?
            .items;
        maps.iter()
            .map(|map| {
                parse(map).ok_or_else(|| InventoryError::Unreadable {
                    namespace: self.namespace.clone(),
                    name: map.name_any(),
                })
            })
            .collect()
    }

    /// Every inventory of the group, keyed by app.
    pub async fn by_app(&self) -> Result<BTreeMap<String, Inventory>, InventoryError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .map(|i| (i.app.clone(), i))
            .collect())
    }

    /// Writes (creates or replaces) an app's inventory.
    pub async fn write(&self, inventory: &Inventory) -> Result<(), InventoryError> {
        let objects = serde_json::to_string(&inventory.objects)
            .map_err(|e| self.api_error(kube::Error::SerdeError(e)))?;
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
                &cluster::apply_params(true),
                &Patch::Apply(&map),
            )
            .await
            .map(|_| ())
            .map_err(|e| self.api_error(e))
    }

    /// Removes an app's inventory (gone already is fine).
    pub async fn delete(&self, app: &str) -> Result<(), InventoryError> {
        match self
            .api
            .delete(&config_map_name(app), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(self.api_error(e)),
        }
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
                    UNCOMMITTED.to_string()
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
            UNCOMMITTED
        );
    }
}
