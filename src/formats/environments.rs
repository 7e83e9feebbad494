//! `umbrella.yaml`, the repository's settings per environment (in the spirit of helmfile's
//! environments): how its state is rendered (namespace, release name, values files, the
//! Kubernetes version and extra API versions charts see) and which kube context its cluster
//! is. Every field is optional; the file itself is too.
//!
//! ```yaml
//! environments:
//!   production:
//!     context: prod-eu
//!     namespace: shop
//!     release: shop
//!     values: [umbrella-chart/values-production.yaml, values/prod-secrets.yaml]
//!     kubeVersion: v1.34.2
//!     apiVersions: [monitoring.coreos.com/v1]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::layout;
use super::names;
use super::yaml::{self, YamlError};

/// One environment's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Environment {
    /// The kube context of the environment's cluster.
    pub context: Option<String>,
    /// The namespace of namespaced objects (default: the environment's name).
    pub namespace: Option<String>,
    /// helm's release name (default: the chart's name).
    pub release: Option<String>,
    /// Values files after the chart's `values.yaml`, relative to the repository root
    /// (default: `umbrella-chart/values-<env>.yaml` when it exists).
    pub values: Option<Vec<PathBuf>>,
    /// The Kubernetes version `helm template` renders for (`.Capabilities.KubeVersion`).
    pub kube_version: Option<String>,
    /// API versions charts may count on beyond Kubernetes' own (`.Capabilities.APIVersions`):
    /// `group/version` or `group/version/Kind`.
    #[serde(default)]
    pub api_versions: Vec<String>,
}

/// The repository's `umbrella.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    #[serde(default)]
    pub environments: BTreeMap<String, Environment>,
}

impl Environment {
    /// The values files an environment renders with, in order, those that exist: the chart's
    /// `values.yaml`, then `values` (relative to `root`), else `values-<env>.yaml`.
    pub fn values_files(&self, root: &Path, chart_dir: &Path, env: &str) -> Vec<PathBuf> {
        let env_values = match &self.values {
            Some(files) => files.iter().map(|f| root.join(f)).collect(),
            None => vec![chart_dir.join(format!("values-{env}.yaml"))],
        };
        std::iter::once(chart_dir.join("values.yaml"))
            .chain(env_values)
            .filter(|f| f.is_file())
            .collect()
    }
}

impl RepositoryConfig {
    /// Reads `umbrella.yaml` at the repository root; no file is an empty configuration.
    /// Every field is checked, and each problem names the field.
    pub fn load(root: &Path) -> Result<Self, YamlError> {
        let path = root.join(layout::CONFIG_FILE);
        if !path.exists() {
            return Ok(RepositoryConfig::default());
        }
        let config: RepositoryConfig = yaml::read_single(&path)?;
        let problems = config.problems(root);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(YamlError::invalid(&path, problems.join("; ")))
        }
    }

    /// The settings of `env` (none when it is not listed).
    pub fn environment(&self, env: &str) -> Environment {
        self.environments.get(env).cloned().unwrap_or_default()
    }

    fn problems(&self, root: &Path) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, env) in &self.environments {
            let field = |f: &str| format!("environments.{name}.{f}");
            if let Err(e) = names::dns_label(name) {
                problems.push(format!("environments.{name}: the environment's name {e}"));
            }
            if let Some(namespace) = &env.namespace
                && let Err(e) = names::dns_label(namespace)
            {
                problems.push(format!("{}: {e}", field("namespace")));
            }
            if env.context.as_deref() == Some("") {
                problems.push(format!("{}: empty", field("context")));
            }
            if let Some(version) = &env.kube_version
                && let Err(e) = kube_version(version)
            {
                problems.push(format!("{}: {e}", field("kubeVersion")));
            }
            for api in &env.api_versions {
                if let Err(e) = api_version_entry(api) {
                    problems.push(format!("{}: {e}", field("apiVersions")));
                }
            }
            for file in env.values.iter().flatten() {
                if !layout::stays_below(file) {
                    problems.push(format!(
                        "{}: `{}` must be a path inside the repository",
                        field("values"),
                        file.display()
                    ));
                } else if !root.join(file).is_file() {
                    problems.push(format!(
                        "{}: `{}` does not exist",
                        field("values"),
                        file.display()
                    ));
                }
            }
        }
        problems
    }
}

/// A Kubernetes version as helm takes it: `v1.34`, `1.34.2`, `v1.34.2`.
pub fn kube_version(value: &str) -> Result<(), String> {
    let digits = value.strip_prefix('v').unwrap_or(value);
    let parts: Vec<&str> = digits.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if (2..=3).contains(&parts.len()) && parts.iter().all(numeric) {
        Ok(())
    } else {
        Err(format!(
            "`{value}` is not a Kubernetes version such as v1.34.2"
        ))
    }
}

/// A Kind is CamelCase: `apps/v1/service` is a typo, and would never match.
fn capitalized(kind: &str) -> Result<(), String> {
    if kind.starts_with(|c: char| c.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!("kind `{kind}` must start with a capital letter"))
    }
}

/// An entry of `.Capabilities.APIVersions`: `version`, `group/version`, `version/Kind` (the
/// core group) or `group/version/Kind`.
pub fn api_version_entry(value: &str) -> Result<(), String> {
    let parts: Vec<&str> = value.split('/').collect();
    let checked = match parts.as_slice() {
        [version] => names::api_version(version),
        // The core group's `v1/Pod` has two parts too: a Kind starts with a capital.
        [version, kind] if kind.starts_with(|c: char| c.is_ascii_uppercase()) => {
            names::api_version(version).and_then(|()| names::kind(kind))
        }
        [group, version] => names::api_version(&format!("{group}/{version}")),
        [group, version, kind] => names::api_version(&format!("{group}/{version}"))
            .and_then(|()| names::kind(kind))
            .and_then(|()| capitalized(kind)),
        _ => Err("too many parts".to_string()),
    };
    checked.map_err(|e| {
        format!("`{value}` is not an API version (group/version or group/version/Kind): {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, files: &[&str]) -> Result<RepositoryConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(layout::CONFIG_FILE), text).unwrap();
        for file in files {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "{}\n").unwrap();
        }
        RepositoryConfig::load(dir.path()).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_every_setting() {
        let config = load(
            "environments:\n  prod:\n    context: prod-eu\n    namespace: shop\n    release: web\n    values: [v/prod.yaml]\n    kubeVersion: v1.34.2\n    apiVersions: [monitoring.coreos.com/v1, monitoring.coreos.com/v1/ServiceMonitor]\n",
            &["v/prod.yaml"],
        )
        .unwrap();
        let prod = config.environment("prod");
        assert_eq!(prod.context.as_deref(), Some("prod-eu"));
        assert_eq!(prod.values, Some(vec![PathBuf::from("v/prod.yaml")]));
        assert_eq!(prod.kube_version.as_deref(), Some("v1.34.2"));
        assert_eq!(prod.api_versions.len(), 2);
        assert_eq!(config.environment("dev"), Environment::default());
    }

    #[test]
    fn no_file_is_an_empty_configuration() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            RepositoryConfig::load(dir.path()).unwrap(),
            RepositoryConfig::default()
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let error = load(
            "environments:\n  Prod:\n    namespace: a_b\n    kubeVersion: latest\n    apiVersions: [monitoring.coreos.com/v1/service-monitor]\n    values: [../x.yaml, missing.yaml]\n",
            &[],
        )
        .unwrap_err();
        for expected in [
            "umbrella.yaml: environments.Prod: the environment's name",
            "environments.Prod.namespace: `a_b`",
            "environments.Prod.kubeVersion: `latest` is not a Kubernetes version",
            "environments.Prod.apiVersions: `monitoring.coreos.com/v1/service-monitor`",
            "environments.Prod.values: `../x.yaml` must be a path inside the repository",
            "environments.Prod.values: `missing.yaml` does not exist",
        ] {
            assert!(error.contains(expected), "{expected}: {error}");
        }
        let unknown = load("environments:\n  prod:\n    kubeversion: v1.30\n", &[]).unwrap_err();
        assert!(
            unknown.contains("umbrella.yaml") && unknown.contains("unknown field `kubeversion`"),
            "{unknown}"
        );
    }

    #[test]
    fn versions_as_helm_takes_them() {
        for good in ["v1.34", "1.34.2", "v1.34.2"] {
            assert!(kube_version(good).is_ok(), "{good}");
        }
        for bad in ["", "v1", "1.x", "v1.34.2.1", "latest"] {
            assert!(kube_version(bad).is_err(), "{bad}");
        }
        for good in [
            "v1",
            "v1/Pod",
            "apps/v1",
            "monitoring.coreos.com/v1/ServiceMonitor",
        ] {
            assert!(api_version_entry(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b/c/d", "Apps/v1", "apps/v1/service"] {
            assert!(api_version_entry(bad).is_err(), "{bad}");
        }
    }
}
