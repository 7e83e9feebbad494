//! The `helm` program: umbrella runs the user's helm (v3 or v4) rather than embedding one, so
//! charts render exactly as they do with the team's own helm.

use std::path::PathBuf;

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
    let program = program();
    let output = Command::new(&program)
        .args(args)
        .output()
        .await
        .map_err(|e| HelmError::NotRunnable {
            program: program.display().to_string(),
            reason: e.to_string(),
        })?;
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
