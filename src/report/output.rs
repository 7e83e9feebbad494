//! What every printer shares: the output format, colours, JSON, the per-app count table and
//! unified diffs.

use std::io::Write;

use crate::adapters::retry::RetryNote;
use crate::stages::deploy::Op;

/// `--output` of every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// Pretty JSON on one output, for every command's `--output json`.
pub(super) fn write_json(
    out: &mut impl Write,
    value: &impl serde::Serialize,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(value).map_err(std::io::Error::other)?
    )
}

const COUNT_COLUMNS: [&str; 5] = ["created", "updated", "unchanged", "deleted", "failed"];

/// The column of the count table an object falls in.
pub(super) fn op_column(op: Op, ok: bool) -> usize {
    match (ok, op) {
        (true, Op::Create) => 0,
        (true, Op::Update | Op::Replace) => 1,
        (true, Op::Unchanged) => 2,
        (true, Op::Delete | Op::Orphan) => 3,
        (false, _) => 4,
    }
}

/// The width of a table's app column: 32, or the longest name, so columns stay aligned.
pub(super) fn name_width<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(|n| n.chars().count()).max().unwrap_or(0).max(32)
}

/// A table of objects per app and column (see [`COUNT_COLUMNS`]), with a total row.
pub(super) fn write_counts<'a>(
    out: &mut impl Write,
    objects: impl Iterator<Item = (&'a str, usize)>,
) -> std::io::Result<()> {
    let mut rows: std::collections::BTreeMap<&str, [usize; 5]> = Default::default();
    for (app, column) in objects {
        rows.entry(app).or_default()[column] += 1;
    }
    let mut total = [0usize; 5];
    for row in rows.values() {
        for (t, r) in total.iter_mut().zip(row) {
            *t += r;
        }
    }
    let width = name_width(rows.keys().copied());
    let line = |out: &mut dyn Write, name: &str, cells: [String; 5]| {
        writeln!(
            out,
            "{name:<width$} {:>8} {:>8} {:>10} {:>8} {:>7}",
            cells[0], cells[1], cells[2], cells[3], cells[4]
        )
    };
    line(out, "app", COUNT_COLUMNS.map(str::to_string))?;
    for (app, row) in rows {
        line(out, app, row.map(|n| n.to_string()))?;
    }
    line(out, "total", total.map(|n| n.to_string()))
}

/// One line per call that had to be tried again, with its last passing failure.
pub(super) fn write_retries(out: &mut impl Write, retries: &[RetryNote]) -> std::io::Result<()> {
    let mut last: std::collections::BTreeMap<&str, &RetryNote> = Default::default();
    for note in retries {
        last.insert(&note.what, note);
    }
    for (what, note) in last {
        writeln!(
            out,
            "retried {what}: {} time(s), last because {}",
            note.attempt, note.error
        )?;
    }
    Ok(())
}

pub(super) fn write_deleted_apps(out: &mut impl Write, apps: &[String]) -> std::io::Result<()> {
    for app in apps {
        writeln!(out, "app {app} deleted, with its inventory")?;
    }
    Ok(())
}

/// `--color` of the commands that print diffs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether diffs are coloured.
    pub fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

/// A unified diff, its lines coloured by kind when `color` is on.
pub(super) fn write_unified(out: &mut impl Write, diff: &str, color: bool) -> std::io::Result<()> {
    for line in diff.lines() {
        let code = match line.as_bytes().first() {
            _ if !color => None,
            Some(b'+') if !line.starts_with("+++") => Some("32"),
            Some(b'-') if !line.starts_with("---") => Some("31"),
            Some(b'@') => Some("36"),
            Some(b'+' | b'-') => Some("1"),
            _ => None,
        };
        match code {
            Some(code) => writeln!(out, "\x1b[{code}m{line}\x1b[0m")?,
            None => writeln!(out, "{line}")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_app_names_keep_the_columns_aligned() {
        let long = "production-a-very-long-application-name-indeed";
        let mut out = Vec::new();
        write_counts(&mut out, [(long, 0), ("short", 1)].into_iter()).unwrap();
        let text = String::from_utf8(out).unwrap();
        let header = text.lines().next().unwrap();
        assert!(header.starts_with(&format!("app{}", " ".repeat(long.len() - 3 + 1))));
        for line in text.lines() {
            assert_eq!(line.len(), header.len(), "{text}");
        }
    }
}
