//! The command line: parsing (in `args`) and dispatch. Each command builds its stage's request,
//! runs the stage, prints the report and turns the outcome into the exit status.

mod args;

use std::fmt::Display;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::adapters::git;
use crate::exit::{self, ExitStatus};
use crate::formats::environments::RepositoryConfig;
use crate::formats::layout;
use crate::report::{self, OutputFormat, progress::Terminal};
use crate::stages::deploy::diff::CompareError;
use crate::stages::deploy::diff::{self, DiffRequest};
use crate::stages::deploy::history;
use crate::stages::deploy::source::{DeploySource, SourceError};
use crate::stages::deploy::status::{self, StatusRequest};
use crate::stages::deploy::{self, DeployError, DeployReport, DeployRequest};
use crate::stages::doctor::{self, DoctorOptions};
use crate::stages::update::{self, UpdateRequest};
use crate::stages::{build, ci, commit, render};

pub use args::Cli;
use args::{
    BuildArgs, Command, CommitFlags, DeleteArgs, DeleteTarget, DeployArgs, DeployTarget, DiffArgs,
    DiffTarget, GroupArgs, ImagesCommand, RenderArgs, StatusArgs, StatusTarget,
};

/// Runs the parsed command; the exit code follows each command's documented contract.
pub async fn run(mut cli: Cli) -> anyhow::Result<ExitCode> {
    let root = git::repository_root(&cli.repo).unwrap_or(cli.repo.clone());
    // doctor reports a bad umbrella.yaml as one of its checks.
    let config = match RepositoryConfig::load(&root) {
        Ok(config) => config,
        Err(_) if matches!(cli.command, Command::Doctor { .. }) => RepositoryConfig::default(),
        Err(error) => {
            eprintln!("umbrella: {error}");
            return Ok(code(exit::REFUSED));
        }
    };
    if let Some(group) = cli.command.group_mut() {
        group.context = group
            .context
            .take()
            .or_else(|| config.environment(&group.env).context);
    }
    match cli.command {
        Command::Build(args) => run_build(&root, &args).await,
        Command::Render(args) => {
            let request = args.request(&root, config.environment(&args.env));
            run_render(&request, &args).await
        }
        Command::Commit(args) => run_commit(&root, &args.env, &args.flags),
        Command::Ci {
            render,
            commit,
            update_images,
        } => run_ci(&root, &config, &render, &commit, update_images).await,
        Command::Deploy(DeployTarget::AppGroup(args)) => run_deploy(&root, &args, None).await,
        Command::Rollback { deploy, to } => run_rollback(&root, &deploy, to).await,
        Command::Diff(DiffTarget::AppGroup(args)) => run_diff(&root, &args).await,
        Command::Status(StatusTarget::AppGroup(args)) => run_status(&root, &args).await,
        Command::Delete(DeleteTarget::AppGroup(args)) => run_delete(&root, &args).await,
        Command::History { group, output } => run_history(&root, &group, output).await,
        Command::Images(ImagesCommand::Update(args)) => {
            let request = args.request(&root, config.environment(&args.env));
            run_update(&request, args.output).await
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
            print(|out| report::write_checks(out, &checks, output))?;
            let ok = checks.iter().all(|c| c.ok);
            Ok(code(if ok { exit::SUCCESS } else { exit::FAILURE }))
        }
    }
}

fn code(status: u8) -> ExitCode {
    ExitCode::from(status)
}

/// Says why a command failed and returns the exit status the failure stands for.
fn failed(command: &str, error: &(impl Display + ExitStatus)) -> ExitCode {
    eprintln!("umbrella {command}: {error}");
    code(error.exit_code())
}

/// Writes a report on stdout.
fn print(
    write: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    write(&mut std::io::stdout().lock()).context("writing the report")
}

fn progress_for(output: OutputFormat) -> Arc<Terminal> {
    Arc::new(Terminal::for_output(output))
}

async fn run_build(root: &Path, args: &BuildArgs) -> anyhow::Result<ExitCode> {
    match build::build(&args.request(root), progress_for(args.output)).await {
        Ok(built) => {
            print(|out| report::write_build(out, &built, args.output))?;
            Ok(code(built.exit_code()))
        }
        Err(error) => Ok(failed("build", &error)),
    }
}

async fn run_render(
    request: &render::RenderRequest,
    args: &RenderArgs,
) -> anyhow::Result<ExitCode> {
    let rendered = render::run(request, progress_for(args.output)).await;
    print_render(args, &rendered)?;
    Ok(match rendered {
        Ok(_) => code(exit::SUCCESS),
        Err(error) => code(error.exit_code()),
    })
}

/// The render's report, or `--check`'s verdict, or why it failed.
fn print_render(
    args: &RenderArgs,
    rendered: &Result<render::Rendered, render::RenderError>,
) -> anyhow::Result<()> {
    let command = if args.check {
        "render --check"
    } else {
        "render"
    };
    match rendered {
        Ok(rendered) if args.check => {
            eprintln!("umbrella {command}: {}", report::check_verdict(rendered));
            Ok(())
        }
        Ok(rendered) => print(|out| report::write_render(out, rendered, args.output)),
        Err(error @ render::RenderError::Stale { diff, .. }) => {
            print(|out| writeln!(out, "{diff}"))?;
            eprintln!("umbrella {command}: {error}");
            Ok(())
        }
        Err(error) => {
            eprintln!("umbrella {command}: {error}");
            Ok(())
        }
    }
}

fn run_commit(root: &Path, env: &str, flags: &CommitFlags) -> anyhow::Result<ExitCode> {
    let committed = commit::commit_state(&flags.request(root, env));
    print_commit(env, &committed)?;
    Ok(match committed {
        Ok(_) => code(exit::SUCCESS),
        Err(error) => code(error.exit_code()),
    })
}

fn print_commit(
    env: &str,
    committed: &Result<commit::CommitOutcome, commit::CommitError>,
) -> anyhow::Result<()> {
    match committed {
        Ok(outcome) => print(|out| report::write_commit(out, env, outcome)),
        Err(error) => {
            eprintln!("umbrella commit: {error}");
            Ok(())
        }
    }
}

async fn run_ci(
    root: &Path,
    config: &RepositoryConfig,
    args: &RenderArgs,
    flags: &CommitFlags,
    update_images: bool,
) -> anyhow::Result<ExitCode> {
    let environment = config.environment(&args.env);
    let request = ci::CiRequest {
        update: update_images.then(|| flags.update_request(root, &args.env, environment.clone())),
        build: args.build_args().request(root),
        render: args.request(root, environment),
        commit: flags.request(root, &args.env),
    };
    let done = match ci::run(&request, progress_for(args.output)).await {
        Ok(done) => done,
        Err(error) => {
            let stage = match error {
                ci::CiError::Update(_) => "images update",
                ci::CiError::Build(_) => "build",
            };
            let status = failed("ci", &error);
            eprintln!("umbrella ci: stopped at {stage}");
            return Ok(status);
        }
    };
    if let Some(updated) = &done.update {
        print(|out| report::write_update(out, updated, args.output))?;
    }
    print(|out| report::write_build(out, &done.build, args.output))?;
    if let Some(rendered) = &done.render {
        print_render(args, rendered)?;
    }
    if let Some(committed) = &done.commit {
        print_commit(&args.env, committed)?;
    }
    match done.stopped_at() {
        Some(stage) => eprintln!("umbrella ci: stopped at {stage}"),
        None if done.commit.is_some() => eprintln!("umbrella ci: {}", report::ci_summary(&done)),
        None => {}
    }
    Ok(code(done.exit_code()))
}

/// Asks on a terminal; anything but y/yes declines. Never asks when stdin is not a terminal.
fn confirm(question: &str) -> bool {
    use std::io::{BufRead, IsTerminal};
    if !std::io::stdin().is_terminal() {
        return true;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim().to_lowercase().as_str(), "y" | "yes")
}

/// Reads the state to deploy or compare, warning about what its commits cannot tell; a failure
/// is said as the command's error type `E` has it.
fn read_source<E: From<SourceError> + Display + ExitStatus>(
    command: &str,
    root: &Path,
    group: &GroupArgs,
    revision: Option<&str>,
) -> Result<DeploySource, ExitCode> {
    let source =
        DeploySource::read(root, &group.env, revision).map_err(|e| failed(command, &E::from(e)))?;
    for warning in report::source_warnings(command, &source) {
        eprintln!("{warning}");
    }
    Ok(source)
}

async fn run_deploy(
    root: &Path,
    args: &DeployArgs,
    revision: Option<String>,
) -> anyhow::Result<ExitCode> {
    let apply = &args.apply;
    // Only `rollback` names the revision here.
    let rollback = revision.is_some();
    let revision = revision.or(apply.revision.clone());
    let source = match read_source::<SourceError>("deploy", root, &apply.group, revision.as_deref())
    {
        Ok(source) => source,
        Err(status) => return Ok(status),
    };
    let request = DeployRequest {
        group: apply.group.group(),
        source,
        wait_timeout: args.write.wait_timeout,
        concurrency: apply.concurrency,
        force_conflicts: apply.force_conflicts,
        adopt: apply.adopt,
        lock_timeout: args.write.lock_timeout,
        allow_empty: args.allow_empty,
        rollback,
    };
    let question = format!(
        "Deploy {} apps of {} to the cluster?",
        request.source.commits.len(),
        apply.group.env
    );
    if !args.write.yes && !confirm(&question) {
        eprintln!("umbrella deploy: not confirmed, nothing applied");
        return Ok(code(exit::FAILURE));
    }
    let progress = progress_for(args.output);
    let outcome = deploy::deploy(&request, progress).await;
    finish_deploy("deploy", outcome, args.output)
}

/// Prints what a deploy or delete did (also when it failed) and returns its exit status.
fn finish_deploy(
    command: &str,
    outcome: Result<DeployReport, DeployError>,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let (report, status) = match &outcome {
        Ok(report) => (Some(report), code(exit::SUCCESS)),
        Err(error @ DeployError::Invalid(_)) => {
            eprintln!("umbrella {command}: nothing was applied; {error}");
            (None, code(error.exit_code()))
        }
        Err(error) => (error.report(), failed(command, error)),
    };
    if let Some(report) = report {
        print(|out| report::write_deploy(out, report, output))?;
    }
    Ok(status)
}

async fn run_diff(root: &Path, args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let apply = &args.apply;
    let source =
        match read_source::<CompareError>("diff", root, &apply.group, apply.revision.as_deref()) {
            Ok(source) => source,
            Err(status) => return Ok(status),
        };
    let request = DiffRequest {
        group: apply.group.group(),
        source,
        concurrency: apply.concurrency,
        force_conflicts: apply.force_conflicts,
        adopt: apply.adopt,
    };
    let compared = match diff::diff_group(&request, progress_for(args.output)).await {
        Ok(compared) => compared,
        Err(error) => return Ok(failed("diff", &error)),
    };
    let color = args.color.enabled();
    print(|out| report::write_diff(out, &compared, args.output, color))?;
    Ok(code(compared.exit_code(args.exit_code)))
}

async fn run_status(root: &Path, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let request = StatusRequest {
        root: root.to_path_buf(),
        group: args.group.group(),
        concurrency: args.concurrency,
    };
    let found = match status::status_group(&request, progress_for(args.output)).await {
        Ok(found) => found,
        Err(error) => return Ok(failed("status", &error)),
    };
    let color = args.color.enabled();
    print(|out| report::write_status(out, &found, args.output, color))?;
    if found.has_errors() {
        eprintln!("umbrella status: some objects could not be read or compared (see above)");
    }
    Ok(code(found.exit_code(args.fail_on)))
}

async fn run_delete(root: &Path, args: &DeleteArgs) -> anyhow::Result<ExitCode> {
    let question = format!(
        "Delete everything the apps of {} own in the cluster?",
        args.group.env
    );
    if !args.write.yes && !confirm(&question) {
        eprintln!("umbrella delete: not confirmed, nothing deleted");
        return Ok(code(exit::FAILURE));
    }
    // The state's delete hooks run, when the repository has a state for the environment.
    let hooks_from = if layout::env_dir(root, &args.group.env).is_dir() {
        match read_source::<SourceError>("delete", root, &args.group, None) {
            Ok(source) => Some(source),
            Err(status) => return Ok(status),
        }
    } else {
        None
    };
    let progress = progress_for(args.output);
    let outcome =
        deploy::delete_group(args.request(hooks_from, git::repository_id(root)), progress).await;
    finish_deploy("delete", outcome, args.output)
}

async fn run_update(request: &UpdateRequest, output: OutputFormat) -> anyhow::Result<ExitCode> {
    match update::run(request).await {
        Ok(updated) => {
            print(|out| report::write_update(out, &updated, output))?;
            Ok(code(exit::SUCCESS))
        }
        Err(error) => {
            eprintln!("umbrella images update: {error}");
            Ok(code(error.exit_code()))
        }
    }
}

async fn run_history(
    root: &Path,
    group: &GroupArgs,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let commits = history::state_commits(root, &group.env)?;
    let live = match history::recorded_commits(&group.group()).await {
        Ok(recorded) => history::live_commit(&commits, &recorded).map(|c| c.sha.clone()),
        Err(reason) => {
            eprintln!("umbrella history: cannot tell which commit is live: {reason}");
            None
        }
    };
    print(|out| report::write_history(out, &commits, live.as_deref(), output))?;
    Ok(code(exit::SUCCESS))
}

async fn run_rollback(
    root: &Path,
    args: &DeployArgs,
    to: Option<String>,
) -> anyhow::Result<ExitCode> {
    let group = &args.apply.group;
    let target = match to {
        Some(revision) => revision,
        None => match history::previous_commit(root, &group.group()).await {
            Ok(previous) => previous,
            Err(error) => return Ok(failed("rollback", &error)),
        },
    };
    eprintln!("umbrella rollback: deploying {} as of {target}", group.env);
    run_deploy(root, args, Some(target)).await
}
