//! Deleting what the inventories own but the state no longer has (pruning), and whole groups
//! (`delete app-group`): the upsert order backwards, each object waited for until it is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams};
use kube::discovery::Discovery;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;

use super::inventory::Inventory;
use super::outcome::{DeployError, DeployReport, ObjectReport, Op, failed};
use super::request::Group;
use super::{lease, order};
use crate::adapters::cluster;
use crate::formats::object_ref::ObjectRef;
use crate::progress::Progress;

/// An object to delete, with the app that owns it.
pub(super) type Owned = (String, ObjectRef);

/// What the previous inventories own (with the app owning it) that the state no longer has.
pub fn stale(
    previous: &BTreeMap<String, Inventory>,
    wanted: &BTreeMap<String, BTreeSet<ObjectRef>>,
) -> Vec<Owned> {
    let kept: BTreeSet<_> = wanted.values().flatten().map(ObjectRef::key).collect();
    previous
        .iter()
        .flat_map(|(app, inventory)| {
            inventory
                .objects
                .iter()
                .map(move |o| (app.clone(), o.clone()))
        })
        .filter(|(_, o)| !kept.contains(&o.key()))
        .collect()
}

/// The objects in deletion order: waves of the upsert order, last wave first.
fn deletion_waves(
    stale: &[Owned],
    custom: &BTreeSet<(String, String)>,
) -> Result<Vec<Vec<Owned>>, order::OrderError> {
    let values: Vec<Value> = stale
        .iter()
        .map(|(_, o)| serde_json::json!({"apiVersion": o.api_version, "kind": o.kind}))
        .collect();
    let changes: Vec<order::Change> = values
        .iter()
        .zip(stale)
        .map(|(v, (_, o))| order::Change::of(v, o.namespace.is_some()))
        .collect();
    let names: Vec<String> = stale.iter().map(|(_, o)| o.to_string()).collect();
    let waves = order::upsert_waves(&changes, custom, &names)?;
    Ok(waves
        .into_iter()
        .rev()
        .map(|w| w.into_iter().map(|i| stale[i].clone()).collect())
        .collect())
}

/// Deletes what the previous inventories own but the state no longer has (and apps whose
/// directory is gone), in reverse order, waiting until each is gone.
pub(super) async fn prune(
    client: &Client,
    progress: &dyn Progress,
    previous: &BTreeMap<String, Inventory>,
    wanted: &BTreeMap<String, BTreeSet<ObjectRef>>,
    deadline: tokio::time::Instant,
    report: &mut DeployReport,
) -> Result<(), DeployError> {
    let stale = stale(previous, wanted);
    if stale.is_empty() {
        return Ok(());
    }
    let discovery = cluster::discover(client).await?;
    let custom = stale_crd_kinds(client, &stale).await;
    let waves = deletion_waves(&stale, &custom)
        .map_err(|e| failed(report, format!("ordering the objects to prune: {e}")))?;
    let deleter = Deleter {
        client,
        discovery: &discovery,
        progress,
        deadline,
    };
    for wave in waves {
        deleter.delete_wave(&wave, report).await?;
    }
    Ok(())
}

/// The kinds the stale CRDs define, read from the live CRDs: their custom resources must be
/// deleted before them (the upsert order, backwards).
async fn stale_crd_kinds(client: &Client, stale: &[Owned]) -> BTreeSet<(String, String)> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut kinds = BTreeSet::new();
    for (_, reference) in stale
        .iter()
        .filter(|(_, o)| o.kind == "CustomResourceDefinition")
    {
        if let Ok(Some(crd)) = api.get_opt(&reference.name).await {
            kinds.insert((crd.spec.group.clone(), crd.spec.names.kind.clone()));
        }
    }
    kinds
}

/// Deletes objects and waits until they are gone.
struct Deleter<'a> {
    client: &'a Client,
    discovery: &'a Discovery,
    progress: &'a dyn Progress,
    deadline: tokio::time::Instant,
}

impl Deleter<'_> {
    /// Deletes a wave at once; the first failure ends the prune.
    async fn delete_wave(
        &self,
        wave: &[Owned],
        report: &mut DeployReport,
    ) -> Result<(), DeployError> {
        let results =
            futures_util::future::join_all(wave.iter().map(|owned| self.delete_reported(owned)))
                .await;
        for ((app, reference), (result, duration_ms)) in wave.iter().zip(results) {
            let error = result.err();
            report.objects.push(ObjectReport::new(
                app,
                reference,
                Op::Delete,
                error.clone(),
                duration_ms,
            ));
            if let Some(reason) = error {
                return Err(failed(report, format!("deleting {reference}: {reason}")));
            }
        }
        Ok(())
    }

    async fn delete_reported(&self, (app, reference): &Owned) -> (Result<(), String>, u128) {
        let label = format!("{app} {reference}");
        self.progress.update(&label, "deleting");
        let started = Instant::now();
        let result = self.delete_one(reference).await;
        let news = if result.is_ok() {
            "deleted"
        } else {
            "FAILED to delete"
        };
        self.progress.finish(&label, news);
        (result, started.elapsed().as_millis())
    }

    async fn delete_one(&self, reference: &ObjectRef) -> Result<(), String> {
        let Some((resource, namespaced)) = cluster::resolve(self.discovery, reference) else {
            // Its kind is gone (a CRD deleted first): so is the object.
            return Ok(());
        };
        let api = cluster::api_for(self.client, &resource, namespaced, reference);
        match api
            .delete(&reference.name, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        let config =
            watcher::Config::default().fields(&format!("metadata.name={}", reference.name));
        let mut events = watcher(api, config).default_backoff().boxed();
        let mut listed = false;
        loop {
            tokio::select! {
                event = events.try_next() => match event {
                    Ok(Some(watcher::Event::Delete(_))) => return Ok(()),
                    Ok(Some(watcher::Event::InitApply(_))) => listed = true,
                    // The initial list is over: without the object in it, it is gone already.
                    Ok(Some(watcher::Event::InitDone)) if !listed => return Ok(()),
                    Ok(Some(watcher::Event::Init)) => listed = false,
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(e.to_string()),
                },
                _ = tokio::time::sleep_until(self.deadline) => return Err("still there at the wait timeout".into()),
            }
        }
    }
}

/// What `delete app-group` needs.
#[derive(Debug, Clone)]
pub struct DeleteRequest {
    pub group: Group,
    pub wait_timeout: Duration,
    pub lock_timeout: Duration,
}

/// Deletes every object the group's inventories own, in reverse order, waits until they are
/// gone, then removes the inventories.
pub async fn delete_group(
    request: &DeleteRequest,
    progress: &dyn Progress,
) -> Result<DeployReport, DeployError> {
    let started = Instant::now();
    let client = request.group.connect().await?;
    let inventories = request.group.inventories(&client);
    let work = async {
        let deadline = tokio::time::Instant::now() + request.wait_timeout;
        let previous = inventories.by_app().await?;
        let mut report = DeployReport {
            env: request.group.env.clone(),
            ..Default::default()
        };
        prune(
            &client,
            progress,
            &previous,
            &BTreeMap::new(),
            deadline,
            &mut report,
        )
        .await?;
        for app in previous.keys() {
            inventories.delete(app).await?;
            report.deleted_apps.push(app.clone());
        }
        report.duration_ms = started.elapsed().as_millis();
        Ok(report)
    };
    lease::with_group_lock(&inventories, request.lock_timeout, work).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(kind: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: if kind == "CustomResourceDefinition" {
                "apiextensions.k8s.io/v1".into()
            } else if kind == "Widget" {
                "example.com/v1".into()
            } else {
                "v1".into()
            },
            kind: kind.into(),
            namespace: (kind != "CustomResourceDefinition").then(|| "ns".to_string()),
            name: name.into(),
        }
    }

    #[test]
    fn stale_objects_are_what_no_app_wants_any_more() {
        let inventory = |objects: Vec<ObjectRef>| Inventory {
            app: "e-a".into(),
            objects: objects.into_iter().collect(),
            ..Default::default()
        };
        let previous = BTreeMap::from([(
            "e-a".to_string(),
            inventory(vec![
                reference("ConfigMap", "kept"),
                reference("ConfigMap", "gone"),
            ]),
        )]);
        // An object that moved to another app stays.
        let mut moved = reference("ConfigMap", "kept");
        moved.api_version = "v1".into();
        let wanted = BTreeMap::from([("e-b".to_string(), BTreeSet::from([moved]))]);
        let stale = stale(&previous, &wanted);
        assert_eq!(
            stale,
            vec![("e-a".to_string(), reference("ConfigMap", "gone"))]
        );
    }

    #[test]
    fn custom_resources_are_deleted_before_their_crd() {
        let stale = vec![
            (
                "e-a".to_string(),
                reference("CustomResourceDefinition", "widgets.example.com"),
            ),
            ("e-a".to_string(), reference("Widget", "w")),
        ];
        let custom = BTreeSet::from([("example.com".to_string(), "Widget".to_string())]);
        let waves = deletion_waves(&stale, &custom).unwrap();
        let flat: Vec<&str> = waves
            .iter()
            .flatten()
            .map(|(_, o)| o.kind.as_str())
            .collect();
        assert_eq!(flat, ["Widget", "CustomResourceDefinition"]);
    }
}
