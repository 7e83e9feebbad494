//! `umbrella status`: per app its live commit, sync and health, then what is wrong.

use std::io::Write;

use crate::stages::deploy::status::{Health, StatusReport};

use super::output::{OutputFormat, name_width, write_json, write_unified};

/// Writes per app its live commit, sync and health, then every object that is drifted or not
/// healthy, with why.
pub fn write_status(
    out: &mut impl Write,
    report: &StatusReport,
    format: OutputFormat,
    color: bool,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        return write_json(out, report);
    }
    if report.apps.is_empty() {
        return writeln!(out, "no app of {} is deployed", report.env);
    }
    let width = name_width(report.apps.iter().map(|a| a.app.as_str()));
    writeln!(
        out,
        "{:<width$} {:<12} {:<9} health",
        "app", "commit", "sync"
    )?;
    for app in &report.apps {
        let sync = match app.in_sync {
            Some(true) => "in sync",
            Some(false) => "DRIFTED",
            None => "unknown",
        };
        let unhealthy = app.objects.iter().filter(|o| !o.healthy()).count();
        let health = if unhealthy == 0 {
            format!("healthy ({} objects)", app.objects.len())
        } else {
            format!("UNHEALTHY ({unhealthy} of {} objects)", app.objects.len())
        };
        let commit = app.commit.get(..12).unwrap_or(&app.commit);
        writeln!(out, "{:<width$} {commit:<12} {sync:<9} {health}", app.app)?;
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
            let mut health = format!("{:?}", object.health).to_lowercase();
            if !object.waited {
                health.push_str(" (not waited for: kapp.k14s.io/disable-wait)");
            }
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
