//! The `helm` program: umbrella runs the user's helm (v3 or v4) rather than embedding one, so
//! charts render exactly as they do with the team's own helm.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// helm could not be run or answered something unexpected.
#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    #[error("helm ({program}) cannot be run: {reason}")]
    NotRunnable { program: String, reason: String },
    #[error("helm {args}: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("helm version `{0}` is not supported: umbrella needs helm v3 or v4")]
    Unsupported(String),
}

impl HelmError {
    /// The same error with `scrub` applied to what helm said (it may repeat values it was given).
    pub fn scrubbed(self, scrub: impl Fn(&str) -> String) -> Self {
        match self {
            HelmError::Failed { args, stderr } => HelmError::Failed {
                args,
                stderr: scrub(&stderr),
            },
            other => other,
        }
    }
}

/// The helm binary: `$UMBRELLA_HELM`, else `helm` on PATH.
pub fn program() -> PathBuf {
    std::env::var_os("UMBRELLA_HELM").map_or_else(|| PathBuf::from("helm"), PathBuf::from)
}

/// Where the helm that runs lives: the program itself if it is a path, else its PATH entry.
pub fn resolved_program() -> PathBuf {
    let program = program();
    if program.components().count() > 1 {
        return program;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(&program))
        .find(|candidate| candidate.is_file())
        .unwrap_or(program)
}

/// Runs helm with `args` and returns its standard output.
pub async fn run(args: &[&str]) -> Result<String, HelmError> {
    run_with_input(args, None).await
}

/// Runs helm with `args`, `input` on its standard input (`--values -` reads it: values that
/// must never be in a file), and returns its standard output.
pub async fn run_with_input(args: &[&str], input: Option<&str>) -> Result<String, HelmError> {
    let program = program();
    let not_runnable = |e: std::io::Error| HelmError::NotRunnable {
        program: program.display().to_string(),
        reason: e.to_string(),
    };
    let mut child = Command::new(&program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(not_runnable)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // helm reads all of its input before it writes: no deadlock with a full stdout pipe.
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(not_runnable)?;
    }
    let output = child.wait_with_output().await.map_err(not_runnable)?;
    if !output.status.success() {
        return Err(HelmError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// helm's version (`v3.19.5`), accepted only for major versions 3 and 4.
pub async fn version() -> Result<String, HelmError> {
    let out = run(&["version", "--short"]).await?;
    parse_version(&out)
}

fn parse_version(output: &str) -> Result<String, HelmError> {
    let version = output
        .trim()
        .split('+')
        .next()
        .unwrap_or_default()
        .to_string();
    if version.starts_with("v3.") || version.starts_with("v4.") {
        Ok(version)
    } else {
        Err(HelmError::Unsupported(output.trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_v3_and_v4_only() {
        assert_eq!(parse_version("v3.19.5+g1234567\n").unwrap(), "v3.19.5");
        assert_eq!(parse_version("v4.3.1+gabc").unwrap(), "v4.3.1");
        assert!(parse_version("v2.17.0+g").is_err());
        assert!(parse_version("").is_err());
    }
}
