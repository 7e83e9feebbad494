//! The group's live objects, read with one paged LIST per kind (label selector
//! `umbrella.dev/group=<env>`), each told at once whether an apply of the state's version
//! would change it. A few requests instead of one read and one dry run per object; objects
//! the LIST does not return (new ones, or ones whose labels were removed) are left to the
//! per-object read and dry run.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::Value;

use super::fields;
use super::inventory::GROUP_LABEL;
use super::plan::Target;
use super::strategy::UpdateStrategy;
use crate::adapters::cluster::{self, ClusterError};
use crate::adapters::retry::Retrier;

/// Objects per page: pages keep memory flat however large the group.
const PAGE: u32 = 500;
/// Kinds listed at the same time.
const KINDS_AT_ONCE: usize = 4;
/// How often a listing starts again when its continue token expired (410) between pages.
const RESTARTS: usize = 3;

/// A target's live object as the LIST found it.
pub(super) struct Seen {
    /// The live object with its type, without managedFields.
    pub live: Value,
    /// Why an apply of the state's version could change it; `None` when it would not.
    pub difference: Option<String>,
}

impl Seen {
    /// The live object's resourceVersion.
    pub fn version(&self) -> Option<String> {
        let version = self.live["metadata"]["resourceVersion"].as_str();
        version.map(str::to_string)
    }

    /// An apply would leave the object as it is, and it is not replaced on every deploy.
    pub fn kept(&self, target: &Target) -> bool {
        let strategy = UpdateStrategy::of(&target.desired.value);
        self.difference.is_none()
            && matches!(
                strategy,
                Ok(UpdateStrategy::Update | UpdateStrategy::FallbackOnReplace)
            )
    }
}

/// What the LIST found of each target, by the targets' index (`None`: not listed).
pub(super) type Listed = Vec<Option<Seen>>;

/// What listing the group's objects needs.
pub(super) struct Lister<'a> {
    pub client: &'a Client,
    pub retrier: &'a Retrier,
    pub env: &'a str,
    /// The state commit of each app, as the apply records it.
    pub commits: &'a BTreeMap<String, String>,
}

/// The targets of one API resource, by (namespace, name).
struct Kind {
    resource: ApiResource,
    targets: BTreeMap<(Option<String>, String), usize>,
}

impl Lister<'_> {
    /// Lists every kind of the targets the cluster knows.
    pub async fn list(&self, targets: &[Target]) -> Result<Listed, ClusterError> {
        let all: Vec<usize> = (0..targets.len()).collect();
        let mut found = self.list_some(targets, &all).await?;
        Ok(all.iter().map(|index| found.remove(index)).collect())
    }

    /// What the LISTs of their kinds find of the targets at `indexes`. A kind the client may
    /// not list cluster-wide (403), or that cannot be listed (404, 405), is left to the
    /// per-object path.
    pub async fn list_some(
        &self,
        targets: &[Target],
        indexes: &[usize],
    ) -> Result<BTreeMap<usize, Seen>, ClusterError> {
        let found = futures_util::stream::iter(kinds(targets, indexes))
            .map(|kind| self.list_kind(targets, kind))
            .buffer_unordered(KINDS_AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        let mut listed = BTreeMap::new();
        for seen in found {
            listed.extend(seen?);
        }
        Ok(listed)
    }

    async fn list_kind(
        &self,
        targets: &[Target],
        kind: Kind,
    ) -> Result<Vec<(usize, Seen)>, ClusterError> {
        let mut restarts = 0;
        loop {
            match self.pages(targets, &kind).await {
                Err(kube::Error::Api(e)) if [403, 404, 405].contains(&e.code) => {
                    return Ok(Vec::new());
                }
                Err(kube::Error::Api(e)) if e.code == 410 && restarts < RESTARTS => restarts += 1,
                Err(e) => {
                    let what = format!("listing {}", kind.resource.plural);
                    return Err(ClusterError::request(what)(e));
                }
                Ok(seen) => return Ok(seen),
            }
        }
    }

    /// Every page of the kind's LIST, each item compared as it comes and then dropped.
    async fn pages(
        &self,
        targets: &[Target],
        kind: &Kind,
    ) -> Result<Vec<(usize, Seen)>, kube::Error> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &kind.resource);
        let selector = format!("{GROUP_LABEL}={}", self.env);
        let what = format!("listing {}", kind.resource.plural);
        let mut params = ListParams::default().labels(&selector).limit(PAGE);
        let mut seen = Vec::new();
        loop {
            let page = cluster::call(self.retrier, &what, || api.list(&params)).await?;
            for item in &page.items {
                let key = (
                    item.metadata.namespace.clone(),
                    item.metadata.name.clone().unwrap_or_default(),
                );
                if let Some(&index) = kind.targets.get(&key) {
                    seen.push((index, self.compared(&targets[index], item)));
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(seen),
            }
        }
    }

    fn compared(&self, target: &Target, item: &DynamicObject) -> Seen {
        let mut live = cluster::with_type(item, &target.reference);
        let applied = target.applied(self.env, self.commits.get(&target.desired.app));
        let difference = fields::difference(&live, &applied, cluster::FIELD_MANAGER);
        if let Some(metadata) = live["metadata"].as_object_mut() {
            metadata.remove("managedFields");
        }
        Seen { live, difference }
    }
}

/// The targets at `indexes` grouped by the API resource that holds them; unknown kinds left
/// out.
fn kinds(targets: &[Target], indexes: &[usize]) -> Vec<Kind> {
    let mut kinds: BTreeMap<(String, String, String), Kind> = BTreeMap::new();
    for &index in indexes {
        let target = &targets[index];
        let Some((resource, namespaced)) = &target.resource else {
            continue;
        };
        let key = (
            resource.group.clone(),
            resource.version.clone(),
            resource.plural.clone(),
        );
        let kind = kinds.entry(key).or_insert_with(|| Kind {
            resource: resource.clone(),
            targets: BTreeMap::new(),
        });
        let namespace = target.reference.namespace.clone().filter(|_| *namespaced);
        kind.targets
            .insert((namespace, target.reference.name.clone()), index);
    }
    kinds.into_values().collect()
}
