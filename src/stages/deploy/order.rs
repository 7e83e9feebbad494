//! The order of changes, by kapp's rules: default change groups (CRDs, namespaces, storage,
//! RBAC, pod-related config before everything else; custom resources after their CRD) plus the
//! `kapp.k14s.io/change-group` and `kapp.k14s.io/change-rule` annotations. A pure function from
//! objects to waves: every change of a wave may run at the same time, once the waves before it
//! are applied and ready. Deletions run the waves backwards.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// What the ordering needs to know of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: String,
    pub group: String,
    pub namespaced: bool,
    pub annotations: BTreeMap<String, String>,
}

impl Change {
    /// Reads kind, API group and annotations from an object.
    pub fn of(object: &Value, namespaced: bool) -> Self {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let annotations = object["metadata"]["annotations"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Change {
            kind: object["kind"].as_str().unwrap_or_default().to_string(),
            group: api_version
                .rsplit_once('/')
                .map_or("", |(g, _)| g)
                .to_string(),
            namespaced,
            annotations,
        }
    }
}

const CHANGE_GROUP: &str = "kapp.k14s.io/change-group";
const CHANGE_RULE: &str = "kapp.k14s.io/change-rule";
const DEFAULT_PREFIX: &str = "change-groups.kapp.k14s.io/";

/// The default groups, in the order kapp's rules put them.
fn default_group(change: &Change) -> Option<&'static str> {
    Some(match (change.group.as_str(), change.kind.as_str()) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => "crds",
        ("", "Namespace") => "namespaces",
        ("storage.k8s.io", "StorageClass") => "storage-class",
        ("", "PersistentVolume" | "PersistentVolumeClaim") => "storage",
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => "rbac-roles",
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => "rbac-role-bindings",
        (
            "" | "networking.k8s.io" | "policy" | "scheduling.k8s.io" | "node.k8s.io",
            "NetworkPolicy"
            | "ResourceQuota"
            | "LimitRange"
            | "PodDisruptionBudget"
            | "PriorityClass"
            | "RuntimeClass"
            | "ServiceAccount"
            | "Secret"
            | "ConfigMap",
        ) => "pod-related",
        _ => return None,
    })
}

/// A rule could not be read, or required rules form a cycle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error(
        "object {index}: annotation {key}: `{value}` is not `upsert after upserting GROUP`, `upsert before upserting GROUP`, `delete before deleting GROUP` or `delete after deleting GROUP`"
    )]
    BadRule {
        index: usize,
        key: String,
        value: String,
    },
    #[error("change rules form a cycle: {}", cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
}

/// Upsert waves: indexes into `changes`, wave by wave.
pub fn upsert_waves(
    changes: &[Change],
    custom_resource_kinds: &BTreeSet<(String, String)>,
    names: &[String],
) -> Result<Vec<Vec<usize>>, OrderError> {
    let graph = Graph::build(changes, custom_resource_kinds, names)?;
    Ok(graph.waves())
}

/// A dependency graph over changes and named groups (virtual nodes). `edges[a]` holds what `a`
/// waits for.
struct Graph {
    nodes: Vec<String>,
    real: usize,
    edges: Vec<BTreeSet<usize>>,
    optional: BTreeSet<(usize, usize)>,
    /// The node of each named group.
    groups: BTreeMap<String, usize>,
}

impl Graph {
    fn build(
        changes: &[Change],
        custom_resource_kinds: &BTreeSet<(String, String)>,
        names: &[String],
    ) -> Result<Self, OrderError> {
        let mut graph = Graph {
            nodes: names.to_vec(),
            real: changes.len(),
            edges: vec![BTreeSet::new(); changes.len()],
            optional: BTreeSet::new(),
            groups: BTreeMap::new(),
        };
        // Memberships first: a rule "before upserting G" needs G's members.
        for (index, change) in changes.iter().enumerate() {
            graph.add_memberships(index, change, custom_resource_kinds);
        }
        for (index, change) in changes.iter().enumerate() {
            for (after, optional) in default_rules(change, custom_resource_kinds) {
                let node = graph.group_node(&format!("{DEFAULT_PREFIX}{after}"));
                graph.edges[index].insert(node);
                if optional {
                    graph.optional.insert((index, node));
                }
            }
            for (key, value) in change
                .annotations
                .iter()
                .filter(|(k, _)| is_key(k, CHANGE_RULE))
            {
                graph.add_rule(index, key, value)?;
            }
        }
        graph.break_optional_cycles()?;
        Ok(graph)
    }

    /// The node of a named group, added on first use.
    fn group_node(&mut self, name: &str) -> usize {
        if let Some(node) = self.groups.get(name) {
            return *node;
        }
        self.nodes.push(format!("group {name}"));
        self.edges.push(BTreeSet::new());
        let node = self.nodes.len() - 1;
        self.groups.insert(name.to_string(), node);
        node
    }

    /// A group waits for its members: the change's own groups, its default group, and the
    /// custom resources' group.
    fn add_memberships(
        &mut self,
        index: usize,
        change: &Change,
        custom_resource_kinds: &BTreeSet<(String, String)>,
    ) {
        let mut member_of: Vec<String> = annotation_values(&change.annotations, CHANGE_GROUP);
        member_of.extend(default_group(change).map(|g| format!("{DEFAULT_PREFIX}{g}")));
        if custom_resource_kinds.contains(&(change.group.clone(), change.kind.clone())) {
            member_of.push(format!("{DEFAULT_PREFIX}crs"));
        }
        for group in member_of {
            let node = self.group_node(&group);
            self.edges[node].insert(index);
        }
    }

    /// One `kapp.k14s.io/change-rule` of a change.
    fn add_rule(&mut self, index: usize, key: &str, value: &str) -> Result<(), OrderError> {
        let words: Vec<&str> = value.split_whitespace().collect();
        match words.as_slice() {
            ["upsert", "after", "upserting", group] => {
                let node = self.group_node(group);
                self.edges[index].insert(node);
            }
            ["upsert", "before", "upserting", group] => {
                let node = self.group_node(group);
                for member in self.edges[node].clone() {
                    self.edges[member].insert(index);
                }
            }
            // Deletions run the upsert order backwards; these only need to be valid.
            ["delete", "before" | "after", "deleting", _] => {}
            _ => {
                return Err(OrderError::BadRule {
                    index,
                    key: key.to_string(),
                    value: value.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Drops optional (default) edges that close a cycle; a cycle of required edges is an error.
    fn break_optional_cycles(&mut self) -> Result<(), OrderError> {
        while let Some(cycle) = self.find_cycle() {
            let optional: Vec<(usize, usize)> = cycle
                .windows(2)
                .map(|w| (w[0], w[1]))
                .filter(|edge| self.optional.contains(edge))
                .collect();
            if optional.is_empty() {
                return Err(OrderError::Cycle {
                    cycle: cycle.iter().map(|&n| self.nodes[n].clone()).collect(),
                });
            }
            for (from, to) in optional {
                self.edges[from].remove(&to);
                self.optional.remove(&(from, to));
            }
        }
        Ok(())
    }

    /// A cycle as a node path that starts and ends at the same node.
    fn find_cycle(&self) -> Option<Vec<usize>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut marks = vec![Mark::New; self.nodes.len()];
        for start in 0..self.nodes.len() {
            if marks[start] != Mark::New {
                continue;
            }
            // Iterative DFS: (node, its waits not yet visited).
            let mut stack: Vec<(usize, Vec<usize>)> =
                vec![(start, self.edges[start].iter().copied().collect())];
            marks[start] = Mark::Open;
            while let Some((node, pending)) = stack.last_mut() {
                let node = *node;
                match pending.pop() {
                    Some(next) if marks[next] == Mark::Open => {
                        let mut cycle: Vec<usize> = stack
                            .iter()
                            .map(|(n, _)| *n)
                            .skip_while(|&n| n != next)
                            .collect();
                        cycle.push(next);
                        return Some(cycle);
                    }
                    Some(next) if marks[next] == Mark::New => {
                        marks[next] = Mark::Open;
                        stack.push((next, self.edges[next].iter().copied().collect()));
                    }
                    Some(_) => {}
                    None => {
                        marks[node] = Mark::Done;
                        stack.pop();
                    }
                }
            }
        }
        None
    }

    /// Longest-path layering of the real nodes; group nodes pass their members' waves on.
    fn waves(&self) -> Vec<Vec<usize>> {
        let mut level: Vec<Option<usize>> = vec![None; self.nodes.len()];
        fn level_of(graph: &Graph, node: usize, level: &mut Vec<Option<usize>>) -> usize {
            if let Some(l) = level[node] {
                return l;
            }
            let is_real = node < graph.real;
            let deps = graph.edges[node].iter().map(|&d| {
                let l = level_of(graph, d, level);
                // Waiting for a real change puts you one wave later; a group is as late as its last member.
                if d < graph.real { l + 1 } else { l }
            });
            let l = deps.max().unwrap_or(0);
            let l = if is_real || !graph.edges[node].is_empty() {
                l
            } else {
                0
            };
            level[node] = Some(l);
            l
        }
        let mut waves: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for node in 0..self.real {
            waves
                .entry(level_of(self, node, &mut level))
                .or_default()
                .push(node);
        }
        waves.into_values().collect()
    }
}

/// kapp's default rules for one change: (the default group it upserts after, optional).
fn default_rules(
    change: &Change,
    custom_resource_kinds: &BTreeSet<(String, String)>,
) -> Vec<(&'static str, bool)> {
    let mut rules = Vec::new();
    if custom_resource_kinds.contains(&(change.group.clone(), change.kind.clone())) {
        rules.push(("crds", true));
    }
    if change.namespaced {
        rules.push(("namespaces", true));
    }
    match default_group(change) {
        Some("rbac-role-bindings") => rules.push(("rbac-roles", true)),
        Some("storage") => rules.push(("storage-class", true)),
        Some(_) => {}
        None => rules.extend(
            [
                "pod-related",
                "rbac-roles",
                "rbac-role-bindings",
                "storage-class",
                "storage",
            ]
            .map(|g| (g, true)),
        ),
    }
    rules
}

/// `key`, `key.0`, `key.x` ... : kapp allows several values of one annotation.
fn is_key(key: &str, base: &str) -> bool {
    key == base
        || key
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('.'))
}

fn annotation_values(annotations: &BTreeMap<String, String>, base: &str) -> Vec<String> {
    annotations
        .iter()
        .filter(|(k, _)| is_key(k, base))
        .map(|(_, v)| v.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(
        api_version: &str,
        kind: &str,
        namespaced: bool,
        annotations: &[(&str, &str)],
    ) -> Change {
        let mut object = json!({"apiVersion": api_version, "kind": kind, "metadata": {}});
        for (k, v) in annotations {
            object["metadata"]["annotations"][*k] = json!(v);
        }
        Change::of(&object, namespaced)
    }

    fn order(changes: &[Change], crs: &[(&str, &str)]) -> Result<Vec<Vec<String>>, OrderError> {
        let names: Vec<String> = changes
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}#{i}", c.kind))
            .collect();
        let crs: BTreeSet<(String, String)> = crs
            .iter()
            .map(|(g, k)| (g.to_string(), k.to_string()))
            .collect();
        Ok(upsert_waves(changes, &crs, &names)?
            .into_iter()
            .map(|wave| wave.into_iter().map(|i| names[i].clone()).collect())
            .collect())
    }

    #[test]
    fn kapp_default_order() {
        let changes = vec![
            change("apps/v1", "Deployment", true, &[]),
            change("v1", "Service", true, &[]),
            change("v1", "ConfigMap", true, &[]),
            change("rbac.authorization.k8s.io/v1", "RoleBinding", true, &[]),
            change("rbac.authorization.k8s.io/v1", "Role", true, &[]),
            change("v1", "Namespace", false, &[]),
            change(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                false,
                &[],
            ),
            change("example.com/v1", "Widget", true, &[]),
            change("v1", "PersistentVolumeClaim", true, &[]),
            change("storage.k8s.io/v1", "StorageClass", false, &[]),
        ];
        let waves = order(&changes, &[("example.com", "Widget")]).unwrap();
        let wave_of = |name: &str| {
            waves
                .iter()
                .position(|w| w.iter().any(|n| n.starts_with(name)))
                .unwrap()
        };
        assert!(wave_of("Namespace") < wave_of("ConfigMap"));
        assert!(wave_of("Namespace") < wave_of("Role#"));
        assert!(wave_of("Role#") < wave_of("RoleBinding"));
        assert!(wave_of("StorageClass") < wave_of("PersistentVolumeClaim"));
        assert!(wave_of("CustomResourceDefinition") < wave_of("Widget"));
        for first in ["ConfigMap", "RoleBinding", "PersistentVolumeClaim"] {
            assert!(
                wave_of(first) < wave_of("Deployment"),
                "{first} before Deployment: {waves:?}"
            );
            assert!(
                wave_of(first) < wave_of("Service"),
                "{first} before Service: {waves:?}"
            );
        }
        assert_eq!(
            wave_of("Deployment"),
            wave_of("Service"),
            "independent changes share a wave"
        );
        assert_eq!(wave_of("CustomResourceDefinition"), 0);
    }

    #[test]
    fn user_rules_order_a_job_before_a_deployment() {
        let changes = vec![
            change(
                "apps/v1",
                "Deployment",
                true,
                &[(
                    "kapp.k14s.io/change-rule",
                    "upsert after upserting apps.big.co/db-migrations",
                )],
            ),
            change(
                "batch/v1",
                "Job",
                true,
                &[("kapp.k14s.io/change-group", "apps.big.co/db-migrations")],
            ),
        ];
        let waves = order(&changes, &[]).unwrap();
        assert_eq!(
            waves,
            vec![vec!["Job#1".to_string()], vec!["Deployment#0".to_string()]]
        );
    }

    #[test]
    fn several_rules_with_suffixes_and_upsert_before() {
        let changes = vec![
            change(
                "v1",
                "Service",
                true,
                &[("kapp.k14s.io/change-group", "svc")],
            ),
            change(
                "batch/v1",
                "Job",
                true,
                &[
                    ("kapp.k14s.io/change-rule.0", "upsert before upserting svc"),
                    ("kapp.k14s.io/change-group.x", "job"),
                ],
            ),
            change(
                "apps/v1",
                "Deployment",
                true,
                &[
                    ("kapp.k14s.io/change-rule.a", "upsert after upserting svc"),
                    ("kapp.k14s.io/change-rule.b", "upsert after upserting job"),
                ],
            ),
        ];
        let waves = order(&changes, &[]).unwrap();
        assert_eq!(
            waves,
            vec![
                vec!["Job#1".to_string()],
                vec!["Service#0".to_string()],
                vec!["Deployment#2".to_string()]
            ]
        );
    }

    #[test]
    fn a_required_cycle_is_an_error_that_prints_it() {
        let changes = vec![
            change(
                "v1",
                "ConfigMap",
                true,
                &[
                    ("kapp.k14s.io/change-group", "a"),
                    ("kapp.k14s.io/change-rule", "upsert after upserting b"),
                ],
            ),
            change(
                "v1",
                "Secret",
                true,
                &[
                    ("kapp.k14s.io/change-group", "b"),
                    ("kapp.k14s.io/change-rule", "upsert after upserting a"),
                ],
            ),
        ];
        let err = order(&changes, &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("change rules form a cycle: "), "{text}");
        assert!(
            text.contains("group a") && text.contains("group b"),
            "{text}"
        );
    }

    #[test]
    fn a_default_rule_that_would_close_a_cycle_is_dropped() {
        // The user wants a ConfigMap (pod-related) after a Deployment, which by default waits for
        // pod-related: kapp drops the default rule rather than failing.
        let changes = vec![
            change(
                "apps/v1",
                "Deployment",
                true,
                &[("kapp.k14s.io/change-group", "app")],
            ),
            change(
                "v1",
                "ConfigMap",
                true,
                &[("kapp.k14s.io/change-rule", "upsert after upserting app")],
            ),
        ];
        let waves = order(&changes, &[]).unwrap();
        assert_eq!(
            waves,
            vec![
                vec!["Deployment#0".to_string()],
                vec!["ConfigMap#1".to_string()]
            ]
        );
    }

    #[test]
    fn bad_rules_are_named() {
        let changes = vec![change(
            "v1",
            "ConfigMap",
            true,
            &[("kapp.k14s.io/change-rule", "after x")],
        )];
        let err = order(&changes, &[]).unwrap_err().to_string();
        assert!(err.contains("`after x` is not"), "{err}");
    }
}
