//! The command line: parsing and dispatch only; the work is in the stage modules.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::build::{self, BuildError, BuildReport, BuildRequest};
use crate::doctor::{self, DoctorOptions};
use crate::lock::{ImagesLock, Origin};
use crate::render::{self, RenderError, RenderRequest, Rendered, state_dir};
use crate::report::{self, ColorChoice, OutputFormat, Progress};
use crate::sources::SOURCES_FILE;
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
    /// Deploy an environment's state to the cluster.
    #[command(subcommand)]
    Deploy(DeployTarget),
    /// Show what a deploy would change, by server-side dry run; nothing is written.
    #[command(subcommand)]
    Diff(DiffTarget),
    /// Per app: the live state commit, drift from it, and each object's health.
    #[command(subcommand)]
    Status(StatusTarget),
    /// Delete what an environment's group owns in the cluster.
    #[command(subcommand)]
    Delete(DeleteTarget),
    /// Deploy an earlier state commit again: --to REV, or the one before the commit now live.
    ///
    /// Exit status: as `deploy app-group`; 2 when there is no earlier state commit.
    Rollback {
        #[command(flatten)]
        deploy: DeployArgs,
        /// The revision to deploy (default: the state commit before the live one).
        #[arg(long)]
        to: Option<String>,
    },
    /// The state commits of an environment, newest first, marking the one live in the cluster.
    History {
        #[command(flatten)]
        group: GroupArgs,
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

#[derive(Debug, Subcommand)]
pub enum DeployTarget {
    /// Apply every app of umbrella-state/ENV in dependency order, wait until ready, prune.
    ///
    /// Exit status: 0 deployed, 1 failed (the report says what was applied), 2 bad input
    /// (nothing applied), 3 timed out waiting (the objects not ready are named).
    AppGroup(DeployArgs),
}

#[derive(Debug, Subcommand)]
pub enum DiffTarget {
    /// Compare every object of umbrella-state/ENV with the cluster (server-side dry run), and
    /// list what pruning would delete.
    ///
    /// Exit status: 0 no changes (or changes without --exit-code), 2 changes with --exit-code,
    /// 1 failed.
    AppGroup(DiffArgs),
}

#[derive(Debug, Subcommand)]
pub enum StatusTarget {
    /// The live state commit of each app, whether the cluster still matches it, and the health
    /// of every object by deploy's readiness rules.
    ///
    /// Exit status: 0 in sync and healthy, 2 drifted or unhealthy (see --fail-on), 1 failed.
    AppGroup(StatusArgs),
}

/// Which app group, in which cluster.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// The environment: its apps are the directories of umbrella-state/ENV.
    env: String,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    context: Option<String>,
    /// Namespace of the inventories and the deploy lock.
    #[arg(long, default_value = "umbrella-system")]
    inventory_namespace: String,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    group: GroupArgs,
    /// Compare the state as committed at this git revision instead of the work tree's.
    #[arg(long)]
    revision: Option<String>,
    /// Objects compared at the same time.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Show what `deploy --force-conflicts` would do, without noting the conflicts.
    #[arg(long)]
    force_conflicts: bool,
    /// Show what `deploy --adopt` would do with objects another app owns.
    #[arg(long)]
    adopt: bool,
    /// Exit 2 when a deploy would change something (a drift check).
    #[arg(long)]
    exit_code: bool,
    #[arg(long, value_enum, default_value_t)]
    color: ColorChoice,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    output: OutputFormat,
}

/// What makes `status` exit 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FailOn {
    /// Drift or an unhealthy object.
    #[default]
    Any,
    Drift,
    Unhealthy,
    /// Always exit 0 once the status was read.
    Never,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    group: GroupArgs,
    /// Objects compared at the same time.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// What makes the command exit 2.
    #[arg(long, value_enum, default_value_t)]
    fail_on: FailOn,
    #[arg(long, value_enum, default_value_t)]
    color: ColorChoice,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum DeleteTarget {
    /// Delete every object the group's inventories own (reverse order, waited until gone) and
    /// the inventories. Asks on a terminal unless --yes.
    ///
    /// Exit status: 0 deleted, 1 failed, 3 timed out.
    AppGroup(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    group: GroupArgs,
    /// How long to wait for everything to be gone.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    wait_timeout: std::time::Duration,
    /// How long to wait for a deploy of the group to finish (default: fail at once).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    lock_timeout: std::time::Duration,
    /// Do not ask for confirmation on a terminal.
    #[arg(long, short = 'y')]
    yes: bool,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    group: GroupArgs,
    /// How long to wait for everything to be ready, e.g. 90s, 10m, 1h.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    wait_timeout: std::time::Duration,
    /// Changes applied and waited for at the same time.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Take fields that other field managers own (server-side apply conflicts).
    #[arg(long)]
    force_conflicts: bool,
    /// Take over objects that another umbrella app owns.
    #[arg(long)]
    adopt: bool,
    /// How long to wait for another deploy of the group to finish (default: fail at once).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    lock_timeout: std::time::Duration,
    /// Deploy the state as committed at this git revision (read from git's objects; the work
    /// tree is not touched), e.g. to roll back.
    #[arg(long)]
    revision: Option<String>,
    /// Do not ask for confirmation on a terminal.
    #[arg(long, short = 'y')]
    yes: bool,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    output: OutputFormat,
}

/// `90s`, `10m`, `1h`, or plain seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a duration such as 90s, 10m or 1h"))?;
    let seconds = match unit {
        "" | "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (s, m or h)")),
    };
    Ok(std::time::Duration::from_secs(seconds))
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
        Command::Deploy(DeployTarget::AppGroup(args)) => run_deploy(&root, &args).await,
        Command::Rollback { deploy, to } => run_rollback(&root, deploy, to).await,
        Command::Diff(DiffTarget::AppGroup(args)) => run_diff(&root, &args).await,
        Command::Status(StatusTarget::AppGroup(args)) => run_status(&root, &args).await,
        Command::Delete(DeleteTarget::AppGroup(args)) => run_delete(&args).await,
        Command::History { group, output } => run_history(&root, &group, output).await,
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
    let mut rendered = render::render(&render_request(root, args))
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
    let write_started = std::time::Instant::now();
    rendered.files.write(&dir).map_err(|e| {
        eprintln!("umbrella render: writing {}: {e}", dir.display());
        ExitCode::FAILURE
    })?;
    rendered.write_ms = write_started.elapsed().as_millis();
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

/// The state commit of each app (by app name): see [`state::content_commits`]. Warns when a
/// shallow clone hides them.
fn app_commits(
    root: &Path,
    env: &str,
    source: state::StateSource<'_>,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let relative = format!("{}/{env}", render::STATE_DIR);
    let commits = state::content_commits(root, &relative, source)?;
    if commits.values().any(|c| c == state::UNCOMMITTED) && state::is_shallow(root) {
        eprintln!(
            "umbrella: this is a shallow clone, so the commits of some apps are unknown and recorded as `{}`; fetch the full history (actions/checkout: fetch-depth: 0)",
            state::UNCOMMITTED
        );
    }
    Ok(commits
        .into_iter()
        .map(|(name, commit)| (format!("{env}-{name}"), commit))
        .collect())
}

/// Asks on a terminal; anything but y/yes declines. Never asks when stdin is not a terminal.
fn confirm(question: &str) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return true;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim().to_lowercase().as_str(), "y" | "yes")
}

/// The state to deploy: the work tree's, or the one a revision holds (exported to `scratch`),
/// with the commit of each app.
fn deploy_source(
    root: &Path,
    env: &str,
    revision: Option<&str>,
    scratch: &Path,
) -> anyhow::Result<(PathBuf, std::collections::BTreeMap<String, String>)> {
    let Some(revision) = revision else {
        let dir = state_dir::path(root, env);
        let commits = app_commits(root, env, state::StateSource::WorkTree(&dir))?;
        return Ok((dir, commits));
    };
    let relative = format!("{}/{env}", render::STATE_DIR);
    state::export_tree(root, revision, &relative, scratch)?;
    let commits = app_commits(root, env, state::StateSource::Revision(revision))
        .with_context(|| format!("reading {relative} at {revision}"))?;
    Ok((scratch.to_path_buf(), commits))
}

/// Names the apps whose state no commit holds: they deploy, but cannot be rolled back to or
/// checked for drift by commit.
fn warn_uncommitted(commits: &std::collections::BTreeMap<String, String>) {
    let uncommitted: Vec<&str> = commits
        .iter()
        .filter(|(_, commit)| *commit == state::UNCOMMITTED)
        .map(|(app, _)| app.as_str())
        .collect();
    if !uncommitted.is_empty() {
        eprintln!(
            "umbrella deploy: no commit holds the state of {} (uncommitted changes? after `git checkout REV -- umbrella-state/ENV`, files added since REV stay: use --no-overlay)",
            uncommitted.join(", ")
        );
    }
}

async fn run_deploy(root: &Path, args: &DeployArgs) -> anyhow::Result<ExitCode> {
    use crate::deploy::{self, DeployRequest};
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    let (state_dir, commits) = match deploy_source(
        root,
        &args.group.env,
        args.revision.as_deref(),
        scratch.path(),
    ) {
        Ok(source) => source,
        Err(error) => {
            eprintln!("umbrella deploy: {error:#}");
            return Ok(ExitCode::from(2));
        }
    };
    warn_uncommitted(&commits);
    let request = DeployRequest {
        state_dir,
        env: args.group.env.clone(),
        commits,
        context: args.group.context.clone(),
        wait_timeout: args.wait_timeout,
        concurrency: args.concurrency,
        force_conflicts: args.force_conflicts,
        adopt: args.adopt,
        inventory_namespace: args.group.inventory_namespace.clone(),
        lock_timeout: args.lock_timeout,
    };
    if !args.yes
        && !confirm(&format!(
            "Deploy {} apps of {} to the cluster?",
            request.commits.len(),
            args.group.env
        ))
    {
        eprintln!("umbrella deploy: not confirmed, nothing applied");
        return Ok(ExitCode::from(1));
    }
    let progress = progress_for(args.output);
    let (report, code) = deploy_outcome("deploy", deploy::deploy(&request, &progress).await);
    if let Some(report) = report {
        report::write_deploy(&mut std::io::stdout().lock(), &report, args.output)
            .context("writing the report")?;
    }
    Ok(code)
}

/// Prints the report of a command that only reads the cluster; `None`, the error named, when
/// it produced none.
fn printed<R>(
    command: &str,
    result: Result<R, crate::deploy::DeployError>,
    write: impl FnOnce(&mut std::io::StdoutLock<'static>, &R) -> std::io::Result<()>,
) -> anyhow::Result<Option<R>> {
    match result {
        Ok(report) => {
            write(&mut std::io::stdout().lock(), &report)
                .with_context(|| format!("writing the {command} report"))?;
            Ok(Some(report))
        }
        Err(error) => {
            eprintln!("umbrella {command}: {error}");
            Ok(None)
        }
    }
}

async fn run_diff(root: &Path, args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    let group = &args.group;
    let (state_dir, commits) =
        match deploy_source(root, &group.env, args.revision.as_deref(), scratch.path()) {
            Ok(source) => source,
            Err(error) => {
                eprintln!("umbrella diff: {error:#}");
                return Ok(ExitCode::FAILURE);
            }
        };
    let request = crate::deploy::DeployRequest {
        state_dir,
        env: group.env.clone(),
        commits,
        context: group.context.clone(),
        wait_timeout: std::time::Duration::ZERO,
        concurrency: args.concurrency,
        force_conflicts: args.force_conflicts,
        adopt: args.adopt,
        inventory_namespace: group.inventory_namespace.clone(),
        lock_timeout: std::time::Duration::ZERO,
    };
    let result = crate::deploy::compare::diff_group(&request).await;
    let Some(report) = printed("diff", result, |out, report| {
        report::write_diff(out, report, args.output, args.color.enabled())
    })?
    else {
        return Ok(ExitCode::FAILURE);
    };
    Ok(if report.has_errors() {
        ExitCode::FAILURE
    } else if args.exit_code && report.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

async fn run_status(root: &Path, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let request = crate::deploy::compare::StatusRequest {
        root: root.to_path_buf(),
        env: args.group.env.clone(),
        context: args.group.context.clone(),
        inventory_namespace: args.group.inventory_namespace.clone(),
        concurrency: args.concurrency,
    };
    let result = crate::deploy::compare::status_group(&request).await;
    let Some(report) = printed("status", result, |out, report| {
        report::write_status(out, report, args.output, args.color.enabled())
    })?
    else {
        return Ok(ExitCode::FAILURE);
    };
    if report.has_errors() {
        eprintln!("umbrella status: some objects could not be read or compared (see above)");
        return Ok(ExitCode::FAILURE);
    }
    let deployed = !report.apps.is_empty();
    let failing = match args.fail_on {
        FailOn::Any => !deployed || report.drifted() || !report.healthy(),
        FailOn::Drift => !deployed || report.drifted(),
        FailOn::Unhealthy => !deployed || !report.healthy(),
        FailOn::Never => false,
    };
    Ok(if failing {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The deploy stage's result as a report and the documented exit status.
fn deploy_outcome(
    command: &str,
    result: Result<crate::deploy::DeployReport, crate::deploy::DeployError>,
) -> (Option<crate::deploy::DeployReport>, ExitCode) {
    use crate::deploy::DeployError;
    match result {
        Ok(report) => (Some(report), ExitCode::SUCCESS),
        Err(error) => {
            match &error {
                DeployError::Invalid(_) => {
                    eprintln!("umbrella {command}: nothing was applied; {error}")
                }
                _ => eprintln!("umbrella {command}: {error}"),
            }
            let code = match &error {
                DeployError::Invalid(_) => ExitCode::from(2),
                DeployError::Timeout { .. } => ExitCode::from(3),
                _ => ExitCode::FAILURE,
            };
            (error.report().cloned(), code)
        }
    }
}

async fn run_delete(args: &DeleteArgs) -> anyhow::Result<ExitCode> {
    if !args.yes
        && !confirm(&format!(
            "Delete everything the apps of {} own in the cluster?",
            args.group.env
        ))
    {
        eprintln!("umbrella delete: not confirmed, nothing deleted");
        return Ok(ExitCode::from(1));
    }
    let request = crate::deploy::DeleteRequest {
        env: args.group.env.clone(),
        context: args.group.context.clone(),
        wait_timeout: args.wait_timeout,
        inventory_namespace: args.group.inventory_namespace.clone(),
        lock_timeout: args.lock_timeout,
    };
    let (report, code) = deploy_outcome(
        "delete",
        crate::deploy::delete_group(&request, &progress_for(args.output)).await,
    );
    if let Some(report) = report {
        report::write_deploy(&mut std::io::stdout().lock(), &report, args.output)
            .context("writing the report")?;
    }
    Ok(code)
}

/// The state commit live in the cluster: the newest of the environment's state commits that an
/// inventory of its group records. `Err` says why it could not be read.
async fn live_commit(
    history: &[state::StateCommit],
    group: &GroupArgs,
) -> Result<Option<String>, String> {
    let cluster = crate::cluster::Cluster::connect(group.context.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let inventories = crate::deploy::inventory::Inventories::new(
        cluster.client,
        &group.inventory_namespace,
        &group.env,
    )
    .list()
    .await?;
    let recorded: std::collections::BTreeSet<String> =
        inventories.into_iter().map(|i| i.commit).collect();
    Ok(history
        .iter()
        .find(|c| recorded.contains(&c.sha))
        .map(|c| c.sha.clone()))
}

fn state_history(root: &Path, env: &str) -> anyhow::Result<Vec<state::StateCommit>> {
    state::history(root, &format!("{}/{env}", render::STATE_DIR)).map_err(anyhow::Error::from)
}

async fn run_history(
    root: &Path,
    group: &GroupArgs,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let history = state_history(root, &group.env)?;
    let live = match live_commit(&history, group).await {
        Ok(live) => live,
        Err(reason) => {
            eprintln!("umbrella history: cannot tell which commit is live: {reason}");
            None
        }
    };
    report::write_history(
        &mut std::io::stdout().lock(),
        &history,
        live.as_deref(),
        output,
    )
    .context("writing the history")?;
    Ok(ExitCode::SUCCESS)
}

async fn run_rollback(
    root: &Path,
    mut deploy: DeployArgs,
    to: Option<String>,
) -> anyhow::Result<ExitCode> {
    let target = match to {
        Some(revision) => revision,
        None => {
            let history = state_history(root, &deploy.group.env)?;
            let live = live_commit(&history, &deploy.group).await;
            let previous = match &live {
                Ok(Some(live)) => history.iter().skip_while(|c| &c.sha != live).nth(1),
                _ => None,
            };
            match (previous, live) {
                (Some(commit), _) => commit.sha.clone(),
                (None, Ok(Some(live))) => {
                    eprintln!(
                        "umbrella rollback: no state commit of {} before the live one ({})",
                        deploy.group.env,
                        &live[..12]
                    );
                    return Ok(ExitCode::from(2));
                }
                (None, Ok(None)) => {
                    eprintln!(
                        "umbrella rollback: no state commit of {} is live in the cluster; pass --to REV",
                        deploy.group.env
                    );
                    return Ok(ExitCode::from(2));
                }
                (None, Err(reason)) => {
                    eprintln!("umbrella rollback: cannot tell which commit is live: {reason}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    };
    eprintln!(
        "umbrella rollback: deploying {} as of {target}",
        deploy.group.env
    );
    deploy.revision = Some(target);
    run_deploy(root, &deploy).await
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}
