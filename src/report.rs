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
    use crate::deploy::Op;
    if format == OutputFormat::Json {
        return write_json(out, report);
    }
    let mut rows: std::collections::BTreeMap<&str, [usize; 5]> = Default::default();
    for object in &report.objects {
        let row = rows.entry(&object.app).or_default();
        let column = match (object.result.as_str(), object.op) {
            ("ok", Op::Create) => 0,
            ("ok", Op::Update) => 1,
            ("ok", Op::Unchanged) => 2,
            ("ok", Op::Delete) => 3,
            _ => 4,
        };
        row[column] += 1;
    }
    writeln!(
        out,
        "{:<32} {:>8} {:>8} {:>10} {:>8} {:>7}",
        "app", "created", "updated", "unchanged", "deleted", "failed"
    )?;
    let mut total = [0usize; 5];
    for (app, row) in &rows {
        writeln!(
            out,
            "{app:<32} {:>8} {:>8} {:>10} {:>8} {:>7}",
            row[0], row[1], row[2], row[3], row[4]
        )?;
        for (t, r) in total.iter_mut().zip(row) {
            *t += r;
        }
    }
    writeln!(
        out,
        "{:<32} {:>8} {:>8} {:>10} {:>8} {:>7}",
        "total", total[0], total[1], total[2], total[3], total[4]
    )?;
    for app in &report.deleted_apps {
        writeln!(
            out,
            "app {app} deleted: its directory is gone from the state"
        )?;
    }
    writeln!(
        out,
        "{} objects in {:.1}s",
        report.objects.len(),
        report.duration_ms as f64 / 1000.0
    )
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
