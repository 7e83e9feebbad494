//! The command line's words: every command, its flags, and the stage request each one becomes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::adapters::git::RepositoryId;
use crate::formats::environments::{self, Environment};
use crate::formats::layout::{self, DEFAULT_BUILD_LOCK};
use crate::report::{ColorChoice, OutputFormat};
use crate::stages::build::BuildRequest;
use crate::stages::commit::CommitRequest;
use crate::stages::deploy::source::DeploySource;
use crate::stages::deploy::status::FailOn;
use crate::stages::deploy::{DeleteRequest, Group};
use crate::stages::render::RenderRequest;
use crate::stages::render::capabilities::Explicit;
use crate::stages::update::UpdateRequest;

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
    /// build, then render, then commit; stops at the first stage that fails. With
    /// --update-images, image tags are moved by policy first, as a commit of their own.
    Ci {
        #[command(flatten)]
        render: RenderArgs,
        #[command(flatten)]
        commit: CommitFlags,
        /// Run `images update` first (its own commit of the values files), then build,
        /// render and commit the state that follows from it.
        #[arg(long)]
        update_images: bool,
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
    /// Image tags moved by policy (umbrella-chart/image-policies.yaml and values-file markers).
    #[command(subcommand)]
    Images(ImagesCommand),
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

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Move every marked image tag of ENV's values files to what its policy picks among the
    /// registry's tags, and commit the change.
    ///
    /// Exit status: 0 updated or nothing to do, 1 a registry or git error (nothing written),
    /// 2 a bad policy or marker (nothing written).
    Update(UpdateArgs),
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The environment: values.yaml and its values files (values-ENV.yaml) are updated.
    #[arg(long, value_parser = layout::parse_env)]
    pub env: String,
    /// Print what would change; write and commit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only these policies (repeat the flag).
    #[arg(long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,
    /// Move a tag back when it is newer than every candidate (kept and reported otherwise).
    #[arg(long)]
    pub allow_downgrade: bool,
    /// The commit's author, `Name <email>` (default: git's configuration).
    #[arg(long)]
    pub author: Option<String>,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: OutputFormat,
}

impl UpdateArgs {
    pub fn request(&self, root: &Path, environment: Environment) -> UpdateRequest {
        UpdateRequest {
            root: root.to_path_buf(),
            env: self.env.clone(),
            environment,
            policies: self.policies.clone(),
            dry_run: self.dry_run,
            allow_downgrade: self.allow_downgrade,
            author: self.author.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build only these sources (their `image` names); the lock keeps the others' entries.
    #[arg(long, num_args = 1.., value_name = "IMAGE")]
    pub only: Vec<String>,
    /// Images built at the same time (default: number of cores, at least 2).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Where to write the images lock.
    #[arg(long, default_value = DEFAULT_BUILD_LOCK)]
    pub lock_output: PathBuf,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: OutputFormat,
}

impl BuildArgs {
    pub fn request(&self, root: &Path) -> BuildRequest {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        BuildRequest {
            sources_file: root.join(layout::SOURCES_FILE),
            lock_output: root.join(&self.lock_output),
            root: root.to_path_buf(),
            only: self.only.clone(),
            concurrency: self.concurrency.unwrap_or(cores),
        }
    }
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The environment: values-ENV.yaml is applied and the state goes to umbrella-state/ENV.
    #[arg(long, value_parser = layout::parse_env)]
    pub env: String,
    /// More values files, applied after values.yaml and values-ENV.yaml.
    #[arg(long = "values", short = 'f', value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// helm's release name (default: the chart's name).
    #[arg(long)]
    pub release: Option<String>,
    /// Namespace of namespaced objects (default: ENV).
    #[arg(long, short = 'n', value_parser = parse_namespace)]
    pub namespace: Option<String>,
    /// The kube context whose cluster's Kubernetes version and API versions charts see
    /// (default: umbrella.yaml's; recorded in umbrella-state/ENV/capabilities.yaml, used when
    /// the cluster does not answer).
    #[arg(long)]
    pub context: Option<String>,
    /// The Kubernetes version charts see (.Capabilities.KubeVersion), e.g. v1.34.2.
    #[arg(long, value_parser = parse_kube_version)]
    pub kube_version: Option<String>,
    /// API versions charts may count on (.Capabilities.APIVersions): group/version or
    /// group/version/Kind; repeat or separate with commas.
    #[arg(long, value_delimiter = ',', value_parser = parse_api_version)]
    pub api_versions: Vec<String>,
    /// The build stage's images lock.
    #[arg(long = "lock", default_value = DEFAULT_BUILD_LOCK)]
    pub build_lock: PathBuf,
    /// Write Secrets in plain text into the state (by default they are SOPS-encrypted to the
    /// recipients of .sops.yaml's matching creation rule, or refused without one).
    #[arg(long)]
    pub allow_plaintext_secrets: bool,
    /// Render to memory and compare with umbrella-state/ENV: exit 1 with a diff if they differ.
    /// Without an age key, Secrets are compared but for their values, and listed (exit 1).
    #[arg(long)]
    pub check: bool,
    /// With --check and no age key: pass when everything but the Secrets' values matches (for
    /// pull requests from forks, which get no keys).
    #[arg(long, requires = "check")]
    pub check_without_secrets: bool,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: OutputFormat,
}

impl RenderArgs {
    pub fn request(&self, root: &Path, environment: Environment) -> RenderRequest {
        RenderRequest {
            environment,
            root: root.to_path_buf(),
            env: self.env.clone(),
            release: self.release.clone(),
            namespace: self.namespace.clone(),
            extra_values: self.values.clone(),
            context: self.context.clone(),
            capabilities: Explicit {
                kube_version: self.kube_version.clone(),
                api_versions: self.api_versions.clone(),
            },
            build_lock: root.join(&self.build_lock),
            allow_plaintext_secrets: self.allow_plaintext_secrets,
            check: self.check,
            check_without_secrets: self.check_without_secrets,
        }
    }

    /// The build `ci` runs before rendering: every source, into the lock the render reads.
    pub fn build_args(&self) -> BuildArgs {
        BuildArgs {
            only: Vec::new(),
            concurrency: None,
            lock_output: self.build_lock.clone(),
            output: self.output,
        }
    }
}

#[derive(Debug, Args)]
pub struct CommitFlags {
    /// Commit although the source tree has uncommitted changes.
    #[arg(long)]
    pub allow_dirty: bool,
    /// Commit on a detached HEAD.
    #[arg(long)]
    pub allow_detached: bool,
    /// The commit's author, `Name <email>` (default: git's configuration).
    #[arg(long)]
    pub author: Option<String>,
}

impl CommitFlags {
    /// The `images update` that `ci --update-images` runs first: every policy, no downgrade.
    pub fn update_request(
        &self,
        root: &Path,
        env: &str,
        environment: Environment,
    ) -> UpdateRequest {
        UpdateRequest {
            root: root.to_path_buf(),
            env: env.to_string(),
            environment,
            policies: Vec::new(),
            dry_run: false,
            allow_downgrade: false,
            author: self.author.clone(),
        }
    }

    pub fn request(&self, root: &Path, env: &str) -> CommitRequest {
        CommitRequest {
            root: root.to_path_buf(),
            env: env.to_string(),
            allow_dirty: self.allow_dirty,
            allow_detached: self.allow_detached,
            author: self.author.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The environment whose state is committed.
    #[arg(long, value_parser = layout::parse_env)]
    pub env: String,
    #[command(flatten)]
    pub flags: CommitFlags,
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

#[derive(Debug, Subcommand)]
pub enum DeleteTarget {
    /// Delete every object the group's inventories own (reverse order, waited until gone) and
    /// the inventories. Asks on a terminal unless --yes.
    ///
    /// Exit status: 0 deleted, 1 failed, 3 timed out.
    AppGroup(DeleteArgs),
}

/// Which app group, in which cluster.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// The environment: its apps are the directories of umbrella-state/ENV.
    #[arg(value_parser = layout::parse_env)]
    pub env: String,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Namespace of the inventories and the deploy lock.
    #[arg(long, default_value = "umbrella-system", value_parser = parse_namespace)]
    pub inventory_namespace: String,
}

impl Command {
    /// The app group a command acts on, if it acts on one.
    pub fn group_mut(&mut self) -> Option<&mut GroupArgs> {
        match self {
            Command::Deploy(DeployTarget::AppGroup(args)) => Some(&mut args.apply.group),
            Command::Rollback { deploy, .. } => Some(&mut deploy.apply.group),
            Command::Diff(DiffTarget::AppGroup(args)) => Some(&mut args.apply.group),
            Command::Status(StatusTarget::AppGroup(args)) => Some(&mut args.group),
            Command::Delete(DeleteTarget::AppGroup(args)) => Some(&mut args.group),
            Command::History { group, .. } => Some(group),
            _ => None,
        }
    }
}

impl GroupArgs {
    pub fn group(&self) -> Group {
        Group {
            env: self.env.clone(),
            context: self.context.clone(),
            inventory_namespace: self.inventory_namespace.clone(),
        }
    }
}

/// Which state, applied how: shared by `deploy` and `diff` (which shows what `deploy` would do).
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub group: GroupArgs,
    /// Use the state as committed at this git revision (read from git's objects; the work tree
    /// is not touched), e.g. to roll back, or to review a release before deploying it.
    #[arg(long)]
    pub revision: Option<String>,
    /// Objects applied (or compared) at the same time.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Take fields that other field managers own (server-side apply conflicts).
    #[arg(long)]
    pub force_conflicts: bool,
    /// Take over objects that another umbrella app owns.
    #[arg(long)]
    pub adopt: bool,
}

/// How a command that writes to the cluster waits, and whether it asks first.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// How long to wait for everything to be ready (or gone), e.g. 90s, 10m, 1h.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub wait_timeout: Duration,
    /// How long to wait for another deploy of the group to finish (default: fail at once).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub lock_timeout: Duration,
    /// Do not ask for confirmation on a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub apply: ApplyArgs,
    #[command(flatten)]
    pub write: WriteArgs,
    /// Deploy although the state is empty or drops every app of the group (which deletes
    /// everything they own).
    #[arg(long)]
    pub allow_empty: bool,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub apply: ApplyArgs,
    /// Exit 2 when a deploy would change something (a drift check).
    #[arg(long)]
    pub exit_code: bool,
    #[arg(long, value_enum, default_value_t)]
    pub color: ColorChoice,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub group: GroupArgs,
    /// Objects compared at the same time.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// What makes the command exit 2.
    #[arg(long, value_enum, default_value_t)]
    pub fail_on: FailOn,
    #[arg(long, value_enum, default_value_t)]
    pub color: ColorChoice,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub group: GroupArgs,
    #[command(flatten)]
    pub write: WriteArgs,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: OutputFormat,
}

impl DeleteArgs {
    pub fn request(
        &self,
        hooks_from: Option<DeploySource>,
        repository: RepositoryId,
    ) -> DeleteRequest {
        DeleteRequest {
            group: self.group.group(),
            wait_timeout: self.write.wait_timeout,
            lock_timeout: self.write.lock_timeout,
            hooks_from,
            repository,
        }
    }
}

fn parse_kube_version(value: &str) -> Result<String, String> {
    environments::kube_version(value)?;
    Ok(value.to_string())
}

fn parse_api_version(value: &str) -> Result<String, String> {
    environments::api_version_entry(value)?;
    Ok(value.to_string())
}

/// A namespace: a DNS label.
fn parse_namespace(namespace: &str) -> Result<String, String> {
    crate::formats::names::dns_label(namespace).map_err(|e| format!("namespace {e}"))?;
    Ok(namespace.to_string())
}

/// `90s`, `10m`, `1h`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
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
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn deploy_and_diff_share_their_flags() {
        let deploy = Cli::try_parse_from([
            "umbrella",
            "deploy",
            "app-group",
            "prod",
            "--revision",
            "v1",
            "--adopt",
            "--yes",
            "--wait-timeout",
            "90s",
        ])
        .unwrap();
        let Command::Deploy(DeployTarget::AppGroup(args)) = deploy.command else {
            panic!("not a deploy");
        };
        assert_eq!(args.apply.revision.as_deref(), Some("v1"));
        assert!(args.apply.adopt && args.write.yes);
        assert_eq!(args.write.wait_timeout, Duration::from_secs(90));
        let diff = Cli::try_parse_from([
            "umbrella",
            "diff",
            "app-group",
            "prod",
            "--adopt",
            "--exit-code",
        ]);
        assert!(diff.is_ok());
    }
}
