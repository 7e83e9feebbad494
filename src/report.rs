//! How results reach the person or the CI job: aligned text lines, or JSON.

use std::io::Write;

use crate::build::{BuildReport, Outcome};
use crate::doctor::Check;
use crate::render::Rendered;

/// `--output` of every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// Writes the doctor's checks: `ok`/`FAIL`, the name, the detail, and the hint under a failure.
pub fn write_checks(
    out: &mut impl Write,
    checks: &[Check],
    format: OutputFormat,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => {
            let report = serde_json::json!({
                "ok": checks.iter().all(|c| c.ok),
                "checks": checks,
            });
            write_json(out, &report)
        }
        OutputFormat::Text => {
            let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
            for check in checks {
                let status = if check.ok { "ok  " } else { "FAIL" };
                writeln!(out, "{status}  {:width$}  {}", check.name, check.detail)?;
                if let Some(hint) = &check.hint {
                    writeln!(out, "      {:width$}  hint: {hint}", "")?;
                }
            }
            Ok(())
        }
    }
}

/// Pretty JSON on one output, for every command's `--output json`.
fn write_json(out: &mut impl Write, value: &impl serde::Serialize) -> std::io::Result<()> {
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(value).map_err(std::io::Error::other)?
    )
}

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
    match &report.lock {
        Some(lock) => writeln!(out, "images lock: {}", lock.display()),
        None => writeln!(out, "images lock not written: a build failed"),
    }
}

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
    writeln!(
        out,
        "rendered {} into {} ({} registry lookups)",
        rendered.env,
        rendered.state_dir.display(),
        rendered.registry_lookups
    )
}

/// Writes a deploy's summary: per app, how many objects were created, updated, unchanged,
/// deleted and failed, and how long it took; `--output json` prints every object.
pub fn write_deploy(
    out: &mut impl Write,
    report: &crate::deploy::DeployReport,
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
    writeln!(
        out,
        "{} objects in {:.1}s",
        report.objects.len(),
        report.duration_ms as f64 / 1000.0
    )
}

const COUNT_COLUMNS: [&str; 5] = ["created", "updated", "unchanged", "deleted", "failed"];

/// The column of the count table an object falls in.
fn op_column(op: crate::deploy::Op, ok: bool) -> usize {
    use crate::deploy::Op;
    match (ok, op) {
        (true, Op::Create) => 0,
        (true, Op::Update) => 1,
        (true, Op::Unchanged) => 2,
        (true, Op::Delete) => 3,
        (false, _) => 4,
    }
}

/// A table of objects per app and column (see [`COUNT_COLUMNS`]), with a total row.
fn write_counts<'a>(
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
    let line = |out: &mut dyn Write, name: &str, cells: [String; 5]| {
        writeln!(
            out,
            "{name:<32} {:>8} {:>8} {:>10} {:>8} {:>7}",
            cells[0], cells[1], cells[2], cells[3], cells[4]
        )
    };
    line(out, "app", COUNT_COLUMNS.map(str::to_string))?;
    for (app, row) in rows {
        line(out, app, row.map(|n| n.to_string()))?;
    }
    line(out, "total", total.map(|n| n.to_string()))
}

fn write_deleted_apps(out: &mut impl Write, apps: &[String]) -> std::io::Result<()> {
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
fn write_unified(out: &mut impl Write, diff: &str, color: bool) -> std::io::Result<()> {
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

/// Writes what a deploy would change: each changed object's diff, the deletions, a table per
/// app, and a one-line total.
pub fn write_diff(
    out: &mut impl Write,
    report: &crate::deploy::compare::DiffReport,
    format: OutputFormat,
    color: bool,
) -> std::io::Result<()> {
    use crate::deploy::Op;
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
    write_deleted_apps(out, &report.deleted_apps)?;
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

/// Writes per app its live commit, sync and health, then every object that is drifted or not
/// healthy, with why.
pub fn write_status(
    out: &mut impl Write,
    report: &crate::deploy::compare::StatusReport,
    format: OutputFormat,
    color: bool,
) -> std::io::Result<()> {
    use crate::deploy::compare::Health;
    if format == OutputFormat::Json {
        return write_json(out, report);
    }
    if report.apps.is_empty() {
        return writeln!(out, "no app of {} is deployed", report.env);
    }
    writeln!(out, "{:<32} {:<12} {:<9} health", "app", "commit", "sync")?;
    for app in &report.apps {
        let sync = match app.in_sync {
            Some(true) => "in sync",
            Some(false) => "DRIFTED",
            None => "unknown",
        };
        let unhealthy = app
            .objects
            .iter()
            .filter(|o| o.health != Health::Healthy)
            .count();
        let health = if unhealthy == 0 {
            format!("healthy ({} objects)", app.objects.len())
        } else {
            format!("UNHEALTHY ({unhealthy} of {} objects)", app.objects.len())
        };
        let commit = app.commit.get(..12).unwrap_or(&app.commit);
        writeln!(out, "{:<32} {commit:<12} {sync:<9} {health}", app.app)?;
    }
    for app in &report.apps {
        if let Some(note) = &app.note {
            writeln!(out, "{}: {note}", app.app)?;
        }
        for object in app
            .objects
            .iter()
            .filter(|o| o.drifted || o.health != Health::Healthy)
        {
            let message = object.error.as_deref().or(object.message.as_deref());
            let health = format!("{:?}", object.health).to_lowercase();
            let drift = if object.drifted { ", drifted" } else { "" };
            let message = message.map_or(String::new(), |m| format!(": {m}"));
            writeln!(
                out,
                "{} {}: {health}{drift}{message}",
                app.app, object.object
            )?;
            write_unified(out, &object.diff, color)?;
        }
    }
    Ok(())
}

/// Writes an environment's state commits, newest first, the live one marked with `*`.
pub fn write_history(
    out: &mut impl Write,
    history: &[crate::state::StateCommit],
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
    for commit in history {
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
        for image in &commit.images {
            writeln!(out, "      image {image}")?;
        }
    }
    if live.is_none() {
        writeln!(out, "(no commit of this list is live in the cluster)")?;
    }
    Ok(())
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

/// Live progress of work on several named items (images, objects): a spinner line per item on a
/// terminal, timestamped plain lines prefixed with the item's name elsewhere (CI, pipes).
pub struct Progress {
    mode: ProgressMode,
}

enum ProgressMode {
    Live {
        bars: indicatif::MultiProgress,
        items: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
    },
    Plain {
        start: std::time::Instant,
    },
}

impl Progress {
    /// Live on a terminal unless `CI` is set; plain otherwise.
    pub fn for_stderr() -> Self {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
            Progress {
                mode: ProgressMode::Live {
                    bars: indicatif::MultiProgress::new(),
                    items: Default::default(),
                },
            }
        } else {
            Progress::plain()
        }
    }

    /// Plain lines on stderr.
    pub fn plain() -> Self {
        Progress {
            mode: ProgressMode::Plain {
                start: std::time::Instant::now(),
            },
        }
    }

    /// The item's latest news: replaces its live line, or prints a plain line.
    pub fn update(&self, item: &str, message: &str) {
        match &self.mode {
            ProgressMode::Live { bars, items } => {
                let mut items = items
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let bar = items.entry(item.to_string()).or_insert_with(|| {
                    let bar = bars.add(indicatif::ProgressBar::new_spinner());
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{spinner} {prefix:.bold} {wide_msg}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(item.to_string());
                    bar.enable_steady_tick(std::time::Duration::from_millis(120));
                    bar
                });
                bar.set_message(message.to_string());
            }
            ProgressMode::Plain { start } => {
                // A closed stderr (a pipe whose reader went away) must not stop the work.
                let _ = writeln!(
                    std::io::stderr(),
                    "[{:>7.2}s] {item}: {message}",
                    start.elapsed().as_secs_f64()
                );
            }
        }
    }

    /// The item is done: its line stays with `message`.
    pub fn finish(&self, item: &str, message: &str) {
        match &self.mode {
            ProgressMode::Live { items, .. } => {
                let items = items
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(bar) = items.get(item) {
                    bar.finish_with_message(message.to_string());
                }
            }
            ProgressMode::Plain { .. } => self.update(item, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks() -> Vec<Check> {
        vec![
            Check {
                name: "docker".into(),
                ok: true,
                detail: "Docker 20.10".into(),
                hint: None,
            },
            Check {
                name: "registry r:1".into(),
                ok: false,
                detail: "refused".into(),
                hint: Some("docker login r:1".into()),
            },
        ]
    }

    #[test]
    fn text_lines_align_and_show_hints() {
        let mut out = Vec::new();
        write_checks(&mut out, &checks(), OutputFormat::Text).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "ok    docker        Docker 20.10\nFAIL  registry r:1  refused\n                    hint: docker login r:1\n"
        );
    }

    #[test]
    fn json_has_overall_status() {
        let mut out = Vec::new();
        write_checks(&mut out, &checks(), OutputFormat::Json).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["ok"], false);
        assert_eq!(value["checks"][1]["hint"], "docker login r:1");
        assert!(value["checks"][0].get("hint").is_none());
    }
}
