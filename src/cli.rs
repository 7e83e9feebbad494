//! The command line: parsing and dispatch only; the work is in the stage modules.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::build::{self, BuildError, BuildReport, BuildRequest};
use crate::doctor::{self, DoctorOptions, SOURCES_FILE};
use crate::lock::{ImagesLock, Origin};
use crate::render::{self, RenderError, RenderRequest, Rendered, state_dir};
use crate::report::{self, OutputFormat, Progress};
use crate::state::{self, CommitError, CommitOutcome, CommitRequest};

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
    Build(BuildArgs),
    /// Render the umbrella chart for an environment into umbrella-state/ENV, images pinned.
    ///
    /// Exit status: 0 written (or, with --check, identical), 1 failed (nothing written) or,
    /// with --check, the committed state differs, 2 bad input.
    Render(RenderArgs),
    /// Commit umbrella-state/ENV (and nothing else): that commit is the release.
    ///
    /// Exit status: 0 committed or nothing to commit, 1 refused or failed.
    Commit(CommitArgs),
    /// build, then render, then commit; stops at the first stage that fails.
    Ci {
        #[command(flatten)]
        render: RenderArgs,
        #[command(flatten)]
        commit: CommitFlags,
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

#[derive(Debug, Args)]
pub struct BuildArgs {
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
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The environment: values-ENV.yaml is applied and the state goes to umbrella-state/ENV.
    #[arg(long)]
    env: String,
    /// More values files, applied after values.yaml and values-ENV.yaml.
    #[arg(long = "values", short = 'f', value_name = "FILE")]
    values: Vec<PathBuf>,
    /// helm's release name (default: the chart's name).
    #[arg(long)]
    release: Option<String>,
    /// Namespace of namespaced objects (default: ENV).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// The build stage's images lock.
    #[arg(long = "lock", default_value = build::DEFAULT_LOCK_OUTPUT)]
    build_lock: PathBuf,
    /// Write Secrets in plain text into the state (refused by default).
    #[arg(long)]
    allow_plaintext_secrets: bool,
    /// Render to memory and compare with umbrella-state/ENV: exit 1 with a diff if they differ.
    #[arg(long)]
    check: bool,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct CommitFlags {
    /// Commit although the source tree has uncommitted changes.
    #[arg(long)]
    allow_dirty: bool,
    /// Commit on a detached HEAD.
    #[arg(long)]
    allow_detached: bool,
    /// The commit's author, `Name <email>` (default: git's configuration).
    #[arg(long)]
    author: Option<String>,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The environment whose state is committed.
    #[arg(long)]
    env: String,
    #[command(flatten)]
    flags: CommitFlags,
}

/// Runs the parsed command; the exit code follows each command's documented contract.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let root = state::repository_root(&cli.repo).unwrap_or(cli.repo.clone());
    match cli.command {
        Command::Build(args) => run_build(&root, args).await,
        Command::Render(args) => run_render(&root, &args).await,
        Command::Commit(args) => Ok(run_commit(&root, &args.env, &args.flags)),
        Command::Ci { render, commit } => run_ci(&root, &render, &commit).await,
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
            Ok(exit(checks.iter().all(|c| c.ok)))
        }
    }
}

fn exit(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn progress_for(output: OutputFormat) -> Progress {
    match output {
        OutputFormat::Json => Progress::plain(),
        OutputFormat::Text => Progress::for_stderr(),
    }
}

fn build_request(root: &Path, args: &BuildArgs) -> BuildRequest {
    BuildRequest {
        sources_file: root.join(SOURCES_FILE),
        lock_output: root.join(&args.lock_output),
        root: root.to_path_buf(),
        only: args.only.clone(),
        concurrency: args.concurrency.unwrap_or_else(default_concurrency),
    }
}

/// Runs the build stage and prints its report; `Err` carries the exit code of a stage that
/// did not succeed.
async fn build_stage(root: &Path, args: &BuildArgs) -> Result<BuildReport, ExitCode> {
    match build::build(&build_request(root, args), progress_for(args.output)).await {
        Ok(build_report) => {
            let _ = report::write_build(&mut std::io::stdout().lock(), &build_report, args.output);
            if build_report.succeeded() {
                Ok(build_report)
            } else {
                Err(ExitCode::FAILURE)
            }
        }
        Err(error) => {
            eprintln!("umbrella build: {error}");
            Err(match error {
                BuildError::Config(_) | BuildError::Invalid { .. } => ExitCode::from(2),
                BuildError::Interrupted => ExitCode::from(130),
                _ => ExitCode::FAILURE,
            })
        }
    }
}

async fn run_build(root: &Path, args: BuildArgs) -> anyhow::Result<ExitCode> {
    Ok(match build_stage(root, &args).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(code) => code,
    })
}

fn render_request(root: &Path, args: &RenderArgs) -> RenderRequest {
    RenderRequest {
        root: root.to_path_buf(),
        env: args.env.clone(),
        release: args.release.clone(),
        namespace: args.namespace.clone(),
        extra_values: args.values.clone(),
        build_lock: root.join(&args.build_lock),
        allow_plaintext_secrets: args.allow_plaintext_secrets,
    }
}

/// Renders and writes (or, with `--check`, compares) the environment's state.
async fn render_stage(root: &Path, args: &RenderArgs) -> Result<Rendered, ExitCode> {
    let rendered = render::render(&render_request(root, args))
        .await
        .map_err(|error| {
            eprintln!("umbrella render: {error}");
            match error {
                RenderError::Input(_) | RenderError::Split(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        })?;
    let dir = state_dir::path(root, &args.env);
    if args.check {
        let committed = state_dir::StateFiles::read(&dir).map_err(|e| {
            eprintln!("umbrella render --check: reading {}: {e}", dir.display());
            ExitCode::FAILURE
        })?;
        if let Some(diff) = rendered.files.diff_from(&committed, 200) {
            println!("{diff}");
            eprintln!(
                "umbrella render --check: {} differs from a fresh render of the sources",
                dir.display()
            );
            return Err(ExitCode::FAILURE);
        }
        eprintln!("umbrella render --check: {} is up to date", dir.display());
        return Ok(rendered);
    }
    rendered.files.write(&dir).map_err(|e| {
        eprintln!("umbrella render: writing {}: {e}", dir.display());
        ExitCode::FAILURE
    })?;
    let _ = report::write_render(&mut std::io::stdout().lock(), &rendered, args.output);
    Ok(rendered)
}

async fn run_render(root: &Path, args: &RenderArgs) -> anyhow::Result<ExitCode> {
    Ok(match render_stage(root, args).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(code) => code,
    })
}

/// The images of the environment's lock that were built here (their origin is a local path).
fn built_images(root: &Path, env: &str) -> Vec<String> {
    let lock = ImagesLock::read(&state_dir::path(root, env).join(state_dir::LOCK_FILE))
        .unwrap_or_default();
    lock.images()
        .iter()
        .filter(|i| i.origins.iter().any(|o| matches!(o, Origin::Local { .. })))
        .map(|i| i.new_image.clone())
        .collect()
}

fn run_commit(root: &Path, env: &str, flags: &CommitFlags) -> ExitCode {
    let request = CommitRequest {
        root: root.to_path_buf(),
        env: env.to_string(),
        allow_dirty: flags.allow_dirty,
        allow_detached: flags.allow_detached,
        author: flags.author.clone(),
    };
    match state::commit_state(&request, &built_images(root, env)) {
        Ok(CommitOutcome::Committed { id, message }) => {
            println!(
                "committed {} {}",
                &id[..12],
                message.lines().next().unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(CommitOutcome::Unchanged) => {
            println!("nothing to commit: umbrella-state/{env} is unchanged");
            ExitCode::SUCCESS
        }
        Err(error @ (CommitError::Refused(_) | CommitError::Git(_))) => {
            eprintln!("umbrella commit: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run_ci(
    root: &Path,
    render_args: &RenderArgs,
    commit: &CommitFlags,
) -> anyhow::Result<ExitCode> {
    let build_args = BuildArgs {
        only: Vec::new(),
        concurrency: None,
        lock_output: render_args.build_lock.clone(),
        output: render_args.output,
    };
    let built = match build_stage(root, &build_args).await {
        Ok(report) => report,
        Err(code) => {
            eprintln!("umbrella ci: stopped at build");
            return Ok(code);
        }
    };
    let rendered = match render_stage(root, render_args).await {
        Ok(rendered) => rendered,
        Err(code) => {
            eprintln!("umbrella ci: stopped at render");
            return Ok(code);
        }
    };
    if render_args.check {
        return Ok(ExitCode::SUCCESS);
    }
    let code = run_commit(root, &render_args.env, commit);
    let built_count = built
        .images
        .iter()
        .filter(|i| i.outcome == build::Outcome::Built)
        .count();
    eprintln!(
        "umbrella ci: {} images ({built_count} built), {} apps, {} pinned images rendered for {}",
        built.images.len(),
        rendered.apps.len(),
        rendered.images.len(),
        render_args.env
    );
    Ok(code)
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}
