//! `umbrella render`: apps, pinned images, where the state went.

use std::io::Write;

use crate::stages::render::Rendered;

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
    writeln!(
        out,
        "rendered {} into {} ({} registry lookups)",
        rendered.env,
        rendered.state_dir.display(),
        rendered.registry_lookups
    )
}
