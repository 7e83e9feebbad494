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
    for secret in &rendered.encrypted_without_key {
        writeln!(
            out,
            "secret {secret}: encrypted anew without comparing with the committed file (no age key opens it)"
        )?;
    }
    writeln!(out, "{}", capabilities_line(&rendered.capabilities))?;
    writeln!(
        out,
        "rendered {} into {} ({} registry lookups)",
        rendered.env,
        rendered.state_dir.display(),
        rendered.registry_lookups
    )
}

/// `render --check`'s verdict when the state matched.
pub fn check_verdict(rendered: &Rendered) -> String {
    let dir = rendered.state_dir.display();
    if rendered.unverified_secrets.is_empty() {
        return format!("{dir} is up to date");
    }
    format!(
        "{dir} is up to date but for the values of these Secrets, not compared without an age key:\n  {}",
        rendered.unverified_secrets.join("\n  ")
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
