//! What charts see of a cluster through `.Capabilities` when `helm template` has none: the
//! Kubernetes version and the API versions it serves. The state records what the
//! environment's cluster offered when a render last reached it
//! (`umbrella-state/<env>/capabilities.yaml`), so a render without that cluster (CI, a laptop
//! offline) renders for the same cluster, byte for byte.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::environments::{api_version_entry, kube_version};
use super::yaml::{self, YamlError};

/// A cluster's Kubernetes version and API versions (`group/version` and `group/version/Kind`,
/// as helm lists a live cluster's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterCapabilities {
    /// The kube context the cluster was asked through.
    pub context: String,
    pub kube_version: String,
    pub api_versions: BTreeSet<String>,
}

impl ClusterCapabilities {
    /// The recorded capabilities of an environment, if a render recorded them.
    pub fn read(path: &Path) -> Result<Option<Self>, YamlError> {
        if !path.is_file() {
            return Ok(None);
        }
        let recorded: ClusterCapabilities = yaml::read_single(path)?;
        let mut problems: Vec<String> = kube_version(&recorded.kube_version)
            .err()
            .map(|e| format!("kubeVersion: {e}"))
            .into_iter()
            .collect();
        problems.extend(
            recorded
                .api_versions
                .iter()
                .filter_map(|v| api_version_entry(v).err())
                .map(|e| format!("apiVersions: {e}")),
        );
        if problems.is_empty() {
            Ok(Some(recorded))
        } else {
            Err(YamlError::invalid(path, problems.join("; ")))
        }
    }

    /// The file's text: sorted, so the same cluster gives the same bytes.
    pub fn to_yaml(&self) -> String {
        let mut text = String::from(
            "# What the environment's cluster offered charts when `umbrella render` last reached it:\n# renders without that cluster render for these.\n",
        );
        text.push_str(&format!(
            "context: {}\nkubeVersion: {}\napiVersions:\n",
            yaml_string(&self.context),
            self.kube_version
        ));
        for api in &self.api_versions {
            text.push_str(&format!("  - {api}\n"));
        }
        text
    }
}

/// A context name as a YAML string, always quoted (JSON's quoting is YAML's): a context may
/// be named `true` or `1.30`.
fn yaml_string(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_sorted_and_checks_what_it_reads() {
        let capabilities = ClusterCapabilities {
            context: "prod: eu".into(),
            kube_version: "v1.34.4".into(),
            api_versions: ["v1", "apps/v1/Deployment", "apps/v1"]
                .into_iter()
                .map(String::from)
                .collect(),
        };
        let text = capabilities.to_yaml();
        assert!(text.contains("context: \"prod: eu\"\n"), "{text}");
        assert!(text.ends_with("apiVersions:\n  - apps/v1\n  - apps/v1/Deployment\n  - v1\n"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capabilities.yaml");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(
            ClusterCapabilities::read(&path).unwrap(),
            Some(capabilities)
        );
        assert_eq!(
            ClusterCapabilities::read(&dir.path().join("none")).unwrap(),
            None
        );
        std::fs::write(
            &path,
            "context: x\nkubeVersion: latest\napiVersions: [Apps/v1]\n",
        )
        .unwrap();
        let error = ClusterCapabilities::read(&path).unwrap_err().to_string();
        assert!(
            error.contains("kubeVersion: `latest`") && error.contains("apiVersions: `Apps/v1`"),
            "{error}"
        );
    }
}
