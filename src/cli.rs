//! The command line: parsing and dispatch only; the work is in the stage modules.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::doctor::{self, DoctorOptions};
use crate::report::{self, OutputFormat};

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
