//! The build stage: every source of `sources.yaml` is built through the Docker engine, pushed to
//! its destination and recorded in the images lock with a verified digest. A source whose
//! content key is already in its destination is not built again.

pub mod context;
pub mod dockerignore;
mod image;
pub mod plan;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use crate::adapters::docker::Engine;
use crate::adapters::git::{self, Revision};
use crate::adapters::registry::Registry;
use crate::adapters::retry::{Retrier, RetryNote};
use crate::exit::{self, ExitStatus};
use crate::formats::images_lock::{ImagesLock, LockedImage, Origin};
use crate::formats::sources::KbldConfig;
use crate::formats::yaml::YamlError;
use crate::progress::Progress;

use plan::{Plan, key_tag};

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
    /// Registry requests and pushes that failed for a passing reason and were tried again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<RetryNote>,
}

impl BuildReport {
    pub fn succeeded(&self) -> bool {
        self.images.iter().all(|i| i.outcome != Outcome::Failed)
    }
}

impl ExitStatus for BuildReport {
    /// A failed build: 1 (the others finished, no lock was written).
    fn exit_code(&self) -> u8 {
        if self.succeeded() {
            exit::SUCCESS
        } else {
            exit::FAILURE
        }
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
    Engine(#[from] crate::adapters::docker::DockerError),
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

impl ExitStatus for BuildError {
    fn exit_code(&self) -> u8 {
        match self {
            BuildError::Config(_) | BuildError::Invalid { .. } => exit::REFUSED,
            BuildError::Interrupted => exit::INTERRUPTED,
            _ => exit::FAILURE,
        }
    }
}

/// What every build task shares: the engine, one client per registry, the progress display.
struct Shared {
    engine: Engine,
    registries: Mutex<HashMap<String, Arc<Registry>>>,
    progress: Arc<dyn Progress>,
    /// Every retry of the build, shown live and kept for the report.
    retrier: Retrier,
    root: PathBuf,
}

impl Shared {
    async fn registry(&self, host: &str) -> Result<Arc<Registry>, String> {
        let mut registries = self.registries.lock().await;
        if let Some(registry) = registries.get(host) {
            return Ok(registry.clone());
        }
        let registry = Registry::connect_configured(host, self.retrier.clone()).await?;
        let registry = Arc::new(registry);
        registries.insert(host.to_string(), registry.clone());
        Ok(registry)
    }
}

/// Builds, pushes and locks every planned source. Problems with the configuration are reported
/// before any build starts; a failed build lets the others finish; the lock is written only
/// when every source succeeded. Ctrl-C stops the builds and writes nothing.
pub async fn build(
    request: &BuildRequest,
    progress: Arc<dyn Progress>,
) -> Result<BuildReport, BuildError> {
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
        retrier: Retrier::reporting(progress.clone()),
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
            (index, image::build_one(&plan, &shared).await)
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
    let mut report = BuildReport {
        images,
        lock: None,
        retries: shared.retrier.notes(),
    };
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
            origins.extend(git::revision_of(&request.root, &plan.path).map(git_origin));
            origins.push(Origin::Umbrella {
                tag: key_tag(&key),
                content_key: key,
            });
            Some(LockedImage {
                image: plan.image.clone(),
                new_image: format!("{}@{digest}", plan.repository.name()),
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
