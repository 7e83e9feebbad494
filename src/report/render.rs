//! `umbrella render`: apps, pinned images, where the state went.

use std::io::Write;

use crate::stages::render::Rendered;
use crate::stages::render::capabilities::{ClusterSource, Seen};

use super::output::{OutputFormat, write_json, write_retries};

/// Writes what a render produced: apps, pinned images, where it went.
pub fn write_render(
    out: &mut impl Write,
    rendered: &Rendered,
    format: OutputFormat,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        return write_json(out, rendered);
    }
    for app in &rendered.apps {
        writeln!(out, "app {:<24} {} objects", app.name, app.objects)?;
    }
    for image in &rendered.images {
        writeln!(out, "image {} -> {}", image.image, image.new_image)?;
    }
    write_retries(out, &rendered.retries)?;
    writeln!(out, "{}", capabilities_line(&rendered.capabilities))?;
    writeln!(
        out,
        "rendered {} into {} ({} registry lookups)",
        rendered.env,
        rendered.state_dir.display(),
        rendered.registry_lookups
    )
}

/// What charts saw of the cluster, and where it came from.
fn capabilities_line(seen: &Seen) -> String {
    let version = seen.kube_version.as_deref().unwrap_or("helm's default");
    let source = match &seen.cluster {
        ClusterSource::Asked(context) => format!("asked of kube context {context}"),
        ClusterSource::Recorded(None) => "as capabilities.yaml recorded".to_string(),
        ClusterSource::Recorded(Some(why)) => {
            format!("as capabilities.yaml recorded; the cluster did not answer: {why}")
        }
        ClusterSource::Nothing(None) => "no cluster named or recorded".to_string(),
        ClusterSource::Nothing(Some(why)) => {
            format!("none recorded; the cluster did not answer: {why}")
        }
    };
    format!(
        "charts saw Kubernetes {version} and {} extra API versions ({source})",
        seen.api_versions
    )
}
