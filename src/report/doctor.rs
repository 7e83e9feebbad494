//! `umbrella doctor`: `ok`/`FAIL`, the name, the detail, and the hint under a failure.

use std::io::Write;

use crate::stages::doctor::Check;

use super::output::{OutputFormat, write_json};

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
