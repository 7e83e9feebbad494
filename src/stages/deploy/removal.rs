//! What a deploy removes, decided before its first write: the objects the inventories own
//! that the state no longer has, which of them are only let go (kapp's
//! `delete-strategy: orphan`, helm's `resource-policy: keep`), and the removals refused because the state still needs them
//! (a Namespace holding its objects, a CRD defining its custom resources, or the whole group).

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use kube::Client;
use kube::discovery::Discovery;
use serde_json::Value;

use super::inventory::Inventory;
use super::order;
use crate::adapters::cluster::{self, ClusterError};
use crate::adapters::retry::Retrier;
use crate::formats::object_ref::ObjectRef;

/// Objects read at once before pruning (their order is kept).
const READ_CONCURRENCY: usize = 32;

/// An object with the app that owns it.
pub(super) type Owned = (String, ObjectRef);

/// kapp's annotation that lets an object go unmanaged instead of deleting it.
const DELETE_STRATEGY: &str = "kapp.k14s.io/delete-strategy";
/// helm's annotation for the same (`keep`): charts put it on what must outlive them (a PVC
/// holding data, a CRD).
const RESOURCE_POLICY: &str = "helm.sh/resource-policy";

/// Whether the live object asks to be let go rather than deleted, in kapp's or helm's words.
fn let_go(live: &Value) -> bool {
    let annotations = &live["metadata"]["annotations"];
    annotations[DELETE_STRATEGY] == "orphan" || annotations[RESOURCE_POLICY] == "keep"
}

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

/// A stale object as the cluster holds it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stale {
    pub owned: Owned,
    /// Its live annotation asks to let it go rather than delete it.
    pub orphan: bool,
    /// For a CRD: the (group, kind) it defines.
    pub defines: Option<(String, String)>,
}

/// The removals of one deploy: deletions in order (waves, last first) and objects let go.
#[derive(Debug, Default)]
pub(super) struct Removal {
    pub deletion_waves: Vec<Vec<Owned>>,
    pub orphans: Vec<Owned>,
}

/// Why a deploy must not run: its state is empty, or it would delete every app of the group.
pub(super) fn emptying(
    env: &str,
    wanted: &BTreeMap<String, BTreeSet<ObjectRef>>,
    previous: &BTreeMap<String, Inventory>,
) -> Option<String> {
    let doomed: Vec<&str> = previous.keys().map(String::as_str).collect();
    if wanted.values().all(BTreeSet::is_empty) {
        return Some(format!(
            "the state of {env} has no objects: a deploy would delete everything the group owns ({}); pass --allow-empty if that is what you want",
            if doomed.is_empty() {
                "nothing yet".to_string()
            } else {
                doomed.join(", ")
            }
        ));
    }
    let kept = previous.keys().any(|app| wanted.contains_key(app));
    (!previous.is_empty() && !kept).then(|| {
        format!(
            "a deploy would delete every app of {env} now in the cluster ({}); pass --allow-empty if that is what you want",
            doomed.join(", ")
        )
    })
}

/// The deletions the state forbids: a Namespace that holds objects the state still wants, a
/// CRD whose custom resources it still wants. Objects let go (orphaned) are not deleted.
pub(super) fn forbidden(
    stale: &[Stale],
    wanted: &BTreeMap<String, BTreeSet<ObjectRef>>,
) -> Vec<String> {
    let wanted: Vec<(&String, &ObjectRef)> = wanted
        .iter()
        .flat_map(|(app, objects)| objects.iter().map(move |o| (app, o)))
        .collect();
    let mut problems = Vec::new();
    for object in stale.iter().filter(|s| !s.orphan) {
        let (app, reference) = &object.owned;
        let needs: Vec<String> = wanted
            .iter()
            .filter(|(_, w)| holds(object, reference, w))
            .map(|(app, w)| format!("{w} (app {app})"))
            .collect();
        if needs.is_empty() {
            continue;
        }
        let shown: Vec<&str> = needs.iter().take(5).map(String::as_str).collect();
        let more = needs.len().saturating_sub(shown.len());
        problems.push(format!(
            "{reference} (app {app}) would be deleted, but the state still wants what it holds: {}{}; keep it in an app that stays, or annotate it `{DELETE_STRATEGY}: orphan` (and deploy that) to let it go without deleting it",
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ));
    }
    problems
}

/// Whether deleting `object` deletes `wanted` with it.
fn holds(object: &Stale, reference: &ObjectRef, wanted: &ObjectRef) -> bool {
    match reference.kind.as_str() {
        "Namespace" if reference.group().is_empty() => {
            wanted.namespace.as_deref() == Some(reference.name.as_str())
        }
        "CustomResourceDefinition" => object
            .defines
            .as_ref()
            .is_some_and(|(group, kind)| wanted.group() == group && &wanted.kind == kind),
        _ => false,
    }
}

/// Splits the stale objects into deletion waves (the upsert order backwards, custom resources
/// before their CRD) and objects let go.
pub(super) fn removal(stale: &[Stale]) -> Result<Removal, order::OrderError> {
    let custom: BTreeSet<(String, String)> =
        stale.iter().filter_map(|s| s.defines.clone()).collect();
    let (orphans, deleted): (Vec<&Stale>, Vec<&Stale>) = stale.iter().partition(|s| s.orphan);
    let deleted: Vec<Owned> = deleted.into_iter().map(|s| s.owned.clone()).collect();
    Ok(Removal {
        deletion_waves: deletion_waves(&deleted, &custom)?,
        orphans: orphans.into_iter().map(|s| s.owned.clone()).collect(),
    })
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

/// The stale objects the cluster still has, each as it holds it (gone ones are left out).
pub(super) async fn live_stale(
    client: &Client,
    retrier: &Retrier,
    discovery: &Discovery,
    stale: Vec<Owned>,
) -> Result<Vec<Stale>, ClusterError> {
    let reads = futures_util::stream::iter(stale)
        .map(|owned| async move {
            let Some((resource, namespaced)) = cluster::resolve(discovery, &owned.1) else {
                return Ok(None);
            };
            let api = cluster::api_for(client, &resource, namespaced, &owned.1);
            let what = format!("reading {} before pruning it", owned.1);
            let read = cluster::call(retrier, &what, || api.get_opt(&owned.1.name)).await;
            let object = read.map_err(ClusterError::request(what))?;
            Ok(object.map(|o| {
                let live = cluster::with_type(&o, &owned.1);
                stale_of(owned, &live)
            }))
        })
        .buffered(READ_CONCURRENCY)
        .collect::<Vec<Result<Option<Stale>, ClusterError>>>()
        .await;
    reads.into_iter().filter_map(Result::transpose).collect()
}

fn stale_of(owned: Owned, live: &Value) -> Stale {
    let spec = &live["spec"];
    let defines = (owned.1.kind == "CustomResourceDefinition")
        .then(|| {
            Some((
                spec["group"].as_str()?.to_string(),
                spec["names"]["kind"].as_str()?.to_string(),
            ))
        })
        .flatten();
    Stale {
        orphan: let_go(live),
        defines,
        owned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kapps_orphan_and_helms_keep_let_an_object_go() {
        let with =
            |key: &str, value: &str| serde_json::json!({"metadata": {"annotations": {key: value}}});
        assert!(let_go(&with(DELETE_STRATEGY, "orphan")));
        assert!(let_go(&with(RESOURCE_POLICY, "keep")));
        assert!(!let_go(&with(RESOURCE_POLICY, "delete")));
        assert!(!let_go(&serde_json::json!({"metadata": {}})));
    }

    fn reference(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
        }
    }

    fn inventory(app: &str, objects: Vec<ObjectRef>) -> (String, Inventory) {
        let inventory = Inventory {
            app: app.into(),
            objects: objects.into_iter().collect(),
            ..Default::default()
        };
        (app.to_string(), inventory)
    }

    /// The CRD of `Widget`s, owned by `app`.
    fn widget_crd(app: &str) -> Stale {
        let name = "widgets.example.com";
        Stale {
            owned: (
                app.into(),
                reference(
                    "apiextensions.k8s.io/v1",
                    "CustomResourceDefinition",
                    None,
                    name,
                ),
            ),
            orphan: false,
            defines: Some(("example.com".into(), "Widget".into())),
        }
    }

    #[test]
    fn stale_objects_are_what_no_app_wants_any_more() {
        let previous = BTreeMap::from([inventory(
            "e-a",
            vec![
                reference("v1", "ConfigMap", Some("ns"), "kept"),
                reference("v1", "ConfigMap", Some("ns"), "gone"),
            ],
        )]);
        // An object that moved to another app stays.
        let wanted = BTreeMap::from([(
            "e-b".to_string(),
            BTreeSet::from([reference("v1", "ConfigMap", Some("ns"), "kept")]),
        )]);
        let stale = stale(&previous, &wanted);
        assert_eq!(
            stale,
            vec![(
                "e-a".to_string(),
                reference("v1", "ConfigMap", Some("ns"), "gone")
            )]
        );
    }

    #[test]
    fn an_empty_state_or_one_that_drops_every_app_is_refused() {
        let previous = BTreeMap::from([inventory("e-a", vec![]), inventory("e-b", vec![])]);
        let some = |app: &str| {
            BTreeMap::from([(
                app.to_string(),
                BTreeSet::from([reference("v1", "ConfigMap", Some("e"), "x")]),
            )])
        };
        let empty = emptying("e", &BTreeMap::new(), &previous).unwrap();
        assert!(
            empty.contains("has no objects")
                && empty.contains("e-a, e-b")
                && empty.contains("--allow-empty")
        );
        let renamed = emptying("e", &some("e-c"), &previous).unwrap();
        assert!(renamed.contains("delete every app of e"), "{renamed}");
        assert_eq!(emptying("e", &some("e-a"), &previous), None);
        assert_eq!(emptying("e", &some("e-c"), &BTreeMap::new()), None);
        assert!(emptying("e", &BTreeMap::new(), &BTreeMap::new()).is_some());
    }

    #[test]
    fn a_namespace_or_crd_the_state_still_needs_is_not_deleted_unless_let_go() {
        let namespace = Stale {
            owned: (
                "e-shop".into(),
                reference("v1", "Namespace", None, "production"),
            ),
            orphan: false,
            defines: None,
        };
        let crd = widget_crd("e-shop");
        let wanted = BTreeMap::from([(
            "e-web".to_string(),
            BTreeSet::from([
                reference("v1", "ConfigMap", Some("production"), "cfg"),
                reference("example.com/v1", "Widget", None, "w"),
                reference("v1", "ConfigMap", Some("elsewhere"), "other"),
            ]),
        )]);
        let problems = forbidden(&[namespace.clone(), crd.clone()], &wanted);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("Namespace/production (app e-shop) would be deleted"));
        assert!(
            problems[0].contains("ConfigMap/cfg in production (app e-web)")
                && !problems[0].contains("other")
        );
        assert!(problems[1].contains("Widget/w (app e-web)") && problems[1].contains("orphan"));
        let let_go = Stale {
            orphan: true,
            ..namespace
        };
        assert!(forbidden(std::slice::from_ref(&let_go), &wanted).is_empty());
        let removal = removal(&[let_go, crd]).unwrap();
        assert_eq!(removal.orphans.len(), 1);
        assert_eq!(removal.deletion_waves.concat().len(), 1);
    }

    #[test]
    fn custom_resources_are_deleted_before_their_crd() {
        let stale = vec![
            widget_crd("e-a"),
            Stale {
                owned: (
                    "e-a".into(),
                    reference("example.com/v1", "Widget", Some("ns"), "w"),
                ),
                orphan: false,
                defines: None,
            },
        ];
        let waves = removal(&stale).unwrap().deletion_waves;
        let flat: Vec<&str> = waves
            .iter()
            .flatten()
            .map(|(_, o)| o.kind.as_str())
            .collect();
        assert_eq!(flat, ["Widget", "CustomResourceDefinition"]);
        let live = serde_json::json!({"metadata": {"annotations": {DELETE_STRATEGY: "orphan"}},
            "spec": {"group": "example.com", "names": {"kind": "Widget"}}});
        let crd = stale_of(stale[0].owned.clone(), &live);
        assert!(crd.orphan && crd.defines == Some(("example.com".into(), "Widget".into())));
    }
}
