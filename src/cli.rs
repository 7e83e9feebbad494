//! The command line: parsing and dispatch only; the work is in the stage modules.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::build::{self, BuildError, BuildRequest};
use crate::doctor::{self, DoctorOptions, SOURCES_FILE};
use crate::report::{self, OutputFormat, Progress};

/// Build, render, commit and deploy Helm umbrella charts as reviewed git commits.
#[derive(Debug, Parser)]
#[command(name = "umbrella", version, about)]
pub struct Cli {
    /// Run as if started in this directory (like `git -C`).
    #[arg(short = 'C', long = "repo", global = true, default_value = ".")]
    pub repo: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build every image of sources.yaml, push it, and write the images lock.
    ///
    /// Exit status: 0 all built or cached, 1 a build failed (no lock written), 2 bad input
    /// (nothing built), 130 interrupted (no lock written).
    Build {
        /// Build only these sources (their `image` names); the lock keeps the others' entries.
        #[arg(long, num_args = 1.., value_name = "IMAGE")]
        only: Vec<String>,
        /// Images built at the same time (default: number of cores, at least 2).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Where to write the images lock.
        #[arg(long, default_value = build::DEFAULT_LOCK_OUTPUT)]
        lock_output: PathBuf,
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Check every dependency umbrella needs: Docker, helm, registries, the cluster, the repository.
    Doctor {
        /// Kubeconfig context (default: the current context).
        #[arg(long)]
        context: Option<String>,
        /// Namespace whose permissions are checked (default: the context's namespace).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: OutputFormat,
    },
}

/// Runs the parsed command; the exit code follows each command's documented contract.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Build {
            only,
            concurrency,
            lock_output,
            output,
        } => {
            let root = crate::state::repository_root(&cli.repo).unwrap_or(cli.repo);
            let request = BuildRequest {
                sources_file: root.join(SOURCES_FILE),
                lock_output: root.join(lock_output),
                root,
                only,
                concurrency: concurrency.unwrap_or_else(default_concurrency),
            };
            let progress = match output {
                OutputFormat::Json => Progress::plain(),
                OutputFormat::Text => Progress::for_stderr(),
            };
            match build::build(&request, progress).await {
                Ok(build_report) => {
                    report::write_build(&mut std::io::stdout().lock(), &build_report, output)
                        .context("writing the report")?;
                    Ok(if build_report.succeeded() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    })
                }
                Err(error) => {
                    eprintln!("umbrella build: {error}");
                    Ok(match error {
                        BuildError::Config(_) | BuildError::Invalid { .. } => ExitCode::from(2),
                        BuildError::Interrupted => ExitCode::from(130),
                        _ => ExitCode::FAILURE,
                    })
                }
            }
        }
        Command::Doctor {
            context,
            namespace,
            output,
        } => {
            let options = DoctorOptions {
                repo: cli.repo,
                context,
                namespace,
            };
            let checks = doctor::run(&options).await;
            report::write_checks(&mut std::io::stdout().lock(), &checks, output)
                .context("writing the report")?;
            Ok(if checks.iter().all(|c| c.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}
