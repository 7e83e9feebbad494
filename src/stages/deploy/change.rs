//! What a deploy would change, as pure functions over data: the live object against the
//! server-side dry run of the state's object, without the fields the server or umbrella's
//! bookkeeping own, Secret data masked.

use serde_json::{Map, Value};

use super::outcome::Op;
use super::request::COMMIT_ANNOTATION;
use super::strategy::NONCE;
use crate::formats::manifest;
use crate::formats::secrets::mask_secret_data;

/// Metadata the API server sets: never part of what a deploy changes.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
];

/// Annotations that are not content: umbrella's record of the state commit, kapp's nonce (new
/// on every deploy), and kubectl's client-side apply copy (which holds a Secret's data in plain text).
const BOOKKEEPING_ANNOTATIONS: &[&str] = &[
    COMMIT_ANNOTATION,
    NONCE,
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// One object's change: what a deploy does with it and the unified diff of its YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub op: Op,
    /// Empty when nothing changes.
    pub diff: String,
}

/// The change from `live` (absent: the object is created) to `after`: the server's dry-run
/// answer for an update, the object as umbrella applies it for a create (so server defaults
/// stay out of it).
pub fn change(label: &str, live: Option<&Value>, after: &Value) -> Change {
    let mut before = live.map(comparable);
    let mut after = comparable(after);
    mask_secret_data(before.as_mut(), &mut after);
    let op = match &before {
        None => Op::Create,
        Some(before) if *before == after => Op::Unchanged,
        Some(_) => Op::Update,
    };
    let diff = if op == Op::Unchanged {
        String::new()
    } else {
        unified(label, before.as_ref(), &after)
    };
    Change { op, diff }
}

/// The object without status, server-set metadata and bookkeeping annotations.
pub fn comparable(value: &Value) -> Value {
    let mut value = value.clone();
    if let Some(object) = value.as_object_mut() {
        object.remove("status");
    }
    if let Some(metadata) = value["metadata"].as_object_mut() {
        for field in SERVER_METADATA {
            metadata.remove(*field);
        }
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            for annotation in BOOKKEEPING_ANNOTATIONS {
                annotations.remove(*annotation);
            }
        }
        if metadata
            .get("annotations")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
        {
            metadata.remove("annotations");
        }
    }
    value
}

/// A unified diff of the objects' YAML, headed by `label`.
fn unified(label: &str, before: Option<&Value>, after: &Value) -> String {
    let before = before.map(manifest::to_yaml).unwrap_or_default();
    let after = manifest::to_yaml(after);
    similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("live {label}"), &format!("state {label}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live_config_map(value: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": "c", "namespace": "n", "uid": "u-1", "resourceVersion": "7",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{"manager": "umbrella"}],
                "annotations": {COMMIT_ANNOTATION: "aaa"},
            },
            "data": {"k": value, "other": "same"},
        })
    }

    #[test]
    fn server_fields_and_bookkeeping_do_not_count_as_changes() {
        let live = live_config_map("v");
        let mut after = live_config_map("v");
        after["metadata"]["resourceVersion"] = json!("8");
        after["metadata"]["annotations"][COMMIT_ANNOTATION] = json!("bbb");
        after["status"] = json!({"x": 1});
        assert_eq!(change("c", Some(&live), &after).op, Op::Unchanged);
    }

    #[test]
    fn an_update_shows_exactly_the_changed_field() {
        let live = live_config_map("v");
        let after = live_config_map("w");
        let change = change("ConfigMap/c", Some(&live), &after);
        assert_eq!(change.op, Op::Update);
        let changed: Vec<&str> = change
            .diff
            .lines()
            .filter(|l| {
                (l.starts_with('+') || l.starts_with('-'))
                    && !l.starts_with("+++")
                    && !l.starts_with("---")
            })
            .collect();
        assert_eq!(changed, ["-  k: v", "+  k: w"], "{}", change.diff);
        assert!(!change.diff.contains("managedFields"), "{}", change.diff);
    }

    #[test]
    fn a_create_shows_the_whole_object() {
        let change = change("c", None, &live_config_map("v"));
        assert_eq!(change.op, Op::Create);
        assert!(change.diff.contains("+  k: v"), "{}", change.diff);
        assert!(!change.diff.contains("uid"), "{}", change.diff);
    }

    #[test]
    fn secret_values_are_masked_but_a_change_still_shows() {
        let secret = |password: &str| {
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "s", "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": format!("{{\"data\":\"{password}\"}}"),
                }},
                "data": {"password": password, "user": "YWRtaW4="},
            })
        };
        let change = change(
            "Secret/s",
            Some(&secret("aHVudGVyMg==")),
            &secret("czNjcjN0"),
        );
        assert_eq!(change.op, Op::Update);
        for plain in ["aHVudGVyMg==", "czNjcjN0", "YWRtaW4="] {
            assert!(!change.diff.contains(plain), "{}", change.diff);
        }
        assert!(
            change.diff.contains(r#"-  password: "(value #1 masked)""#),
            "{}",
            change.diff
        );
        assert!(
            change.diff.contains(r#"+  password: "(value #2 masked)""#),
            "{}",
            change.diff
        );
        assert!(
            change.diff.contains(r#"   user: "(value #1 masked)""#),
            "{}",
            change.diff
        );
    }

    #[test]
    fn equal_values_of_two_keys_are_not_told_apart_from_different_ones() {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"a": "c2FtZQ==", "b": "c2FtZQ==", "c": "b3RoZXI="},
        });
        let change = change("Secret/s", None, &secret);
        for key in ["a", "b", "c"] {
            assert!(
                change
                    .diff
                    .contains(&format!(r#"+  {key}: "(value #1 masked)""#)),
                "{}",
                change.diff
            );
        }
    }

    #[test]
    fn secret_data_that_is_not_a_map_is_masked_whole() {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "stringData": "password=hunter2",
        });
        let change = change("Secret/s", None, &secret);
        assert!(!change.diff.contains("hunter2"), "{}", change.diff);
    }

    #[test]
    fn secret_like_kinds_are_masked_in_their_spec() {
        let sealed = json!({
            "apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret",
            "metadata": {"name": "s"},
            "spec": {"encryptedData": {"password": "AgBy3i4OJSWK"}},
        });
        let change = change("SealedSecret/s", None, &sealed);
        assert!(!change.diff.contains("AgBy3i4OJSWK"), "{}", change.diff);
    }

    #[test]
    fn a_config_map_is_not_masked() {
        let change = change("c", None, &live_config_map("visible"));
        assert!(change.diff.contains("visible"), "{}", change.diff);
    }
}
