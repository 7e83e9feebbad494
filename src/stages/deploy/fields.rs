//! Whether a server-side apply would change a live object, told from the object alone (as a
//! LIST returns it), as a pure function: the fields umbrella's manager owns (its
//! `managedFields` entry, as client-go's `Extract...` apply configurations read it) are
//! exactly the fields the applied object sets, each holds the value the state wants, and no
//! other manager owns one of them. Anything this cannot prove equal is a difference: the
//! object then goes through the server's dry run, which has the last word.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::request::COMMIT_ANNOTATION;

/// Metadata fields that are the object's identity, not part of any manager's fields.
const IDENTITY: &[&str] = &["name", "namespace"];

/// Why an apply of `applied` by `manager` could change `live`; `None` when it would leave it
/// as it is. The value of umbrella's state-commit annotation does not count: it records the
/// commit of the deploy that last changed the object.
pub fn difference(live: &Value, applied: &Value, manager: &str) -> Option<String> {
    if !live["metadata"]["deletionTimestamp"].is_null() {
        return Some("it is being deleted".into());
    }
    let entries = live["metadata"]["managedFields"].as_array();
    let entries = entries.map(Vec::as_slice).unwrap_or_default();
    let ours: Vec<&Value> = entries.iter().filter(|e| is_apply_of(e, manager)).collect();
    let [entry] = ours.as_slice() else {
        return Some(format!("{} apply entries of {manager}", ours.len()));
    };
    if entry["apiVersion"] != applied["apiVersion"] {
        return Some(format!(
            "its fields were applied as {}",
            entry["apiVersion"]
        ));
    }
    let Some(owned) = entry["fieldsV1"].as_object() else {
        return Some("no fieldsV1".into());
    };
    let mut path = Vec::new();
    same_object(&top_level(applied), live, owned, &mut path)
        .err()
        .or_else(|| shared_with_others(owned, entries, manager))
}

/// The applied object without what is not in a manager's fields: apiVersion, kind, and the
/// identity in metadata (the LIST found the object by it).
fn top_level(applied: &Value) -> Value {
    let mut value = applied.clone();
    if let Some(object) = value.as_object_mut() {
        object.remove("apiVersion");
        object.remove("kind");
    }
    if let Some(metadata) = value["metadata"].as_object_mut() {
        for field in IDENTITY {
            metadata.remove(*field);
        }
    }
    value
}

fn is_apply_of(entry: &Value, manager: &str) -> bool {
    entry["manager"] == manager
        && entry["operation"] == "Apply"
        && entry["subresource"].as_str().unwrap_or_default().is_empty()
}

/// The applied map against the live one, under the fields the manager owns there.
fn same_object(
    applied: &Value,
    live: &Value,
    owned: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<(), String> {
    let Some(applied) = applied.as_object() else {
        return Err(at(path, "not a map"));
    };
    for (key, value) in applied {
        path.push(key.clone());
        let result = same_field(
            value,
            &live[key.as_str()],
            owned.get(&format!("f:{key}")),
            path,
        );
        path.pop();
        result?;
    }
    for field in owned.keys().filter(|k| *k != ".") {
        match field.strip_prefix("f:") {
            Some(key) if applied.contains_key(key) => {}
            Some(key) => return Err(at(path, &format!("owns {key}, which the state drops"))),
            None => return Err(at(path, &format!("owns {field} in a map"))),
        }
    }
    Ok(())
}

/// One field: owned, and holding the applied value (a map or list member by member, an
/// atomic one whole).
fn same_field(
    applied: &Value,
    live: &Value,
    owned: Option<&Value>,
    path: &mut Vec<String>,
) -> Result<(), String> {
    let Some(owned) = owned.and_then(Value::as_object) else {
        return Err(at(path, "not owned"));
    };
    if is_bookkeeping(path) {
        return Ok(());
    }
    let members = owned.keys().any(|k| k != ".");
    match applied {
        Value::Object(_) if members => same_object(applied, live, owned, path),
        Value::Array(items) if members => same_list(items, live, owned, path),
        _ if equal(applied, live) => Ok(()),
        _ => Err(at(path, "holds another value")),
    }
}

/// Umbrella's state-commit annotation, whose value changes without changing the content.
fn is_bookkeeping(path: &[String]) -> bool {
    matches!(path, [m, a, key] if m == "metadata" && a == "annotations" && key == COMMIT_ANNOTATION)
}

/// A list whose members are owned one by one: by key (`k:`), or by value (`v:`, a set). Its
/// members must be exactly the applied ones, in the same order.
fn same_list(
    applied: &[Value],
    live: &Value,
    owned: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<(), String> {
    let live = live.as_array().map(Vec::as_slice).unwrap_or_default();
    if live.len() != applied.len() {
        return Err(at(path, "has other members"));
    }
    let members: Vec<(&String, &Value)> = owned.iter().filter(|(k, _)| *k != ".").collect();
    if members.len() != applied.len() {
        return Err(at(path, "owns other members"));
    }
    for (index, (item, live_item)) in applied.iter().zip(live).enumerate() {
        path.push(index.to_string());
        let result = same_member(item, live_item, &members, path);
        path.pop();
        result?;
    }
    Ok(())
}

/// One member of a keyed list or a set, against the live member at its place.
fn same_member(
    item: &Value,
    live: &Value,
    members: &[(&String, &Value)],
    path: &mut Vec<String>,
) -> Result<(), String> {
    let set_member = format!("v:{item}");
    if members.iter().any(|(k, _)| **k == set_member) {
        return if equal(item, live) {
            Ok(())
        } else {
            Err(at(path, "holds another value"))
        };
    }
    let keyed: Vec<(Map<String, Value>, &Value)> = members
        .iter()
        .filter_map(|(k, fields)| Some((member_key(k)?, *fields)))
        .filter(|(key, _)| matches_key(item, key))
        .collect();
    let [(key, fields)] = keyed.as_slice() else {
        return Err(at(path, "is not one owned member"));
    };
    // The server keys a member by its defaulted fields too (a port's protocol): the live
    // member must carry the whole key.
    if !key
        .iter()
        .all(|(field, value)| equal(&live[field.as_str()], value))
    {
        return Err(at(path, "is another member"));
    }
    let Some(fields) = fields.as_object() else {
        return Err(at(path, "has no fields"));
    };
    same_object(item, live, fields, path)
}

/// The key of a `k:{...}` member.
fn member_key(field: &str) -> Option<Map<String, Value>> {
    serde_json::from_str(field.strip_prefix("k:")?).ok()
}

/// The item has the key's values, or leaves a key field out for the server to default.
fn matches_key(item: &Value, key: &Map<String, Value>) -> bool {
    let given: Vec<_> = key
        .iter()
        .filter(|(f, _)| !item[f.as_str()].is_null())
        .collect();
    !given.is_empty() && given.iter().all(|(f, v)| equal(&item[f.as_str()], v))
}

/// Equal values, numbers by value (`1` and `1.0`; integers exactly).
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            x.as_f64() == y.as_f64()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

/// A field the manager owns that another manager owns too: the apply could be refused, or
/// the other manager's value could win.
fn shared_with_others(
    owned: &Map<String, Value>,
    entries: &[Value],
    manager: &str,
) -> Option<String> {
    let ours = leaves(owned);
    entries
        .iter()
        .filter(|e| !is_apply_of(e, manager))
        .filter(|e| e["subresource"].as_str().unwrap_or_default().is_empty())
        .find_map(|entry| {
            let theirs = leaves(entry["fieldsV1"].as_object()?);
            let shared = ours.intersection(&theirs).next()?;
            Some(format!("{shared} is owned by {} too", entry["manager"]))
        })
}

/// Every field owned, as a path; a member's own presence (`.`) is left out, as two managers
/// may both keep a member they set different fields of.
fn leaves(owned: &Map<String, Value>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    collect_leaves(owned, "", &mut found);
    found
}

fn collect_leaves(owned: &Map<String, Value>, prefix: &str, found: &mut BTreeSet<String>) {
    for (field, children) in owned.iter().filter(|(k, _)| *k != ".") {
        let path = format!("{prefix}/{field}");
        match children.as_object() {
            Some(children) if children.keys().any(|k| k != ".") => {
                collect_leaves(children, &path, found)
            }
            _ => {
                found.insert(path);
            }
        }
    }
}

fn at(path: &[String], what: &str) -> String {
    format!(".{} {what}", path.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MANAGER: &str = "umbrella";

    /// A Deployment as umbrella applies it.
    fn applied() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "n",
                "labels": {"umbrella.dev/app": "e-a"},
                "annotations": {COMMIT_ANNOTATION: "c2"},
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "main", "image": "x", "args": ["a", "b"],
                            "ports": [{"containerPort": 80}],
                        }],
                        "finalizersLike": ["p", "q"],
                    },
                },
            },
        })
    }

    /// The fields umbrella owns once it applied `applied()`, as the API server records them.
    fn umbrella_fields() -> Value {
        json!({
            "f:metadata": {
                "f:labels": {"f:umbrella.dev/app": {}},
                "f:annotations": {f(COMMIT_ANNOTATION): {}},
            },
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {
                        "f:containers": {
                            "k:{\"name\":\"main\"}": {
                                ".": {}, "f:args": {}, "f:image": {}, "f:name": {},
                                "f:ports": {
                                    "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                        ".": {}, "f:containerPort": {},
                                    },
                                },
                            },
                        },
                        "f:finalizersLike": {"v:\"p\"": {}, "v:\"q\"": {}},
                    },
                },
            },
        })
    }

    fn f(key: &str) -> String {
        format!("f:{key}")
    }

    /// The live Deployment: what was applied, the server's defaults, a controller's fields.
    fn live() -> Value {
        let mut live = applied();
        live["metadata"]["uid"] = json!("u-1");
        live["metadata"]["resourceVersion"] = json!("7");
        live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("1");
        let container = &mut live["spec"]["template"]["spec"]["containers"][0];
        container["ports"][0]["protocol"] = json!("TCP");
        container["imagePullPolicy"] = json!("Always");
        live["spec"]["strategy"] = json!({"type": "RollingUpdate"});
        live["status"] = json!({"replicas": 1});
        live["metadata"]["managedFields"] = json!([
            {"manager": MANAGER, "operation": "Apply", "apiVersion": "apps/v1",
             "fieldsType": "FieldsV1", "fieldsV1": umbrella_fields()},
            {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
             "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:deployment.kubernetes.io/revision": {}}}}},
            {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
             "subresource": "status", "fieldsV1": {"f:status": {"f:replicas": {}}}},
        ]);
        live
    }

    fn ours(live: &mut Value) -> &mut Value {
        &mut live["metadata"]["managedFields"][0]["fieldsV1"]
    }

    #[test]
    fn an_object_as_applied_with_defaults_and_controller_fields_is_unchanged() {
        assert_eq!(difference(&live(), &applied(), MANAGER), None);
    }

    #[test]
    fn a_new_state_commit_alone_changes_nothing() {
        let mut applied = applied();
        applied["metadata"]["annotations"][COMMIT_ANNOTATION] = json!("c3");
        assert_eq!(difference(&live(), &applied, MANAGER), None);
    }

    #[test]
    fn a_value_changed_by_hand_is_a_difference() {
        let mut live = live();
        live["spec"]["replicas"] = json!(3);
        let why = difference(&live, &applied(), MANAGER).expect("a difference");
        assert!(why.contains(".spec.replicas"), "{why}");
    }

    #[test]
    fn a_new_value_in_the_state_is_a_difference() {
        let mut applied = applied();
        applied["spec"]["template"]["spec"]["containers"][0]["image"] = json!("y");
        let why = difference(&live(), &applied, MANAGER).expect("a difference");
        assert!(why.contains("containers.0.image"), "{why}");
    }

    #[test]
    fn a_field_another_manager_took_is_a_difference() {
        // `kubectl scale` took replicas: the server moved its ownership away from umbrella.
        let mut live = live();
        ours(&mut live)["f:spec"]
            .as_object_mut()
            .unwrap()
            .remove("f:replicas");
        assert!(difference(&live, &applied(), MANAGER).is_some());
    }

    #[test]
    fn a_field_removed_by_hand_is_a_difference() {
        let mut live = live();
        live["metadata"]["labels"] = json!({});
        ours(&mut live)["f:metadata"]["f:labels"] = json!({});
        assert!(difference(&live, &applied(), MANAGER).is_some());
    }

    #[test]
    fn a_field_the_state_no_longer_sets_is_a_difference() {
        let mut applied = applied();
        applied["spec"].as_object_mut().unwrap().remove("replicas");
        let why = difference(&live(), &applied, MANAGER).expect("a difference");
        assert!(why.contains("replicas"), "{why}");
    }

    #[test]
    fn a_field_shared_with_another_manager_is_a_difference() {
        let mut live = live();
        let entries = live["metadata"]["managedFields"].as_array_mut().unwrap();
        entries.push(
            json!({"manager": "helm", "operation": "Apply", "apiVersion": "apps/v1",
            "fieldsV1": {"f:spec": {"f:replicas": {}}}}),
        );
        let why = difference(&live, &applied(), MANAGER).expect("a difference");
        assert!(why.contains("helm"), "{why}");
    }

    #[test]
    fn list_members_added_removed_or_reordered_are_differences() {
        let mut added = live();
        let containers = &mut added["spec"]["template"]["spec"]["containers"];
        containers
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar"}));
        assert!(difference(&added, &applied(), MANAGER).is_some());

        let mut reordered = applied();
        reordered["spec"]["template"]["spec"]["finalizersLike"] = json!(["q", "p"]);
        assert!(difference(&live(), &reordered, MANAGER).is_some());

        let mut atomic = applied();
        atomic["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["a"]);
        assert!(difference(&live(), &atomic, MANAGER).is_some());
    }

    #[test]
    fn an_atomic_map_must_be_equal_whole() {
        let mut live = live();
        live["spec"]["selector"]["matchLabels"]["extra"] = json!("x");
        assert!(difference(&live, &applied(), MANAGER).is_some());
    }

    #[test]
    fn without_umbrella_s_apply_entry_nothing_is_proven() {
        let mut live = live();
        live["metadata"]["managedFields"][0]["manager"] = json!("kubectl");
        assert!(difference(&live, &applied(), MANAGER).is_some());
        let mut update = self::live();
        update["metadata"]["managedFields"][0]["operation"] = json!("Update");
        assert!(difference(&update, &applied(), MANAGER).is_some());
    }

    #[test]
    fn another_api_version_or_a_deletion_is_a_difference() {
        let mut live = live();
        live["metadata"]["managedFields"][0]["apiVersion"] = json!("apps/v1beta1");
        assert!(difference(&live, &applied(), MANAGER).is_some());
        let mut deleting = self::live();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(difference(&deleting, &applied(), MANAGER).is_some());
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(equal(&json!(1), &json!(1.0)));
        assert!(!equal(&json!(1), &json!("1")));
        assert!(!equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!equal(
            &json!(9_007_199_254_740_993_u64),
            &json!(9_007_199_254_740_992_u64)
        ));
    }
}
