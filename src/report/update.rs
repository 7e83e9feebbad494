//! `umbrella images update`: one line per marked image, what it moved to or why it stayed.

use std::io::Write;

use crate::stages::update::{Move, Updated};

use super::output::{OutputFormat, write_json, write_retries};

/// Writes the moves as a table (image, policy, environment, values file and line, old tag, new
/// tag or why not), and the commit that records them.
pub fn write_update(
    out: &mut impl Write,
    updated: &Updated,
    format: OutputFormat,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        return write_json(out, updated);
    }
    let rows: Vec<[String; 6]> = updated.moves.iter().map(row).collect();
    write_table(out, &rows)?;
    write_retries(out, &updated.retries)?;
    let moved = updated.moves.iter().filter(|m| m.new.is_some()).count();
    match (&updated.commit, updated.dry_run) {
        (_, true) => writeln!(
            out,
            "{moved} to move in {} (dry run: nothing written)",
            updated.env
        ),
        (Some(commit), false) => writeln!(out, "{moved} moved in {}: commit {commit}", updated.env),
        (None, false) => writeln!(out, "nothing to move in {}", updated.env),
    }
}

/// image, policy, environment, values file and line, old tag, and the new one or why it stays.
fn row(m: &Move) -> [String; 6] {
    let outcome = match (&m.new, &m.unchanged) {
        (Some(new), _) => new.clone(),
        (None, Some(why)) => format!("unchanged: {why}"),
        (None, None) => "unchanged".into(),
    };
    [
        m.image.clone(),
        m.policy.clone(),
        m.env.clone(),
        format!("{}:{}", m.file, m.line),
        m.old.clone(),
        outcome,
    ]
}

/// The rows under a header, each column as wide as its widest cell (the last one free).
fn write_table(out: &mut impl Write, rows: &[[String; 6]]) -> std::io::Result<()> {
    let header = ["image", "policy", "env", "values", "old", "new"].map(String::from);
    let all: Vec<&[String; 6]> = std::iter::once(&header).chain(rows).collect();
    let widths: Vec<usize> = (0..5)
        .map(|i| all.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in all {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        line.push_str(&row[5]);
        writeln!(out, "{line}")?;
    }
    Ok(())
}
