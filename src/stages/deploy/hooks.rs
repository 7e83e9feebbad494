//! Helm hooks with helm's semantics, as pure decisions: which objects of the state are hooks,
//! which of them a deploy, rollback or delete runs in each phase, in which order, and which
//! are deleted before and after. Hooks are not part of an app's inventory: they are neither
//! drift nor pruned when gone.
//!
//! The app group is helm's release: the pre-phase hooks of every app that runs hooks go before
//! the first wave, the post-phase hooks after the last, by `helm.sh/hook-weight`, then in
//! kapp's order within a weight. An app runs its hooks when it is installed (no inventory yet)
//! or its content changed since the deploy its inventory records: a deploy that changes
//! nothing in an app runs none of its hooks.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::desired::Desired;
use crate::adapters::git::UNCOMMITTED;

pub const HOOK: &str = "helm.sh/hook";
pub const HOOK_WEIGHT: &str = "helm.sh/hook-weight";
pub const HOOK_DELETE_POLICY: &str = "helm.sh/hook-delete-policy";

/// When helm runs a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    PreInstall,
    PostInstall,
    PreUpgrade,
    PostUpgrade,
    PreRollback,
    PostRollback,
    PreDelete,
    PostDelete,
    Test,
}

impl Event {
    const ALL: [Event; 9] = [
        Event::PreInstall,
        Event::PostInstall,
        Event::PreUpgrade,
        Event::PostUpgrade,
        Event::PreRollback,
        Event::PostRollback,
        Event::PreDelete,
        Event::PostDelete,
        Event::Test,
    ];

    fn parse(name: &str) -> Option<Self> {
        // `test-success` is helm 2's name for `test`.
        let name = if name == "test-success" { "test" } else { name };
        Event::ALL.into_iter().find(|e| e.name() == name)
    }

    /// helm's name of the event.
    pub fn name(self) -> &'static str {
        match self {
            Event::PreInstall => "pre-install",
            Event::PostInstall => "post-install",
            Event::PreUpgrade => "pre-upgrade",
            Event::PostUpgrade => "post-upgrade",
            Event::PreRollback => "pre-rollback",
            Event::PostRollback => "post-rollback",
            Event::PreDelete => "pre-delete",
            Event::PostDelete => "post-delete",
            Event::Test => "test",
        }
    }

    /// The event of `operation` in `phase`.
    pub fn of(operation: Operation, phase: Phase) -> Self {
        match (operation, phase) {
            (Operation::Install, Phase::Pre) => Event::PreInstall,
            (Operation::Install, Phase::Post) => Event::PostInstall,
            (Operation::Upgrade, Phase::Pre) => Event::PreUpgrade,
            (Operation::Upgrade, Phase::Post) => Event::PostUpgrade,
            (Operation::Rollback, Phase::Pre) => Event::PreRollback,
            (Operation::Rollback, Phase::Post) => Event::PostRollback,
            (Operation::Delete, Phase::Pre) => Event::PreDelete,
            (Operation::Delete, Phase::Post) => Event::PostDelete,
        }
    }
}

/// What is done to an app, in helm's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Install,
    Upgrade,
    Rollback,
    Delete,
}

/// Before or after the app's other objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pre,
    Post,
}

/// `helm.sh/hook-delete-policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeletePolicy {
    /// Delete the previous object before creating the hook again (helm's default).
    pub before_creation: bool,
    /// Delete it once its phase succeeded.
    pub succeeded: bool,
    /// Delete it when it failed.
    pub failed: bool,
}

/// A hook of the state.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub desired: Desired,
    pub events: BTreeSet<Event>,
    pub weight: i64,
    pub delete: DeletePolicy,
}

/// The state's objects apart from its hooks, and the hooks (`test` hooks are dropped: umbrella
/// does not run chart tests). A hook annotation umbrella cannot read is a problem, naming the
/// file, the object and the annotation.
pub fn split(desired: Vec<Desired>) -> Result<(Vec<Desired>, Vec<Hook>), Vec<String>> {
    let mut objects = Vec::new();
    let mut hooks = Vec::new();
    let mut problems = Vec::new();
    for object in desired {
        match hook_of(&object) {
            Ok(None) => objects.push(object),
            Ok(Some((events, weight, delete))) => {
                if !events.iter().all(|e| *e == Event::Test) {
                    hooks.push(Hook {
                        desired: object,
                        events,
                        weight,
                        delete,
                    });
                }
            }
            Err(problem) => problems.push(format!(
                "{}: {}: {problem}",
                object.file.display(),
                object.reference()
            )),
        }
    }
    if problems.is_empty() {
        Ok((objects, hooks))
    } else {
        Err(problems)
    }
}

type HookAnnotations = (BTreeSet<Event>, i64, DeletePolicy);

fn hook_of(desired: &Desired) -> Result<Option<HookAnnotations>, String> {
    let annotations = &desired.value["metadata"]["annotations"];
    let Some(events) = annotations[HOOK].as_str() else {
        return Ok(None);
    };
    let events = words(events)
        .map(|name| {
            Event::parse(name).ok_or_else(|| format!("annotation {HOOK}: unknown hook `{name}`"))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    if events.is_empty() {
        return Err(format!("annotation {HOOK}: no hook named"));
    }
    let weight = match annotations[HOOK_WEIGHT].as_str().map(str::trim) {
        None | Some("") => 0,
        Some(text) => text
            .parse()
            .map_err(|_| format!("annotation {HOOK_WEIGHT}: `{text}` is not a whole number"))?,
    };
    Ok(Some((events, weight, delete_policy(annotations)?)))
}

fn words(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|w| !w.is_empty())
}

fn delete_policy(annotations: &Value) -> Result<DeletePolicy, String> {
    let Some(list) = annotations[HOOK_DELETE_POLICY].as_str() else {
        // helm's default.
        return Ok(DeletePolicy {
            before_creation: true,
            ..DeletePolicy::default()
        });
    };
    let mut policy = DeletePolicy::default();
    for word in words(list) {
        match word {
            "before-hook-creation" => policy.before_creation = true,
            "hook-succeeded" => policy.succeeded = true,
            "hook-failed" => policy.failed = true,
            other => {
                return Err(format!(
                    "annotation {HOOK_DELETE_POLICY}: unknown policy `{other}` (before-hook-creation, hook-succeeded, hook-failed)"
                ));
            }
        }
    }
    Ok(policy)
}

/// The hooks a phase runs, as indexes into `hooks` grouped by weight, lightest first. Each app
/// is under the operation `operations` says (absent: it runs no hooks).
pub fn phase_hooks(
    hooks: &[Hook],
    operations: &BTreeMap<String, Operation>,
    phase: Phase,
) -> Vec<Vec<usize>> {
    let mut by_weight: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (index, hook) in hooks.iter().enumerate() {
        let Some(operation) = operations.get(&hook.desired.app) else {
            continue;
        };
        if hook.events.contains(&Event::of(*operation, phase)) {
            by_weight.entry(hook.weight).or_default().push(index);
        }
    }
    by_weight.into_values().collect()
}

/// The hooks a deploy would run, phase by phase, as `app Kind/name (event)` lines.
pub fn would_run(hooks: &[Hook], operations: &BTreeMap<String, Operation>) -> Vec<String> {
    [Phase::Pre, Phase::Post]
        .into_iter()
        .flat_map(|phase| {
            phase_hooks(hooks, operations, phase)
                .into_iter()
                .flatten()
                .map(move |i| {
                    let hook = &hooks[i];
                    let operation = operations[&hook.desired.app];
                    format!(
                        "{} {} ({})",
                        hook.desired.app,
                        hook.desired.reference(),
                        Event::of(operation, phase).name()
                    )
                })
        })
        .collect()
}

/// What each app with hooks is under: installed when the cluster has no inventory for it
/// (`deployed`: each inventory's commit), else upgraded (rolled back, for `rollback`) when its
/// content changed since the commit its inventory records; an app whose content did not
/// change is absent.
pub fn operations(
    hooks: &[Hook],
    deployed: &BTreeMap<String, String>,
    commits: &BTreeMap<String, String>,
    rollback: bool,
) -> BTreeMap<String, Operation> {
    let apps: BTreeSet<&String> = hooks.iter().map(|h| &h.desired.app).collect();
    apps.into_iter()
        .filter_map(|app| {
            let operation = match deployed.get(app) {
                None => Operation::Install,
                Some(live) if unchanged(commits.get(app), live) => return None,
                Some(_) if rollback => Operation::Rollback,
                Some(_) => Operation::Upgrade,
            };
            Some((app.clone(), operation))
        })
        .collect()
}

/// The app's content is the one its inventory recorded: the same commit, which must be one.
fn unchanged(commit: Option<&String>, live: &str) -> bool {
    commit.is_some_and(|c| c == live) && !live.is_empty() && live != UNCOMMITTED
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(app: &str, name: &str, annotations: Value) -> Desired {
        Desired {
            app: app.into(),
            file: format!("{app}/job-{name}.yaml").into(),
            value: json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": name, "annotations": annotations}}),
        }
    }

    #[test]
    fn hooks_are_apart_from_the_objects_and_tests_are_dropped() {
        let (objects, hooks) = split(vec![
            object("a", "plain", json!({})),
            object(
                "a",
                "migrate",
                json!({HOOK: "pre-install, pre-upgrade", HOOK_WEIGHT: "-5"}),
            ),
            object("a", "smoke", json!({HOOK: "test"})),
            object(
                "a",
                "patch",
                json!({HOOK: "post-install", HOOK_DELETE_POLICY: "hook-succeeded,hook-failed"}),
            ),
        ])
        .unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(hooks.len(), 2);
        assert_eq!(hooks[0].weight, -5);
        assert_eq!(
            hooks[0].events,
            BTreeSet::from([Event::PreInstall, Event::PreUpgrade])
        );
        assert!(hooks[0].delete.before_creation, "helm's default policy");
        assert_eq!(
            hooks[1].delete,
            DeletePolicy {
                before_creation: false,
                succeeded: true,
                failed: true
            }
        );
    }

    #[test]
    fn an_unreadable_hook_annotation_is_named() {
        let problems = split(vec![
            object("a", "x", json!({HOOK: "pre-instal"})),
            object(
                "a",
                "y",
                json!({HOOK: "post-install", HOOK_WEIGHT: "heavy"}),
            ),
            object(
                "a",
                "z",
                json!({HOOK: "post-install", HOOK_DELETE_POLICY: "never"}),
            ),
        ])
        .unwrap_err();
        assert_eq!(problems.len(), 3);
        assert!(problems[0].contains("a/job-x.yaml") && problems[0].contains("`pre-instal`"));
        assert!(problems[1].contains(HOOK_WEIGHT) && problems[1].contains("Job/y"));
        assert!(problems[2].contains("`never`"));
    }

    #[test]
    fn a_phase_runs_the_hooks_of_its_event_lightest_first() {
        let (_, hooks) = split(vec![
            object("a", "late", json!({HOOK: "pre-install", HOOK_WEIGHT: "10"})),
            object(
                "a",
                "early",
                json!({HOOK: "pre-install,pre-upgrade", HOOK_WEIGHT: "-1"}),
            ),
            object("a", "also", json!({HOOK: "pre-install", HOOK_WEIGHT: "10"})),
            object("a", "after", json!({HOOK: "post-install"})),
            object("b", "other", json!({HOOK: "pre-upgrade"})),
        ])
        .unwrap();
        let both = BTreeMap::from([
            ("a".to_string(), Operation::Install),
            ("b".to_string(), Operation::Upgrade),
        ]);
        assert_eq!(
            phase_hooks(&hooks, &both, Phase::Pre),
            [vec![1], vec![4], vec![0, 2]]
        );
        assert_eq!(phase_hooks(&hooks, &both, Phase::Post), [vec![3]]);
        let only_b = BTreeMap::from([("b".to_string(), Operation::Upgrade)]);
        assert_eq!(phase_hooks(&hooks, &only_b, Phase::Pre), [vec![4]]);
        let rollback = BTreeMap::from([("a".to_string(), Operation::Rollback)]);
        assert!(phase_hooks(&hooks, &rollback, Phase::Pre).is_empty());
    }

    #[test]
    fn an_app_runs_hooks_when_new_or_changed() {
        let hooks: Vec<Hook> = split(
            ["new", "same", "changed", "unknown"]
                .map(|app| object(app, "h", json!({HOOK: "pre-upgrade"})))
                .into(),
        )
        .unwrap()
        .1;
        let deployed = BTreeMap::from([
            ("same".to_string(), "c1".to_string()),
            ("changed".to_string(), "c1".to_string()),
            ("unknown".to_string(), String::new()),
        ]);
        let commits = BTreeMap::from([
            ("same".to_string(), "c1".to_string()),
            ("changed".to_string(), "c2".to_string()),
            ("unknown".to_string(), String::new()),
        ]);
        let ops = operations(&hooks, &deployed, &commits, false);
        assert_eq!(ops.get("new"), Some(&Operation::Install));
        assert_eq!(ops.get("same"), None);
        assert_eq!(ops.get("changed"), Some(&Operation::Upgrade));
        assert_eq!(ops.get("unknown"), Some(&Operation::Upgrade));
        let ops = operations(&hooks, &deployed, &commits, true);
        assert_eq!(ops.get("changed"), Some(&Operation::Rollback));
        assert_eq!(ops.get("new"), Some(&Operation::Install));
    }
}
