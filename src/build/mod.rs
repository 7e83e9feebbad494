//! The build stage: every source of `sources.yaml` is built through the Docker engine, pushed to
//! its destination and recorded in the images lock with a verified digest. A source whose
//! content key is already in its destination is not built again.

pub mod context;
pub mod dockerignore;
pub mod plan;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use crate::credentials::credential_for;
use crate::docker::Engine;
use crate::lock::{ImagesLock, LockedImage, Origin};
use crate::registry::{Registry, RegistryError, split_repository};
use crate::report::Progress;
use crate::sources::KbldConfig;
use crate::state::{self, Revision};
use crate::yaml::YamlError;

use plan::{Plan, content_key, key_tag};

/// Lines of a failed build's log shown with its error.
const LOG_TAIL_LINES: usize = 30;

/// Where the images lock goes unless `--lock-output` says otherwise.
pub const DEFAULT_LOCK_OUTPUT: &str = "umbrella-state/images.lock.yaml";

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The repository root: `sources.yaml` and the context paths are relative to it.
    pub root: PathBuf,
    pub sources_file: PathBuf,
    /// Build only these sources (by image name); all when empty.
    pub only: Vec<String>,
    pub concurrency: usize,
    pub lock_output: PathBuf,
}

/// Whether an image was built, or found in its destination by its content key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Built,
    Cached,
    Failed,
}

/// One image's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageResult {
    pub image: String,
    pub repository: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub content_key: Option<String>,
    pub tags: Vec<String>,
    pub duration_ms: u128,
    /// For a built image: its compressed size in the registry (config and layers). The engine
    /// API does not say which layers the registry already had, so shared layers count too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
}

/// Every image's result, and the lock file if one was written.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildReport {
    pub images: Vec<ImageResult>,
    pub lock: Option<PathBuf>,
}

impl BuildReport {
    pub fn succeeded(&self) -> bool {
        self.images.iter().all(|i| i.outcome != Outcome::Failed)
    }
}

/// The build stage could not start, or was stopped.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] YamlError),
    #[error("{}: nothing was built:\n  {}", file.display(), problems.join("\n  "))]
    Invalid {
        file: PathBuf,
        problems: Vec<String>,
    },
    #[error(transparent)]
    Engine(#[from] crate::docker::DockerError),
    #[error("interrupted: builds stopped, no lock written")]
    Interrupted,
    #[error("a build task stopped unexpectedly: {0}")]
    Task(String),
    #[error("writing {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What every build task shares: the engine, one client per registry, the progress display.
struct Shared {
    engine: Engine,
    registries: Mutex<HashMap<String, Arc<Registry>>>,
    progress: Progress,
    root: PathBuf,
}

impl Shared {
    async fn registry(&self, host: &str) -> Result<Arc<Registry>, String> {
        let mut registries = self.registries.lock().await;
        if let Some(registry) = registries.get(host) {
            return Ok(registry.clone());
        }
        let credential = credential_for(host).map_err(|e| e.to_string())?;
        let registry = Arc::new(
            Registry::connect(host, credential)
                .await
                .map_err(|e| e.to_string())?,
        );
        registries.insert(host.to_string(), registry.clone());
        Ok(registry)
    }
}

/// Builds, pushes and locks every planned source. Problems with the configuration are reported
/// before any build starts; a failed build lets the others finish; the lock is written only
/// when every source succeeded. Ctrl-C stops the builds and writes nothing.
pub async fn build(request: &BuildRequest, progress: Progress) -> Result<BuildReport, BuildError> {
    let config = KbldConfig::load(&request.sources_file)?;
    let plans = plan::plan(&config, &request.root, &request.only).map_err(|problems| {
        BuildError::Invalid {
            file: request.sources_file.clone(),
            problems,
        }
    })?;
    let engine = Engine::connect().await?;
    engine.version().await?;
    let shared = Arc::new(Shared {
        engine,
        registries: Mutex::new(HashMap::new()),
        progress,
        root: request.root.clone(),
    });
    let semaphore = Arc::new(Semaphore::new(request.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (index, plan) in plans.iter().cloned().enumerate() {
        let shared = shared.clone();
        let semaphore = semaphore.clone();
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            (index, build_one(&plan, &shared).await)
        });
    }
    let mut results: Vec<Option<ImageResult>> = vec![None; plans.len()];
    // One listener for the whole run, so a Ctrl-C between two results is not lost.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                Some(Ok((index, result))) => results[index] = Some(result),
                Some(Err(join_error)) => return Err(BuildError::Task(join_error.to_string())),
                None => break,
            },
                        _ = &mut interrupted => {
                tasks.abort_all();
                return Err(BuildError::Interrupted);
            }
        }
    }
    let images: Vec<ImageResult> = results.into_iter().flatten().collect();
    let mut report = BuildReport { images, lock: None };
    if report.succeeded() {
        write_lock(request, &plans, &report)?;
        report.lock = Some(request.lock_output.clone());
    }
    Ok(report)
}

fn write_lock(
    request: &BuildRequest,
    plans: &[Plan],
    report: &BuildReport,
) -> Result<(), BuildError> {
    let entries = plans
        .iter()
        .zip(&report.images)
        .filter_map(|(plan, result)| {
            let digest = result.digest.as_ref()?;
            let key = result.content_key.clone().unwrap_or_default();
            let mut origins = vec![Origin::Local {
                path: plan.path.clone(),
            }];
            origins.extend(state::revision_of(&request.root, &plan.path).map(git_origin));
            origins.push(Origin::Umbrella {
                tag: key_tag(&key),
                content_key: key,
            });
            Some(LockedImage {
                image: plan.image.clone(),
                new_image: format!("{}@{digest}", plan.repository),
                preresolved: true,
                origins,
            })
        })
        .collect();
    let built = ImagesLock::new(entries);
    // With --only, the other sources keep their entries from the previous lock.
    let lock = if request.only.is_empty() {
        built
    } else {
        ImagesLock::read(&request.lock_output)?.merge(built)
    };
    lock.write(&request.lock_output)
        .map_err(|source| BuildError::Lock {
            path: request.lock_output.clone(),
            source,
        })
}

fn git_origin(revision: Revision) -> Origin {
    Origin::Git {
        remote_url: revision.remote_url,
        sha: revision.sha,
        dirty: revision.dirty,
    }
}

/// The part of a build that failed, with the log lines that explain it.
struct Failure {
    message: String,
    log_tail: Vec<String>,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            message,
            log_tail: Vec::new(),
        }
    }
}

async fn build_one(plan: &Plan, shared: &Shared) -> ImageResult {
    let started = Instant::now();
    let mut result = ImageResult {
        image: plan.image.clone(),
        repository: plan.repository.clone(),
        outcome: Outcome::Failed,
        digest: None,
        content_key: None,
        tags: Vec::new(),
        duration_ms: 0,
        image_bytes: None,
        error: None,
        log_tail: Vec::new(),
    };
    match run_source(plan, shared, &mut result).await {
        Ok(()) => {
            let what = if result.outcome == Outcome::Built {
                "built and pushed"
            } else {
                "cached"
            };
            shared.progress.finish(
                &plan.image,
                &format!("{what} {}", result.digest.as_deref().unwrap_or_default()),
            );
        }
        Err(failure) => {
            result.outcome = Outcome::Failed;
            result.error = Some(failure.message.clone());
            result.log_tail = failure.log_tail;
            shared
                .progress
                .finish(&plan.image, &format!("FAILED: {}", failure.message));
        }
    }
    result.duration_ms = started.elapsed().as_millis();
    result
}

async fn run_source(plan: &Plan, shared: &Shared, result: &mut ImageResult) -> Result<(), Failure> {
    let progress = &shared.progress;
    progress.update(&plan.image, "hashing the context");
    let dir = plan.context_dir.clone();
    let dockerfile = plan.dockerfile.clone();
    let external = plan.external_dockerfile.clone();
    let context =
        tokio::task::spawn_blocking(move || context::pack(&dir, &dockerfile, external.as_deref()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("context {}: {e}", relative(&shared.root, &plan.context_dir)))?;
    let bases = base_identities(shared, plan).await;
    let key = content_key(&context.digest, plan, &bases);
    let tag = key_tag(&key);
    result.content_key = Some(key);
    result.tags = std::iter::once(tag.clone())
        .chain(plan.extra_tags.iter().cloned())
        .collect();
    let (host, path) = split_repository(&plan.repository);
    let registry = shared.registry(&host).await?;

    match registry.manifest_digest(&path, &tag).await {
        Ok(digest) => {
            for extra in &plan.extra_tags {
                registry
                    .put_tag(&path, &digest, extra)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            result.outcome = Outcome::Cached;
            result.digest = Some(digest);
            return Ok(());
        }
        Err(RegistryError::NotFound { .. }) => {}
        Err(other) => return Err(other.to_string().into()),
    }

    progress.update(
        &plan.image,
        &format!("building ({} files in the context)", context.files),
    );
    let local = format!("{}:{tag}", plan.repository);
    let mut tail: VecDeque<String> = VecDeque::with_capacity(LOG_TAIL_LINES);
    let built = shared
        .engine
        .build(
            context.tar,
            &plan.dockerfile,
            &local,
            &plan.options,
            |line| {
                if tail.len() == LOG_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.to_string());
                progress.update(&plan.image, line);
            },
        )
        .await;
    if let Err(e) = built {
        return Err(Failure {
            message: e.to_string(),
            log_tail: tail.into(),
        });
    }

    progress.update(&plan.image, &format!("pushing {local}"));
    let credential = credential_for(&host).map_err(|e| e.to_string())?;
    let pushed = push(
        &shared.engine,
        &host,
        &plan.repository,
        &tag,
        credential.as_ref(),
    )
    .await?;
    for extra in &plan.extra_tags {
        shared
            .engine
            .tag(&local, &plan.repository, extra)
            .await
            .map_err(|e| e.to_string())?;
        let again = push(
            &shared.engine,
            &host,
            &plan.repository,
            extra,
            credential.as_ref(),
        )
        .await?;
        if again != pushed {
            return Err(format!(
                "{}:{extra} was pushed as {again} but {local} as {pushed}",
                plan.repository
            )
            .into());
        }
    }
    let served = registry
        .manifest_digest(&path, &tag)
        .await
        .map_err(|e| e.to_string())?;
    if served != pushed {
        return Err(format!("digest mismatch for {local}: the engine pushed {pushed} but the registry serves {served}").into());
    }
    result.image_bytes = Some(
        registry
            .image_size(&path, &served)
            .await
            .map_err(|e| e.to_string())?,
    );
    result.outcome = Outcome::Built;
    result.digest = Some(served);
    Ok(())
}

/// What each base image is right now: its local image ID, or (when it is not local, or
/// `pull` asks for the newest) its registry digest. An image that is neither stays by name:
/// the build itself will say what is wrong with it.
async fn base_identities(shared: &Shared, plan: &Plan) -> Vec<String> {
    let file = plan
        .external_dockerfile
        .clone()
        .unwrap_or_else(|| plan.context_dir.join(&plan.dockerfile));
    let text = tokio::fs::read_to_string(&file).await.unwrap_or_default();
    let mut identities = Vec::new();
    for image in plan::base_images(&text, &plan.options.build_args) {
        let local = if plan.options.pull {
            None
        } else {
            shared
                .engine
                .docker
                .inspect_image(&image)
                .await
                .ok()
                .and_then(|i| i.id)
        };
        let identity = match local {
            Some(id) => id,
            None => remote_digest(shared, &image)
                .await
                .unwrap_or_else(|| image.clone()),
        };
        identities.push(format!("{image}={identity}"));
    }
    identities
}

async fn remote_digest(shared: &Shared, image: &str) -> Option<String> {
    if image.contains("@sha256:") {
        return Some(image.to_string());
    }
    let repository = crate::sources::repository_of(image);
    let (host, path) = split_repository(repository);
    let registry = shared.registry(&host).await.ok()?;
    registry
        .manifest_digest(&path, crate::render::pin::tag_of(image))
        .await
        .ok()
}

/// Pushes through the engine with bounded retries. A refusal for lack of credentials is not
/// retried and is said in the same words as the registry checks use.
async fn push(
    engine: &Engine,
    host: &str,
    repository: &str,
    tag: &str,
    credential: Option<&crate::credentials::Credential>,
) -> Result<String, String> {
    const ATTEMPTS: u32 = 3;
    let mut delay = std::time::Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        let error = match engine.push(repository, tag, credential).await {
            Ok(digest) => return Ok(digest),
            Err(e) => e.to_string(),
        };
        let lower = error.to_lowercase();
        if [
            "unauthorized",
            "authentication required",
            "denied",
            "no basic auth credentials",
        ]
        .iter()
        .any(|w| lower.contains(w))
        {
            let why = if credential.is_some() {
                "refused"
            } else {
                "missing (run `docker login` for it)"
            };
            return Err(format!(
                "registry {host}: credentials were {why}; the engine said: {error}"
            ));
        }
        if attempt == ATTEMPTS {
            return Err(format!("{error} (after {ATTEMPTS} attempts)"));
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
        attempt += 1;
    }
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}
