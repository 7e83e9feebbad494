//! What a deploy works on: the state's objects resolved against the cluster's API (targets),
//! the apps that want them, the CRDs the state brings, and the waves they are applied in.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::api::ApiResource;
use kube::discovery::Discovery;
use serde_json::Value;

use super::desired::Desired;
use super::hooks::{HOOK, Hook, Operation};
use super::inventory::{APP_LABEL, GROUP_LABEL};
use super::order;
use super::outcome::DeployError;
use super::ready::{self, Readiness};
use super::removal::Owned;
use super::request::{COMMIT_ANNOTATION, MANAGED_BY};
use super::strategy;
use crate::adapters::cluster::{self, Cluster};
use crate::adapters::retry::Retrier;
use crate::formats::object_ref::ObjectRef;

/// An object with how to reach it in the cluster (`None` until its CRD is established).
pub(super) struct Target {
    pub desired: Desired,
    pub reference: ObjectRef,
    pub resource: Option<(ApiResource, bool)>,
    /// The live object's resourceVersion, when the preflight found it.
    pub live_version: Option<String>,
    /// The deploy leaves the live pod template as it is: the workload's existing pods are its
    /// current ones, however old (their failures count).
    pub template_kept: bool,
    /// The live object's content is what the state has: only umbrella's bookkeeping changes.
    pub content_kept: bool,
    /// The apply is left out, as it would change nothing: whether the object is ready.
    pub kept_ready: Option<bool>,
    /// The live object is deleted and created again (kapp's update strategies).
    pub replace: bool,
    /// Fields set by hand that the apply takes back: the report's note.
    pub take_back: Option<String>,
}

/// The kinds the state's CRDs define: (group, kind) -> namespaced.
pub(super) type StateCrds = BTreeMap<(String, String), bool>;

/// The state's objects, each with how to reach it in the cluster.
pub(super) fn targets_of(desired: Vec<Desired>, discovery: &Discovery) -> Vec<Target> {
    desired
        .into_iter()
        .map(|d| {
            let resource = cluster::resolve(discovery, &d.reference());
            Target::new(d, resource)
        })
        .collect()
}

/// `app Kind/name in ns`, the object's line in the live output.
pub(super) fn label_of(target: &Target) -> String {
    format!("{} {}", target.desired.app, target.reference)
}

/// The objects each app of the state wants.
pub(super) fn wanted_by_app(targets: &[Target]) -> BTreeMap<String, BTreeSet<ObjectRef>> {
    let mut wanted: BTreeMap<String, BTreeSet<ObjectRef>> = BTreeMap::new();
    for target in targets {
        wanted
            .entry(target.desired.app.clone())
            .or_default()
            .insert(target.reference.clone());
    }
    wanted
}

impl Target {
    /// The object, reached through `resource`, before the preflight found anything of it.
    pub fn new(desired: Desired, resource: Option<(ApiResource, bool)>) -> Self {
        Target {
            reference: desired.reference(),
            desired,
            resource,
            live_version: None,
            template_kept: false,
            content_kept: false,
            kept_ready: None,
            replace: false,
            take_back: None,
        }
    }

    /// The object as applied: umbrella's labels (its app and environment) and the state commit
    /// added.
    pub fn applied(&self, env: &str, commit: Option<&String>) -> Value {
        let mut value = self.desired.value.clone();
        strategy::with_nonce(&mut value, deploy_nonce());
        if let Some(metadata) = value["metadata"].as_object_mut() {
            let labels = metadata
                .entry("labels")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(labels) = labels.as_object_mut() {
                labels.insert(MANAGED_BY.into(), "umbrella".into());
                labels.insert(APP_LABEL.into(), self.desired.app.clone().into());
                labels.insert(GROUP_LABEL.into(), env.into());
            }
            if let Some(commit) = commit {
                let annotations = metadata
                    .entry("annotations")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(annotations) = annotations.as_object_mut() {
                    annotations.insert(COMMIT_ANNOTATION.into(), commit.clone().into());
                }
            }
        }
        value
    }

    /// The live object's readiness: a hook Pod is done when it succeeded, as helm has it;
    /// everything else by its kind's rule.
    pub fn readiness(&self, live: &serde_json::Value) -> Readiness {
        let hook = !self.desired.value["metadata"]["annotations"][HOOK].is_null();
        if hook && self.reference.kind == "Pod" && self.reference.group().is_empty() {
            ready::hook_pod(live)
        } else {
            ready::readiness(live)
        }
    }
}

/// This deploy's value of `kapp.k14s.io/nonce`: the same for all its objects, new each run.
fn deploy_nonce() -> &'static str {
    static NONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NONCE.get_or_init(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(0, |d| d.as_nanos()).to_string()
    })
}

/// (group, kind) -> namespaced, for every CRD of the state.
pub(super) fn crds_in_state(desired: &[Desired]) -> StateCrds {
    desired
        .iter()
        .filter(|d| d.value["kind"] == "CustomResourceDefinition")
        .filter_map(|d| {
            let spec = &d.value["spec"];
            Some((
                (
                    spec["group"].as_str()?.to_string(),
                    spec["names"]["kind"].as_str()?.to_string(),
                ),
                spec["scope"] != "Cluster",
            ))
        })
        .collect()
}

/// Whether a CRD of the state defines the object's kind.
pub(super) fn defined_by_state(reference: &ObjectRef, state_crds: &StateCrds) -> bool {
    state_crds.contains_key(&(reference.group().into(), reference.kind.clone()))
}

/// The waves of the upsert order, each a list of target indexes.
pub(super) fn plan_waves(
    targets: &[Target],
    state_crds: &StateCrds,
) -> Result<Vec<Vec<usize>>, DeployError> {
    let changes: Vec<order::Change> = targets
        .iter()
        .map(|t| {
            let namespaced = t
                .resource
                .as_ref()
                .map(|r| r.1)
                .or_else(|| {
                    state_crds
                        .get(&(t.reference.group().into(), t.reference.kind.clone()))
                        .copied()
                })
                .unwrap_or(true);
            order::Change::of(&t.desired.value, namespaced)
        })
        .collect();
    let names: Vec<String> = targets
        .iter()
        .map(|t| format!("{} ({})", t.reference, t.desired.file.display()))
        .collect();
    let custom: BTreeSet<(String, String)> = state_crds.keys().cloned().collect();
    order::upsert_waves(&changes, &custom, &names)
        .map_err(|e| DeployError::Invalid(vec![e.to_string()]))
}

/// The waves split in two, each keeping its order: the state's Namespaces and CRDs, which
/// hooks may need, then everything else.
pub(super) fn foundation_first(
    targets: &[Target],
    waves: &[Vec<usize>],
) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
    let is_foundation = |&i: &usize| {
        let reference = &targets[i].reference;
        matches!(
            (reference.group(), reference.kind.as_str()),
            ("", "Namespace") | ("apiextensions.k8s.io", "CustomResourceDefinition")
        )
    };
    let part = |keep: bool| -> Vec<Vec<usize>> {
        waves
            .iter()
            .map(|wave| {
                wave.iter()
                    .copied()
                    .filter(|i| is_foundation(i) == keep)
                    .collect::<Vec<_>>()
            })
            .filter(|wave| !wave.is_empty())
            .collect()
    };
    (part(true), part(false))
}

/// After CRDs of an earlier wave were established, their kinds become known.
pub(super) async fn refresh_resources(
    cluster: &Cluster,
    retrier: &Retrier,
    targets: &mut [Target],
    wave: &[usize],
) -> Result<(), DeployError> {
    let known = |targets: &[Target]| wave.iter().all(|&i| targets[i].resource.is_some());
    // An established CRD can take a moment to show in discovery: ask again a few times.
    for _ in 0..20 {
        if known(targets) {
            break;
        }
        let discovery = cluster::discover(cluster, retrier).await?;
        for &index in wave {
            if targets[index].resource.is_none() {
                targets[index].resource = cluster::resolve(&discovery, &targets[index].reference);
            }
        }
        if !known(targets) {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

/// The hooks of the state, resolved against the cluster, and what each app is under.
pub(super) struct HookPlan {
    pub hooks: Vec<Hook>,
    pub targets: Vec<Target>,
    pub waves: Vec<Vec<usize>>,
    pub operations: BTreeMap<String, Operation>,
}

impl HookPlan {
    /// The hooks with their targets and their kapp order (applied weight by weight).
    pub fn new(
        hooks: Vec<Hook>,
        discovery: &Discovery,
        state_crds: &StateCrds,
    ) -> Result<Self, DeployError> {
        let targets = targets_of(hooks.iter().map(|h| h.desired.clone()).collect(), discovery);
        let waves = plan_waves(&targets, state_crds)?;
        Ok(HookPlan {
            hooks,
            targets,
            waves,
            operations: BTreeMap::new(),
        })
    }

    pub fn owned(&self, indexes: impl IntoIterator<Item = usize>) -> Vec<Owned> {
        indexes
            .into_iter()
            .map(|i| {
                (
                    self.hooks[i].desired.app.clone(),
                    self.targets[i].reference.clone(),
                )
            })
            .collect()
    }
}

/// A target of app `app` the cluster does not resolve, for unit tests.
#[cfg(test)]
pub(super) fn test_target(app: &str, yaml: Value) -> Target {
    let desired = Desired {
        app: app.into(),
        file: format!("{app}/x.yaml").into(),
        value: yaml,
    };
    Target::new(desired, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_target as target;

    #[test]
    fn an_object_is_applied_with_umbrella_s_labels_commit_and_a_fresh_nonce() {
        let object = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "n", "annotations": {strategy::NONCE: ""}}});
        let applied = target("e-a", object).applied("e", Some(&"c1".to_string()));
        let labels = &applied["metadata"]["labels"];
        assert_eq!(labels[APP_LABEL], "e-a");
        assert_eq!(labels[GROUP_LABEL], "e");
        assert_eq!(labels[MANAGED_BY], "umbrella");
        let annotations = &applied["metadata"]["annotations"];
        assert_eq!(annotations[COMMIT_ANNOTATION], "c1");
        assert!(
            annotations[strategy::NONCE]
                .as_str()
                .is_some_and(|n| !n.is_empty())
        );
    }

    fn widget_crd() -> serde_json::Value {
        serde_json::json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Cluster", "names": {"kind": "Widget"}}})
    }

    fn config_map_crd_and_widget() -> Vec<Target> {
        vec![
            target(
                "e-a",
                serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "n"}}),
            ),
            target("e-b", widget_crd()),
            target(
                "e-a",
                serde_json::json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
            ),
        ]
    }

    #[test]
    fn wanted_objects_are_grouped_by_app_and_state_crds_found() {
        let targets = config_map_crd_and_widget();
        let wanted = wanted_by_app(&targets);
        assert_eq!(wanted.keys().collect::<Vec<_>>(), ["e-a", "e-b"]);
        assert_eq!(wanted["e-a"].len(), 2);
        let desired: Vec<Desired> = targets.iter().map(|t| t.desired.clone()).collect();
        let crds = crds_in_state(&desired);
        assert_eq!(
            crds,
            BTreeMap::from([(("example.com".to_string(), "Widget".to_string()), false)])
        );
        assert!(defined_by_state(&targets[2].reference, &crds));
        assert!(!defined_by_state(&targets[0].reference, &crds));
    }

    #[test]
    fn namespaces_and_crds_go_before_the_rest_each_part_in_order() {
        let namespace =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}});
        let mut targets = config_map_crd_and_widget();
        targets[2] = target("e-a", namespace);
        let waves = vec![vec![1, 2], vec![0]];
        let (foundation, rest) = foundation_first(&targets, &waves);
        assert_eq!(foundation, [vec![1, 2]]);
        assert_eq!(rest, [vec![0]]);
    }

    #[test]
    fn a_custom_resource_comes_a_wave_after_its_crd_from_another_app() {
        let targets = vec![
            target(
                "e-a",
                serde_json::json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
            ),
            target("e-b", widget_crd()),
        ];
        let desired: Vec<Desired> = targets.iter().map(|t| t.desired.clone()).collect();
        let waves = plan_waves(&targets, &crds_in_state(&desired)).unwrap();
        let position = |index: usize| waves.iter().position(|w| w.contains(&index)).unwrap();
        assert!(position(1) < position(0), "{waves:?}");
    }
}
