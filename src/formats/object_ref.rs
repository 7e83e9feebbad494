//! The identity of a Kubernetes object: API version, kind, namespace and name.

use serde_json::Value;

use super::names;

/// The identity of an object in the cluster.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn of(value: &Value) -> Self {
        ObjectRef {
            api_version: value["apiVersion"].as_str().unwrap_or_default().to_string(),
            kind: value["kind"].as_str().unwrap_or_default().to_string(),
            namespace: value["metadata"]["namespace"].as_str().map(str::to_string),
            name: value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        }
    }

    /// Where the identity breaks Kubernetes' naming rules, each problem naming its field.
    pub fn problems(&self) -> Vec<String> {
        let namespace = self.namespace.as_deref().map(names::dns_label);
        [
            ("apiVersion", Some(names::api_version(&self.api_version))),
            ("kind", Some(names::kind(&self.kind))),
            ("metadata.name", Some(names::object_name(&self.name))),
            ("metadata.namespace", namespace),
        ]
        .into_iter()
        .filter_map(|(field, result)| Some(format!("field {field}: {}", result?.err()?)))
        .collect()
    }

    /// The API group (empty for the core group).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// The identity across API versions: group, kind, namespace, name.
    pub fn key(&self) -> (String, String, Option<String>, String) {
        (
            self.group().to_string(),
            self.kind.clone(),
            self.namespace.clone(),
            self.name.clone(),
        )
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{} in {ns}", self.kind, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_field() {
        let object = serde_json::json!({"apiVersion": "v1", "kind": "../Secret",
            "metadata": {"name": "../../../../tmp/x", "namespace": "Bad_NS"}});
        let problems = ObjectRef::of(&object).problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("field kind: `../Secret`"),
            "{problems:?}"
        );
        assert!(problems[1].starts_with("field metadata.name: `../../../../tmp/x`"));
        assert!(problems[2].starts_with("field metadata.namespace: `Bad_NS`"));
        let fine = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole", "metadata": {"name": "system:view"}});
        assert!(ObjectRef::of(&fine).problems().is_empty());
    }
}
