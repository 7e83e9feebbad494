//! How an object that cannot simply be updated is handled, as pure decisions over the state's
//! object and the API server's answer: kapp's update strategies (replace on an immutable
//! field, or always), its nonce, and which field managers' edits a deploy takes back.

use std::collections::BTreeSet;

use serde_json::Value;

/// kapp's annotation choosing how an object is updated.
pub const UPDATE_STRATEGY: &str = "kapp.k14s.io/update-strategy";
/// kapp's annotation whose value becomes unique on every deploy.
pub const NONCE: &str = "kapp.k14s.io/nonce";

/// `kapp.k14s.io/update-strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpdateStrategy {
    /// Server-side apply; an immutable field refuses the deploy.
    #[default]
    Update,
    /// Apply; when an immutable field changes, delete the object, wait until it is gone,
    /// create it.
    FallbackOnReplace,
    /// Delete and create on every deploy.
    AlwaysReplace,
}

impl UpdateStrategy {
    /// The object's strategy; an unknown value names the annotation.
    pub fn of(object: &Value) -> Result<Self, String> {
        match object["metadata"]["annotations"][UPDATE_STRATEGY].as_str() {
            None | Some("") => Ok(UpdateStrategy::Update),
            Some("fallback-on-replace") => Ok(UpdateStrategy::FallbackOnReplace),
            Some("always-replace") => Ok(UpdateStrategy::AlwaysReplace),
            Some(other) => Err(format!(
                "annotation {UPDATE_STRATEGY}: unknown strategy `{other}` (fallback-on-replace, always-replace)"
            )),
        }
    }
}

/// The API server refused an update because it changes a field that cannot change once set
/// (a Job's template, a selector, a Service's clusterIP, a StatefulSet's volumeClaimTemplates).
pub fn is_immutable_change(message: &str) -> bool {
    message.contains("field is immutable")
        || message.contains("may not change once set")
        || (message.contains("updates to") && message.contains("are forbidden"))
}

/// The message for an immutable change without a strategy: the way forward.
pub fn immutable_advice(message: &str) -> String {
    format!(
        "{message} (a field that cannot change: annotate the object {UPDATE_STRATEGY}: fallback-on-replace to delete and re-create it)"
    )
}

/// The field managers a server-side apply conflict names (`conflict with "kubectl-edit"`).
pub fn conflict_managers(message: &str) -> BTreeSet<String> {
    message
        .match_indices("with \"")
        .filter_map(|(at, found)| {
            let rest = &message[at + found.len()..];
            rest.find('"').map(|end| rest[..end].to_string())
        })
        .collect()
}

/// Managers of a person's hand edits: a deploy takes their fields back, as git wins over
/// them. A controller's manager (an HPA's, an operator's) is not one of them.
const PERSONS_TOOLS: &[&str] = &[
    "kubectl",
    "kubectl-edit",
    "kubectl-patch",
    "kubectl-scale",
    "kubectl-set",
    "kubectl-label",
    "kubectl-annotate",
    "kubectl-client-side-apply",
    "before-first-apply",
];

/// What to do with a conflict: `Ok(note)` when every manager is a person's tool (the deploy
/// takes the fields back, saying so), else `Err` naming the other managers.
pub fn repair(message: &str) -> Result<String, Vec<String>> {
    let managers = conflict_managers(message);
    let others: Vec<String> = managers
        .iter()
        .filter(|m| !PERSONS_TOOLS.contains(&m.as_str()))
        .cloned()
        .collect();
    if managers.is_empty() || !others.is_empty() {
        return Err(others);
    }
    let names: Vec<&str> = managers.iter().map(String::as_str).collect();
    Ok(format!(
        "drift repaired: fields set by hand ({}) taken back",
        names.join(", ")
    ))
}

/// The object has a nonce: it changes on every deploy.
pub fn has_nonce(object: &Value) -> bool {
    !object["metadata"]["annotations"][NONCE].is_null()
}

/// The object with its nonce, if it has one, set to `nonce`.
pub fn with_nonce(object: &mut Value, nonce: &str) {
    // `get_mut`, not indexing: indexing would insert a null `annotations`.
    if let Some(value) = object
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(|a| a.get_mut(NONCE))
    {
        *value = Value::String(nonce.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategies_are_read_and_a_typo_is_named() {
        let with = |s: &str| json!({"metadata": {"annotations": {UPDATE_STRATEGY: s}}});
        assert_eq!(UpdateStrategy::of(&json!({})), Ok(UpdateStrategy::Update));
        assert_eq!(
            UpdateStrategy::of(&with("fallback-on-replace")),
            Ok(UpdateStrategy::FallbackOnReplace)
        );
        assert_eq!(
            UpdateStrategy::of(&with("always-replace")),
            Ok(UpdateStrategy::AlwaysReplace)
        );
        assert!(
            UpdateStrategy::of(&with("replace"))
                .unwrap_err()
                .contains("`replace`")
        );
    }

    #[test]
    fn immutable_changes_as_the_api_server_words_them() {
        for message in [
            "Job.batch \"m\" is invalid: spec.template: Invalid value: ...: field is immutable",
            "Service \"s\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.9\"}: may not change once set",
            "StatefulSet.apps \"db\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ] {
            assert!(is_immutable_change(message), "{message}");
        }
        assert!(!is_immutable_change(
            "Deployment.apps \"d\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        ));
    }

    #[test]
    fn hand_edits_are_taken_back_and_controllers_refused() {
        let hand = "Apply failed with 2 conflicts: conflicts with \"kubectl-scale\" using apps/v1:\n- .spec.replicas\nconflicts with \"kubectl-edit\" using apps/v1:\n- .metadata.labels.x";
        assert_eq!(
            conflict_managers(hand).into_iter().collect::<Vec<_>>(),
            ["kubectl-edit", "kubectl-scale"]
        );
        assert!(
            repair(hand)
                .unwrap()
                .contains("kubectl-edit, kubectl-scale")
        );
        let mixed = "Apply failed with 2 conflicts: conflict with \"kubectl-patch\" using v1: .data.a\nconflict with \"hpa-controller\" using apps/v1: .spec.replicas";
        assert_eq!(repair(mixed), Err(vec!["hpa-controller".to_string()]));
        assert_eq!(repair("Apply failed"), Err(Vec::new()));
    }

    #[test]
    fn a_nonce_is_filled_and_nothing_else_is_touched() {
        let mut object = json!({"metadata": {"annotations": {NONCE: "", "a": "b"}}});
        with_nonce(&mut object, "123");
        assert_eq!(object["metadata"]["annotations"][NONCE], "123");
        assert_eq!(object["metadata"]["annotations"]["a"], "b");
        let mut plain = json!({"metadata": {}});
        with_nonce(&mut plain, "123");
        assert_eq!(plain, json!({"metadata": {}}));
    }
}
