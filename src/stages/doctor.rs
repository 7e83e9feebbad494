//! `umbrella doctor`: is everything umbrella depends on reachable and usable from here?
//! Each check is one line, `ok` or `FAIL` with the reason and a hint.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::adapters::cluster::{Cluster, Permission};
use crate::adapters::credentials::credential_for;
use crate::adapters::docker::Engine;
use crate::adapters::registry::{Registry, RegistryError};
use crate::adapters::{git, helm};
use crate::formats::chart::UmbrellaChart;
use crate::formats::environments::RepositoryConfig;
use crate::formats::image_markers;
use crate::formats::image_policies::{ImagePolicies, POLICIES_FILE};
use crate::formats::layout::{CHART_DIR, CONFIG_FILE, SOURCES_FILE};
use crate::formats::sops::{self, Keys, rules::CONFIG_FILE as SOPS_CONFIG, rules::SopsConfig};
use crate::formats::sources::KbldConfig;

/// No single dependency may hold the whole report up.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            hint: None,
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

/// What `doctor` looks at.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// A directory inside the repository.
    pub repo: PathBuf,
    /// The kubeconfig context; the current one when `None`.
    pub context: Option<String>,
    /// The namespace whose permissions are checked; the context's default when `None`.
    pub namespace: Option<String>,
}

/// Runs every check; independent ones run at the same time.
pub async fn run(options: &DoctorOptions) -> Vec<Check> {
    let (root, mut checks) = match git::repository_root(&options.repo) {
        Ok(root) => {
            let detail = format!("git repository at {}", root.display());
            (root, vec![Check::ok("repository", detail)])
        }
        Err(e) => (
            options.repo.clone(),
            vec![Check::fail(
                "repository",
                e.to_string(),
                "run umbrella inside your repository, or pass --repo DIR",
            )],
        ),
    };
    let (sources_check, config) = check_sources(&root);
    checks.push(sources_check);
    checks.push(check_chart(&root));
    checks.push(check_environments(&root));
    checks.push(check_secrets(&root));
    checks.push(check_image_policies(&root));
    let registries = config
        .map(|c| c.destination_registries())
        .unwrap_or_default();
    let (docker, helm, registry_checks, cluster_checks) = tokio::join!(
        bounded("docker".into(), check_docker()),
        bounded("helm".into(), check_helm()),
        futures_util::future::join_all(
            registries
                .iter()
                .map(|host| bounded(format!("registry {host}"), check_registry(host)))
        ),
        check_cluster(options.context.as_deref(), options.namespace.as_deref()),
    );
    checks.push(docker);
    checks.push(helm);
    checks.extend(registry_checks);
    checks.extend(cluster_checks);
    checks
}

async fn bounded(name: String, check: impl Future<Output = Check>) -> Check {
    tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| {
            Check::fail(
                name,
                format!("no answer within {}s", CHECK_TIMEOUT.as_secs()),
                "check that it is running and reachable",
            )
        })
}

fn check_sources(root: &Path) -> (Check, Option<KbldConfig>) {
    let path = root.join(SOURCES_FILE);
    if !path.is_file() {
        let check = Check::fail(
            SOURCES_FILE,
            format!("{} does not exist", path.display()),
            "create it in kbld's format: Sources and ImageDestinations documents",
        );
        return (check, None);
    }
    match KbldConfig::load(&path) {
        Ok(config) => {
            let detail = format!(
                "{} sources, {} destinations, {} overrides",
                config.sources.len(),
                config.destinations.len(),
                config.overrides.len()
            );
            (Check::ok(SOURCES_FILE, detail), Some(config))
        }
        Err(e) => (
            Check::fail(
                SOURCES_FILE,
                e.to_string(),
                "fix the file at the line shown (kbld.k14s.io/v1alpha1 format)",
            ),
            None,
        ),
    }
}

/// `umbrella.yaml`: every field checked, as render and deploy read it.
fn check_environments(root: &Path) -> Check {
    match RepositoryConfig::load(root) {
        Ok(config) if config.environments.is_empty() => Check::ok(
            CONFIG_FILE,
            "no environment settings: every environment renders with the defaults",
        ),
        Ok(config) => {
            let environments: Vec<String> = config
                .environments
                .iter()
                .map(|(name, env)| match &env.context {
                    Some(context) => format!("{name} (context {context})"),
                    None => name.clone(),
                })
                .collect();
            Check::ok(
                CONFIG_FILE,
                format!("environments: {}", environments.join(", ")),
            )
        }
        Err(e) => Check::fail(
            CONFIG_FILE,
            e.to_string(),
            "fix the field named (see the README's render section for the format)",
        ),
    }
}

fn check_chart(root: &Path) -> Check {
    match UmbrellaChart::load(&root.join(CHART_DIR)) {
        Ok(chart) => {
            let apps: Vec<&str> = chart
                .metadata
                .dependencies
                .iter()
                .map(|d| d.alias.as_deref().unwrap_or(&d.name))
                .collect();
            Check::ok(
                CHART_DIR,
                format!(
                    "chart {} {}; apps: {}; environments: {}",
                    chart.metadata.name,
                    chart.metadata.version,
                    apps.join(", "),
                    chart.environments.join(", ")
                ),
            )
        }
        Err(e) => Check::fail(
            CHART_DIR,
            e.to_string(),
            "fix the chart at the place shown; `helm lint umbrella-chart` helps",
        ),
    }
}

/// `.sops.yaml` reads, and the age keys at hand open every secret values file of the chart.
fn check_secrets(root: &Path) -> Check {
    let config = match SopsConfig::load(root) {
        Ok(config) => config,
        Err(e) => return Check::fail(SOPS_CONFIG, e.to_string(), "fix the rule and field named"),
    };
    let files = chart_files(&root.join(CHART_DIR), "secrets");
    if config.is_none() && files.is_empty() {
        return Check::ok(
            "secrets",
            format!(
                "no {SOPS_CONFIG}: a rendered Secret would be refused (see the README's Secrets)"
            ),
        );
    }
    let keys = Keys::from_environment();
    let unopened: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let opened = sops::read_file(file).and_then(|document| {
                sops::decrypt(&document, &keys).map_err(|e| format!("{}: {e}", file.display()))
            });
            opened.err()
        })
        .collect();
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if unopened.is_empty() {
        Check::ok(
            "secrets",
            format!(
                "age keys from {}; they open: {}",
                keys.looked(),
                names.join(", ")
            ),
        )
    } else {
        Check::fail(
            "secrets",
            unopened.join("; "),
            "give an age key of a recipient: SOPS_AGE_KEY_FILE, SOPS_AGE_KEY or ~/.config/sops/age/keys.txt",
        )
    }
}

/// `STEM.yaml` and `STEM-*.yaml` beside the chart (`values`, `secrets`), sorted.
fn chart_files(chart_dir: &Path, stem: &str) -> Vec<PathBuf> {
    let per_env = format!("{stem}-");
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".yaml"))
                .is_some_and(|n| n == stem || n.starts_with(&per_env))
        })
        .collect();
    files.sort();
    files
}

/// `image-policies.yaml` and every marker of the chart's values files name each other rightly.
fn check_image_policies(root: &Path) -> Check {
    let chart_dir = root.join(CHART_DIR);
    let policies = match ImagePolicies::load(&chart_dir) {
        Ok(Some(policies)) => policies,
        Ok(None) => return Check::ok(POLICIES_FILE, "none: image tags move only by hand"),
        Err(e) => {
            return Check::fail(
                POLICIES_FILE,
                e.to_string(),
                "fix the policy and field named",
            );
        }
    };
    let mut markers = 0;
    let mut problems = Vec::new();
    for file in chart_files(&chart_dir, "values") {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        match image_markers::find(&text) {
            Ok(found) => {
                markers += found.len();
                problems.extend(
                    found
                        .iter()
                        .filter(|m| policies.get(&m.policy).is_none())
                        .map(|m| {
                            format!("{}:{}: no policy '{}'", file.display(), m.line, m.policy)
                        }),
                );
            }
            Err(e) => problems.push(format!("{}:{}: {}", file.display(), e.line, e.message)),
        }
    }
    if problems.is_empty() {
        Check::ok(
            POLICIES_FILE,
            format!(
                "{} policies, {markers} markers in the values files",
                policies.policies.len()
            ),
        )
    } else {
        Check::fail(
            POLICIES_FILE,
            problems.join("; "),
            "fix the marker at the line shown",
        )
    }
}

async fn check_docker() -> Check {
    let result = async {
        let engine = Engine::connect().await?;
        let version = engine.version().await?;
        Ok::<_, crate::adapters::docker::DockerError>(format!(
            "Docker {} (API {}) at {}",
            version.version, version.api_version, engine.host
        ))
    };
    match result.await {
        Ok(detail) => Check::ok("docker", detail),
        Err(e) => Check::fail(
            "docker",
            e.to_string(),
            "start the Docker engine, or set DOCKER_HOST to one that runs",
        ),
    }
}

async fn check_helm() -> Check {
    match helm::version().await {
        Ok(version) => Check::ok(
            "helm",
            format!("helm {version} ({})", helm::resolved_program().display()),
        ),
        Err(e) => Check::fail(
            "helm",
            e.to_string(),
            "install helm v3 or v4 on PATH, or set UMBRELLA_HELM",
        ),
    }
}

async fn check_registry(host: &str) -> Check {
    let name = format!("registry {host}");
    let credential = match credential_for(host) {
        Ok(c) => c,
        Err(e) => {
            return Check::fail(
                name,
                e.to_string(),
                "fix the Docker config or its credential helper",
            );
        }
    };
    let result = async {
        let registry = Registry::connect(host, credential).await?;
        registry.ping().await
    };
    match result.await {
        Ok(outcome) => {
            let auth = if outcome.authenticated {
                ", credentials accepted"
            } else {
                ""
            };
            Check::ok(name, format!("answers /v2/ over {}{auth}", outcome.scheme))
        }
        Err(e @ RegistryError::Unauthorized { .. }) => Check::fail(
            name,
            e.to_string(),
            format!("docker login {host} (umbrella reads the Docker config)"),
        ),
        Err(e) => Check::fail(
            name,
            e.to_string(),
            "check the address in sources.yaml and that the registry runs",
        ),
    }
}

/// What a deploy needs to do to the objects of the example apps (and most others).
fn deploy_permissions() -> Vec<Permission> {
    let resources = [
        ("", "configmaps"),
        ("", "services"),
        ("", "serviceaccounts"),
        ("apps", "deployments"),
        ("batch", "jobs"),
    ];
    let mut permissions = Vec::new();
    for (group, resource) in resources {
        for verb in ["create", "patch", "delete"] {
            permissions.push(Permission::new(verb, group, resource));
        }
    }
    permissions
}

async fn check_cluster(context: Option<&str>, namespace: Option<&str>) -> Vec<Check> {
    let hint = "check KUBECONFIG and --context, and that the API server runs";
    let cluster = match tokio::time::timeout(CHECK_TIMEOUT, Cluster::connect(context)).await {
        Ok(Ok(cluster)) => cluster,
        Ok(Err(e)) => return vec![Check::fail("cluster", e.to_string(), hint)],
        Err(_) => return vec![Check::fail("cluster", "no answer", hint)],
    };
    let version = match bounded_result(cluster.server_version()).await {
        Ok(v) => v,
        Err(reason) => return vec![Check::fail("cluster", reason, hint)],
    };
    let namespace = namespace.unwrap_or(&cluster.default_namespace).to_string();
    let version_check = Check::ok(
        "cluster",
        format!("context {}, Kubernetes {version}", cluster.context),
    );
    let name = format!("permissions in {namespace}");
    let permission_check = match bounded_result(
        cluster.missing_permissions(&namespace, &deploy_permissions()),
    )
    .await
    {
        Ok(missing) if missing.is_empty() => Check::ok(
            name,
            "may create, patch and delete the objects umbrella deploys",
        ),
        Ok(missing) => Check::fail(
            name,
            format!(
                "not allowed: {}",
                missing
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "ask a cluster admin for a Role granting these verbs in the namespace",
        ),
        Err(reason) => Check::fail(name, reason, hint),
    };
    vec![version_check, permission_check]
}

async fn bounded_result<T, E: std::fmt::Display>(
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHECK_TIMEOUT, future).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
    }
}
