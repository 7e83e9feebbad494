//! `umbrella history`: the state commits of an environment, the live one marked.

use std::io::Write;

use crate::adapters::git::StateCommit;

use super::output::{OutputFormat, write_json};

/// Writes an environment's state commits, newest first, the live one marked with `*`, each
/// with the pinned images (built or third-party) it changed.
pub fn write_history(
    out: &mut impl Write,
    history: &[StateCommit],
    live: Option<&str>,
    format: OutputFormat,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        let entries: Vec<serde_json::Value> = history
            .iter()
            .map(|c| {
                let mut value = serde_json::to_value(c).unwrap_or_default();
                value["live"] = (Some(c.sha.as_str()) == live).into();
                value
            })
            .collect();
        return write_json(out, &entries);
    }
    for (index, commit) in history.iter().enumerate() {
        let mark = if Some(commit.sha.as_str()) == live {
            "*"
        } else {
            " "
        };
        let date = k8s_openapi::jiff::Timestamp::from_second(commit.time)
            .map(|t| t.strftime("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default();
        let source = commit.source_commit.as_deref().map_or(String::new(), |s| {
            format!(" source {}", &s[..12.min(s.len())])
        });
        writeln!(
            out,
            "{mark} {} {date}{source}  {}",
            &commit.sha[..12],
            commit.summary
        )?;
        // What this release changed: the images the one before it did not have.
        let before = history
            .get(index + 1)
            .map_or(&[][..], |c| c.images.as_slice());
        for image in commit.images.iter().filter(|i| !before.contains(i)) {
            writeln!(out, "      image {image}")?;
        }
    }
    if live.is_none() {
        writeln!(out, "(no commit of this list is live in the cluster)")?;
    }
    Ok(())
}
