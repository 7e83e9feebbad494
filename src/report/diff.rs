//! `umbrella diff`: each changed object's diff, the deletions, a table per app.

use std::io::Write;

use crate::stages::deploy::Op;
use crate::stages::deploy::diff::DiffReport;

use super::output::{
    OutputFormat, op_column, write_counts, write_deleted_apps, write_json, write_retries,
    write_unified,
};

/// Writes what a deploy would change: each changed object's diff, the deletions, a table per
/// app, and a one-line total.
pub fn write_diff(
    out: &mut impl Write,
    report: &DiffReport,
    format: OutputFormat,
    color: bool,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        return write_json(out, report);
    }
    for object in report
        .objects
        .iter()
        .filter(|o| o.op != Op::Unchanged || o.error.is_some())
    {
        let op = format!("{:?}", object.op).to_lowercase();
        writeln!(out, "{op} {} {}", object.app, object.object)?;
        write_unified(out, &object.diff, color)?;
        if let Some(note) = &object.note {
            writeln!(out, "  note: {note}")?;
        }
        if let Some(error) = &object.error {
            writeln!(out, "  ERROR: {error}")?;
        }
    }
    let rows = report
        .objects
        .iter()
        .map(|o| (o.app.as_str(), op_column(o.op, o.error.is_none())));
    write_counts(out, rows)?;
    for hook in &report.hooks {
        writeln!(out, "hook {hook} would run")?;
    }
    write_deleted_apps(out, &report.deleted_apps)?;
    write_retries(out, &report.retries)?;
    if report.has_changes() {
        writeln!(out, "a deploy of {} would change the cluster", report.env)
    } else {
        writeln!(
            out,
            "no changes: the cluster matches the state of {}",
            report.env
        )
    }
}
