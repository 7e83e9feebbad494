//! Splitting `helm template` output into apps: an object rendered from `charts/<sub>/` belongs to
//! app `<sub>`, an object of the umbrella chart's own templates to the app named after the chart.

use serde_json::Value;

use crate::formats::manifest::{self, ManifestError};
use crate::formats::object_ref::ObjectRef;

/// One object of helm's output, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedObject {
    pub app: String,
    /// helm's `# Source:` path, e.g. `shop/charts/order-service/templates/deployment.yaml`.
    pub source: String,
    pub value: Value,
}

impl RenderedObject {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    pub fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.value["metadata"]["namespace"].as_str()
    }

    /// `Kind/name`, for messages.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.kind(), self.name())
    }
}

/// helm output that is not a set of Kubernetes objects.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("helm output, {source_path}: {error}")]
    Yaml {
        source_path: String,
        error: ManifestError,
    },
    #[error("helm output, {source_path}: {what}")]
    Invalid { source_path: String, what: String },
}

/// Splits helm's output of the umbrella chart `chart` into objects, each with its app.
pub fn split(helm_output: &str, chart: &str) -> Result<Vec<RenderedObject>, SplitError> {
    let mut objects = Vec::new();
    for chunk in documents(helm_output) {
        let source = chunk
            .lines()
            .find_map(|line| line.strip_prefix("# Source: "))
            .unwrap_or("(no source)")
            .trim()
            .to_string();
        let values = manifest::parse_documents(chunk).map_err(|error| SplitError::Yaml {
            source_path: source.clone(),
            error,
        })?;
        for value in values {
            check_object(&value).map_err(|what| SplitError::Invalid {
                source_path: source.clone(),
                what,
            })?;
            objects.push(RenderedObject {
                app: app_of(&source, chart),
                source: source.clone(),
                value,
            });
        }
    }
    Ok(objects)
}

/// helm separates documents with `---` lines; each carries its own `# Source:` comment.
fn documents(text: &str) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            chunks.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    chunks.push(&text[start..]);
    chunks
        .into_iter()
        .filter(|c| !c.trim().is_empty())
        .collect()
}

fn check_object(value: &Value) -> Result<(), String> {
    if !value.is_object() {
        return Err("a document is not a Kubernetes object (a YAML map)".into());
    }
    for field in ["apiVersion", "kind"] {
        if value[field].as_str().is_none_or(str::is_empty) {
            return Err(format!("an object has no `{field}`"));
        }
    }
    if value["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{} has no `metadata.name` (generateName cannot be tracked across deploys)",
            value["kind"].as_str().unwrap_or_default()
        ));
    }
    let reference = ObjectRef::of(value);
    match reference.problems().first() {
        Some(problem) => Err(format!("{}/{}: {problem}", reference.kind, reference.name)),
        None => Ok(()),
    }
}

/// `shop/charts/order-service/templates/x.yaml` -> `order-service`; `shop/templates/x.yaml` and
/// `shop/crds/x.yaml` -> `shop`. A subchart's own subcharts stay in its app.
pub fn app_of(source: &str, chart: &str) -> String {
    let rest = source
        .strip_prefix(chart)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(source);
    match rest
        .strip_prefix("charts/")
        .and_then(|r| r.split('/').next())
    {
        Some(sub) if !sub.is_empty() => sub.to_string(),
        _ => chart.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELM: &str = "---\n# Source: shop/charts/order-service/templates/sa.yaml\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: order-service\n---\n# Source: shop/charts/user-service/charts/cache/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cache\ndata:\n  script: |\n    a\n    ---\n    b\n---\n# Source: shop/templates/platform.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: platform\n---\n# Source: shop/templates/empty.yaml\n---\n";

    #[test]
    fn splits_by_subchart() {
        let objects = split(HELM, "shop").unwrap();
        let apps: Vec<(&str, &str)> = objects.iter().map(|o| (o.app.as_str(), o.name())).collect();
        assert_eq!(
            apps,
            [
                ("order-service", "order-service"),
                ("user-service", "cache"),
                ("shop", "platform")
            ]
        );
        assert_eq!(
            objects[1].value["data"]["script"], "a\n---\nb\n",
            "an indented --- is content"
        );
    }

    #[test]
    fn objects_without_name_or_kind_are_refused() {
        let err = split("---\n# Source: shop/templates/x.yaml\napiVersion: v1\nkind: Pod\nmetadata:\n  generateName: x-\n", "shop").unwrap_err();
        assert!(
            err.to_string()
                .contains("shop/templates/x.yaml: Pod has no `metadata.name`"),
            "{err}"
        );
        let err = split("---\n# Source: shop/templates/x.yaml\n- a\n", "shop").unwrap_err();
        assert!(err.to_string().contains("not a Kubernetes object"), "{err}");
    }

    #[test]
    fn app_names() {
        assert_eq!(app_of("shop/charts/a/templates/x.yaml", "shop"), "a");
        assert_eq!(
            app_of("shop/charts/a/charts/b/templates/x.yaml", "shop"),
            "a"
        );
        assert_eq!(app_of("shop/templates/x.yaml", "shop"), "shop");
        assert_eq!(app_of("shop/crds/x.yaml", "shop"), "shop");
    }
}
