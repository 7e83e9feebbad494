//! `umbrella render`: apps, pinned images, where the state went.

use std::io::Write;

use crate::stages::render::capabilities::{ClusterSource, Seen};
use crate::stages::render::{AppSummary, Rendered};

use super::output::{OutputFormat, name_width, write_json, write_retries};

/// Writes what a render produced: apps, pinned images, where it went.
pub fn write_render(
    out: &mut impl Write,
    rendered: &Rendered,
    format: OutputFormat,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        return write_json(out, rendered);
    }
    write_apps(out, &rendered.apps)?;
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

/// One line per app with its count of objects, the counts aligned however long the names.
fn write_apps(out: &mut impl Write, apps: &[AppSummary]) -> std::io::Result<()> {
    let width = name_width(apps.iter().map(|a| a.name.as_str()));
    for app in apps {
        writeln!(out, "app {:<width$} {} objects", app.name, app.objects)?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_table_fits_names_over_32_characters() {
        let app = |name: &str, objects| AppSummary {
            name: name.to_string(),
            objects,
        };
        let long = "payments-reconciliation-worker-eu-west"; // 38 characters
        let apps = [app("shop", 3), app(long, 7), app("order-service", 4)];
        let mut out = Vec::new();
        write_apps(&mut out, &apps).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        // The counts start in one column: one space after the longest name.
        let column = format!("app {long} ").len();
        for line in &lines {
            assert_eq!(line.len(), column + "7 objects".len(), "{text}");
            assert!(line[column..].ends_with(" objects"), "{text}");
            assert!(line[column - 1..].starts_with(' '), "{text}");
        }
        assert_eq!(lines[1], format!("app {long} 7 objects"));
    }
}
