//! `umbrella build`: a line per image, then each failure with its last log lines.

use std::io::Write;

use crate::stages::build::{BuildReport, Outcome};
use crate::stages::ci::CiReport;

use super::output::{OutputFormat, write_json, write_retries};

/// Writes the build report: a line per image, then each failure with its last log lines.
pub fn write_build(
    out: &mut impl Write,
    report: &BuildReport,
    format: OutputFormat,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        return write_json(out, report);
    }
    let width = report
        .images
        .iter()
        .map(|i| i.image.len())
        .max()
        .unwrap_or(0);
    for image in &report.images {
        let outcome = match image.outcome {
            Outcome::Built => "built ",
            Outcome::Cached => "cached",
            Outcome::Failed => "FAILED",
        };
        let digest = image.digest.as_deref().unwrap_or("-");
        writeln!(
            out,
            "{outcome}  {:width$}  {}@{digest}  {:.1}s{}",
            image.image,
            image.repository,
            image.duration_ms as f64 / 1000.0,
            image
                .image_bytes
                .map(|b| format!("  {} image", human_bytes(b)))
                .unwrap_or_default()
        )?;
    }
    for image in report
        .images
        .iter()
        .filter(|i| i.outcome == Outcome::Failed)
    {
        writeln!(
            out,
            "\n{}: {}",
            image.image,
            image.error.as_deref().unwrap_or("failed")
        )?;
        for line in &image.log_tail {
            writeln!(out, "  | {line}")?;
        }
    }
    write_retries(out, &report.retries)?;
    match &report.lock {
        Some(lock) => writeln!(out, "images lock: {}", lock.display()),
        None => writeln!(out, "images lock not written: a build failed"),
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The one line `ci` ends with: what it built, rendered and for which environment.
pub fn ci_summary(done: &CiReport) -> String {
    let built = done
        .build
        .images
        .iter()
        .filter(|i| i.outcome == Outcome::Built)
        .count();
    let (apps, images, env) = match &done.render {
        Some(Ok(rendered)) => (
            rendered.apps.len(),
            rendered.images.len(),
            rendered.env.as_str(),
        ),
        _ => (0, 0, ""),
    };
    format!(
        "{} images ({built} built), {apps} apps, {images} pinned images rendered for {env}",
        done.build.images.len()
    )
}
