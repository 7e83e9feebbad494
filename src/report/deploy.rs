//! `umbrella deploy` and `delete`: per app, what happened to its objects.

use std::io::Write;

use crate::adapters::git::UNCOMMITTED;
use crate::formats::layout;
use crate::stages::deploy::DeployReport;
use crate::stages::deploy::source::DeploySource;

use super::output::{
    OutputFormat, op_column, write_counts, write_deleted_apps, write_json, write_retries,
};

/// Writes a deploy's summary: per app, how many objects were created, updated, unchanged,
/// deleted and failed, and how long it took; `--output json` prints every object.
pub fn write_deploy(
    out: &mut impl Write,
    report: &DeployReport,
    format: OutputFormat,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        return write_json(out, report);
    }
    let rows = report
        .objects
        .iter()
        .map(|o| (o.app.as_str(), op_column(o.op, o.result == "ok")));
    write_counts(out, rows)?;
    write_deleted_apps(out, &report.deleted_apps)?;
    write_retries(out, &report.retries)?;
    writeln!(
        out,
        "{} objects in {:.1}s",
        report.objects.len(),
        report.duration_ms as f64 / 1000.0
    )
}

/// What the state's commits cannot tell, as lines for stderr: a shallow clone hides some, and
/// (for `deploy`) no commit holds an app's state, so it cannot be rolled back to.
pub fn source_warnings(command: &str, source: &DeploySource) -> Vec<String> {
    let uncommitted = source.uncommitted();
    let mut warnings = Vec::new();
    if source.shallow && !uncommitted.is_empty() {
        warnings.push(format!(
            "umbrella: this is a shallow clone, so the commits of some apps are unknown and recorded as `{UNCOMMITTED}`; fetch the full history (actions/checkout: fetch-depth: 0)"
        ));
    }
    if command == "deploy" && !uncommitted.is_empty() {
        warnings.push(format!(
            "umbrella deploy: no commit holds the state of {} (uncommitted changes? after `git checkout REV -- {}`, files added since REV stay: use --no-overlay)",
            uncommitted.join(", "),
            layout::env_path("ENV")
        ));
    }
    warnings
}
