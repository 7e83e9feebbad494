//! The umbrella chart: `Chart.yaml` with one dependency per service, and its values files.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::formats::yaml::{self, YamlError};

/// The fields of `Chart.yaml` umbrella relies on; others (description, maintainers, ...) are
/// allowed and ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartMetadata {
    pub api_version: String,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
}

/// A subchart: one app of the umbrella.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    pub name: String,
    pub version: Option<String>,
    pub repository: Option<String>,
    pub alias: Option<String>,
    pub condition: Option<String>,
}

impl Dependency {
    /// The local directory of a `file://` (or repository-less) dependency.
    pub fn local_path(&self, chart_dir: &Path) -> Option<PathBuf> {
        match self.repository.as_deref() {
            None | Some("") => Some(chart_dir.join("charts").join(&self.name)),
            Some(repo) => repo.strip_prefix("file://").map(|p| chart_dir.join(p)),
        }
    }
}

/// A loaded and checked umbrella chart.
#[derive(Debug, Clone)]
pub struct UmbrellaChart {
    pub dir: PathBuf,
    pub metadata: ChartMetadata,
    /// Environments that have a `values-<env>.yaml`, sorted.
    pub environments: Vec<String>,
}

impl UmbrellaChart {
    /// Reads `Chart.yaml`, checks that local subcharts exist and that every values file parses.
    pub fn load(dir: &Path) -> Result<Self, YamlError> {
        let chart_file = dir.join("Chart.yaml");
        let metadata: ChartMetadata = yaml::read_single(&chart_file)?;
        if metadata.api_version != "v2" {
            return Err(YamlError::invalid(
                &chart_file,
                format!(
                    "apiVersion `{}`: umbrella needs a Helm 3 chart (`apiVersion: v2`)",
                    metadata.api_version
                ),
            ));
        }
        for dependency in &metadata.dependencies {
            if let Some(path) = dependency.local_path(dir)
                && !path.join("Chart.yaml").is_file()
            {
                return Err(YamlError::invalid(
                    &chart_file,
                    format!(
                        "dependency {}: no chart at {}",
                        dependency.name,
                        path.display()
                    ),
                ));
            }
        }
        let environments = check_values_files(dir)?;
        Ok(UmbrellaChart {
            dir: dir.to_path_buf(),
            metadata,
            environments,
        })
    }
}

/// Parses `values.yaml` and every `values-<env>.yaml`; returns the environment names.
fn check_values_files(dir: &Path) -> Result<Vec<String>, YamlError> {
    let entries = std::fs::read_dir(dir).map_err(|source| YamlError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut environments = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let env = name
            .strip_prefix("values-")
            .and_then(|rest| rest.strip_suffix(".yaml"));
        if name == "values.yaml" || env.is_some() {
            yaml::read_documents::<yaml_serde::Mapping>(&entry.path())?;
        }
        environments.extend(env.map(str::to_string));
    }
    environments.sort();
    Ok(environments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::write;

    fn chart_with_subchart() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "Chart.yaml",
            "apiVersion: v2\nname: shop\nversion: 0.1.0\ndescription: x\ndependencies:\n- name: order-service\n  version: 0.1.0\n  repository: file://charts/order-service\n",
        );
        write(
            dir.path(),
            "charts/order-service/Chart.yaml",
            "apiVersion: v2\nname: order-service\nversion: 0.1.0\n",
        );
        write(dir.path(), "values.yaml", "a: 1\n");
        write(dir.path(), "values-production.yaml", "a: 2\n");
        write(dir.path(), "values-staging.yaml", "a: 3\n");
        dir
    }

    #[test]
    fn loads_dependencies_and_environments() {
        let dir = chart_with_subchart();
        let chart = UmbrellaChart::load(dir.path()).unwrap();
        assert_eq!(chart.metadata.name, "shop");
        assert_eq!(chart.metadata.dependencies[0].name, "order-service");
        assert_eq!(chart.environments, vec!["production", "staging"]);
    }

    #[test]
    fn missing_subchart_is_named() {
        let dir = chart_with_subchart();
        std::fs::remove_dir_all(dir.path().join("charts")).unwrap();
        let err = UmbrellaChart::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("Chart.yaml: dependency order-service: no chart at"),
            "{err}"
        );
    }

    #[test]
    fn malformed_chart_yaml_names_line() {
        let dir = chart_with_subchart();
        write(
            dir.path(),
            "Chart.yaml",
            "apiVersion: v2\nname: shop\nversion: [\n",
        );
        let err = UmbrellaChart::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("Chart.yaml:"), "{err}");
        assert!(err.contains(":3:") || err.contains(":4:"), "{err}");
    }

    #[test]
    fn malformed_values_file_is_named() {
        let dir = chart_with_subchart();
        write(dir.path(), "values-staging.yaml", "a: 1\n b: 2\n");
        let err = UmbrellaChart::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("values-staging.yaml:2:"), "{err}");
    }

    #[test]
    fn helm_2_chart_is_refused() {
        let dir = chart_with_subchart();
        write(
            dir.path(),
            "Chart.yaml",
            "apiVersion: v1\nname: shop\nversion: 0.1.0\n",
        );
        let err = UmbrellaChart::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("apiVersion `v1`"), "{err}");
    }
}
