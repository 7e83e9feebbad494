//! What each app owns in the cluster: a ConfigMap per app in the inventory namespace
//! (`umbrella-system` by default) listing its objects, the state commit, the repository it
//! came from and the time. It is written before anything is applied (old and new objects
//! together) and narrowed after a successful deploy, so an interrupted deploy never loses
//! track of an object.
//!
//! An inventory is named `umbrella.<env>.<dir>` and labelled with the environment and the
//! app directory apart, so no two apps of any environments can share one (`a` + `x-web` and
//! `a-x` + `web` could, as `umbrella-app-a-x-web`, before: such inventories are still read,
//! and replaced by the next deploy).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PostParams};
use kube::{Client, ResourceExt};

use crate::adapters::cluster;
use crate::adapters::git::{RepositoryId, UNCOMMITTED};
use crate::adapters::retry::Retrier;
use crate::formats::layout::AppId;
use crate::formats::object_ref::ObjectRef;

/// The app (`<env>-<dir>`) an object or inventory belongs to.
pub const APP_LABEL: &str = "umbrella.dev/app";
/// The environment (the app group) an object or inventory belongs to.
pub const GROUP_LABEL: &str = "umbrella.dev/group";
/// The app's directory, on inventories.
pub const APP_DIR_LABEL: &str = "umbrella.dev/app-dir";
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
    /// `<env>-<dir>`.
    pub app: String,
    pub objects: BTreeSet<ObjectRef>,
    pub commit: String,
    pub updated: String,
    /// The repository the app was deployed from.
    pub repository: RepositoryId,
    /// The ConfigMap's name while it has the old, ambiguous form.
    pub legacy_name: Option<String>,
}

impl Inventory {
    /// Writing `next` over this inventory would record nothing new (only the time).
    pub fn records(&self, next: &Inventory) -> bool {
        self.legacy_name.is_none()
            && self.app == next.app
            && self.objects == next.objects
            && self.commit == next.commit
            && self.repository == next.repository
    }
}

/// The state commit each app's inventory records, by app.
pub fn deployed_commits(inventories: &BTreeMap<String, Inventory>) -> BTreeMap<String, String> {
    inventories
        .iter()
        .map(|(app, inventory)| (app.clone(), inventory.commit.clone()))
        .collect()
}

/// Why the group's inventories are not this repository's to change: another repository
/// deployed the same environment to this cluster. `None` when nothing says so.
pub fn other_repository(
    env: &str,
    previous: &BTreeMap<String, Inventory>,
    ours: &RepositoryId,
) -> Option<String> {
    let theirs: Vec<&Inventory> = previous
        .values()
        .filter(|i| i.repository.differs_from(ours))
        .collect();
    let first = theirs.first()?;
    let apps: Vec<&str> = theirs.iter().map(|i| i.app.as_str()).collect();
    Some(format!(
        "environment {env} in this cluster was deployed from {} (apps {}), not from this repository ({ours}); give this repository's environment another name, or keep its inventories apart with --inventory-namespace",
        first.repository,
        apps.join(", ")
    ))
}

/// `umbrella.<env>.<dir>`: environments and app directories are DNS labels, without dots.
fn config_map_name(app: &AppId) -> String {
    format!("umbrella.{}.{}", app.env(), app.dir())
}

/// Who else owns a live object with these labels, when it is not the app `app` of `env`:
/// another app, or the same app name in another environment.
pub fn foreign_owner(labels: &BTreeMap<String, String>, app: &str, env: &str) -> Option<String> {
    let owner = labels.get(APP_LABEL)?;
    match labels.get(GROUP_LABEL) {
        Some(group) if group != env => Some(format!("{owner} (environment {group})")),
        _ if owner != app => Some(owner.clone()),
        _ => None,
    }
}

/// Access to the inventories of one app group.
pub struct Inventories {
    api: Api<ConfigMap>,
    client: Client,
    namespace: String,
    group: String,
    retrier: Retrier,
}

impl Inventories {
    pub fn new(client: Client, namespace: &str, group: &str, retrier: &Retrier) -> Self {
        Inventories {
            api: Api::namespaced(client.clone(), namespace),
            client,
            namespace: namespace.to_string(),
            group: group.to_string(),
            retrier: retrier.clone(),
        }
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The retry policy of the group's calls.
    pub fn retrier(&self) -> &Retrier {
        &self.retrier
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
        let what = format!("creating namespace {}", self.namespace);
        let params = PostParams::default();
        let created = cluster::call(&self.retrier, &what, || api.create(&params, &namespace));
        match created.await {
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
        let what = format!("listing the inventories of {}", self.group);
        let maps = cluster::call(&self.retrier, &what, || self.api.list(&params))
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

    fn app_id(&self, app: &str) -> Result<AppId, InventoryError> {
        AppId::from_name(&self.group, app).ok_or_else(|| InventoryError::Unreadable {
            namespace: self.namespace.clone(),
            name: app.to_string(),
        })
    }

    /// Writes (creates or replaces) an app's inventory under its unambiguous name; one of the
    /// old form is removed once the new one is written.
    pub async fn write(&self, inventory: &Inventory) -> Result<(), InventoryError> {
        let app = self.app_id(&inventory.app)?;
        let name = config_map_name(&app);
        let objects = serde_json::to_string(&inventory.objects)
            .map_err(|e| self.api_error(kube::Error::SerdeError(e)))?;
        let repository = &inventory.repository;
        let map = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {INVENTORY_LABEL: "true", GROUP_LABEL: app.env(), APP_DIR_LABEL: app.dir(), APP_LABEL: inventory.app},
            },
            "data": {"app": inventory.app, "env": app.env(), "dir": app.dir(), "objects": objects,
                "commit": inventory.commit, "updated": inventory.updated,
                "origin": repository.origin.clone().unwrap_or_default(),
                "root": repository.root.clone().unwrap_or_default()},
        });
        let params = cluster::apply_params(true);
        let what = format!("writing inventory {name}");
        let patch = Patch::Apply(&map);
        cluster::call(&self.retrier, &what, || {
            self.api.patch(&name, &params, &patch)
        })
        .await
        .map_err(|e| self.api_error(e))?;
        match &inventory.legacy_name {
            Some(legacy) if *legacy != name => self.delete_named(legacy).await,
            _ => Ok(()),
        }
    }

    /// Removes an app's inventory (gone already is fine).
    pub async fn delete(&self, inventory: &Inventory) -> Result<(), InventoryError> {
        let name = match &inventory.legacy_name {
            Some(legacy) => legacy.clone(),
            None => config_map_name(&self.app_id(&inventory.app)?),
        };
        self.delete_named(&name).await
    }

    async fn delete_named(&self, name: &str) -> Result<(), InventoryError> {
        let what = format!("deleting inventory {name}");
        let params = DeleteParams::default();
        let deleted = cluster::call(&self.retrier, &what, || self.api.delete(name, &params));
        match deleted.await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(self.api_error(e)),
        }
    }
}

fn parse(map: &ConfigMap) -> Option<Inventory> {
    let data = map.data.as_ref()?;
    let app = data
        .get("app")
        .cloned()
        .or_else(|| map.labels().get(APP_LABEL).cloned())?;
    let field = |key: &str| data.get(key).filter(|v| !v.is_empty()).cloned();
    Some(Inventory {
        legacy_name: (!data.contains_key("dir")).then(|| map.name_any()),
        repository: RepositoryId {
            origin: field("origin"),
            root: field("root"),
        },
        app,
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

    #[test]
    fn owners_are_told_apart_by_app_and_environment() {
        let labels = |app: &str, group: Option<&str>| {
            let mut labels = BTreeMap::from([(APP_LABEL.to_string(), app.to_string())]);
            labels.extend(group.map(|g| (GROUP_LABEL.to_string(), g.to_string())));
            labels
        };
        assert_eq!(
            foreign_owner(&labels("a-x-web", Some("a")), "a-x-web", "a"),
            None
        );
        assert_eq!(
            foreign_owner(&labels("a-x-web", Some("a")), "a-x-web", "a-x"),
            Some("a-x-web (environment a)".into())
        );
        assert_eq!(
            foreign_owner(&labels("a-x-web", None), "a-x-web", "a-x"),
            None
        );
        assert_eq!(
            foreign_owner(&labels("a-db", None), "a-web", "a"),
            Some("a-db".into())
        );
        assert_eq!(foreign_owner(&BTreeMap::new(), "a-web", "a"), None);
        assert_eq!(
            config_map_name(&AppId::new("a", "x-web")),
            "umbrella.a.x-web"
        );
        assert_ne!(
            config_map_name(&AppId::new("a", "x-web")),
            config_map_name(&AppId::new("a-x", "web"))
        );
    }

    fn inventory_with_commit(commit: &str) -> Inventory {
        let map: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "umbrella-app-prod-web"},
            "data": {"app": "prod-web", "objects": "[]", "commit": commit, "updated": "t"},
        }))
        .expect("a ConfigMap");
        parse(&map).expect("an inventory")
    }

    #[test]
    fn an_inventory_is_rewritten_only_when_it_records_something_new() {
        let before = inventory_with_commit("c1");
        let mut next = before.clone();
        next.updated = "later".into();
        assert!(
            !before.records(&next),
            "only the time differs: a legacy name"
        );
        let before = Inventory {
            legacy_name: None,
            ..before
        };
        assert!(before.records(&next));
        next.commit = "c2".into();
        assert!(!before.records(&next));
        next.commit = "c1".into();
        next.objects.insert(ObjectRef::of(&serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
        })));
        assert!(!before.records(&next));
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
