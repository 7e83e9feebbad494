//! One source, from its context to a verified digest in its destination: the content key, the
//! registry check that makes a rebuild unnecessary, the build, the push and its verification.

use std::collections::VecDeque;
use std::time::Instant;

use super::context::{self, Context};
use super::plan::{self, Plan, content_key, key_tag};
use super::{ImageResult, Outcome, Shared};
use crate::adapters::credentials::{Credential, credential_for};
use crate::adapters::registry::{Registry, RegistryError};
use crate::formats::image_ref::{Digest, ImageRef};

/// Lines of a failed build's log shown with its error.
const LOG_TAIL_LINES: usize = 30;
/// Pushes tried before a push failure is final.
const PUSH_ATTEMPTS: u32 = 3;

/// The part of a build that failed, with the log lines that explain it.
pub(super) struct Failure {
    pub message: String,
    pub log_tail: Vec<String>,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            message,
            log_tail: Vec::new(),
        }
    }
}

fn failure(error: impl std::fmt::Display) -> Failure {
    error.to_string().into()
}

/// Builds (or finds by its content key), pushes and verifies one source.
pub(super) async fn build_one(plan: &Plan, shared: &Shared) -> ImageResult {
    let started = Instant::now();
    let mut result = ImageResult {
        image: plan.image.clone(),
        repository: plan.repository.to_string(),
        outcome: Outcome::Failed,
        digest: None,
        content_key: None,
        tags: Vec::new(),
        duration_ms: 0,
        image_bytes: None,
        error: None,
        log_tail: Vec::new(),
    };
    let news = match run_source(plan, shared, &mut result).await {
        Ok(()) => {
            let what = if result.outcome == Outcome::Built {
                "built and pushed"
            } else {
                "cached"
            };
            format!("{what} {}", result.digest.as_deref().unwrap_or_default())
        }
        Err(failure) => {
            result.outcome = Outcome::Failed;
            result.error = Some(failure.message.clone());
            result.log_tail = failure.log_tail;
            format!("FAILED: {}", result.error.as_deref().unwrap_or_default())
        }
    };
    shared.progress.finish(&plan.image, &news);
    result.duration_ms = started.elapsed().as_millis();
    result
}

async fn run_source(plan: &Plan, shared: &Shared, result: &mut ImageResult) -> Result<(), Failure> {
    let context = pack(plan, shared).await?;
    let bases = base_identities(shared, plan).await;
    let key = content_key(&context.digest, plan, &bases);
    let tag = key_tag(&key);
    result.content_key = Some(key);
    result.tags = std::iter::once(tag.clone())
        .chain(plan.extra_tags.iter().cloned())
        .collect();
    let registry = shared.registry(&plan.repository.registry).await?;
    if let Some(digest) = cached(&registry, plan, &tag).await? {
        result.outcome = Outcome::Cached;
        result.digest = Some(digest.to_string());
        return Ok(());
    }
    let local = format!("{}:{tag}", plan.repository);
    build(shared, plan, context, &local).await?;
    shared
        .progress
        .update(&plan.image, &format!("pushing {local}"));
    let pushed = push_all(shared, plan, &tag).await?;
    let served = registry
        .manifest_digest(&plan.repository.repository, &tag)
        .await
        .map_err(failure)?;
    if served != pushed {
        return Err(failure(format!(
            "digest mismatch for {local}: the engine pushed {pushed} but the registry serves {served}"
        )));
    }
    let size = registry
        .image_size(&plan.repository.repository, &served)
        .await;
    result.image_bytes = Some(size.map_err(failure)?);
    result.outcome = Outcome::Built;
    result.digest = Some(served.to_string());
    Ok(())
}

/// The build context as the Docker CLI sends it, packed off the async threads.
async fn pack(plan: &Plan, shared: &Shared) -> Result<Context, Failure> {
    shared.progress.update(&plan.image, "hashing the context");
    let dir = plan.context_dir.clone();
    let dockerfile = plan.dockerfile.clone();
    let external = plan.external_dockerfile.clone();
    tokio::task::spawn_blocking(move || context::pack(&dir, &dockerfile, external.as_deref()))
        .await
        .map_err(failure)?
        .map_err(|e| {
            let path = plan.context_dir.strip_prefix(&shared.root);
            let shown = path.unwrap_or(&plan.context_dir).display();
            failure(format!("context {shown}: {e}"))
        })
}

/// The digest of the content-key tag when the destination has it already; the extra tags are
/// then pointed at it, registry-side.
async fn cached(registry: &Registry, plan: &Plan, tag: &str) -> Result<Option<Digest>, Failure> {
    let repository = &plan.repository.repository;
    match registry.manifest_digest(repository, tag).await {
        Ok(digest) => {
            for extra in &plan.extra_tags {
                registry
                    .put_tag(repository, &digest, extra)
                    .await
                    .map_err(failure)?;
            }
            Ok(Some(digest))
        }
        Err(RegistryError::NotFound { .. }) => Ok(None),
        Err(other) => Err(failure(other)),
    }
}

/// Builds through the engine; a failure keeps the last lines of the log.
async fn build(shared: &Shared, plan: &Plan, context: Context, local: &str) -> Result<(), Failure> {
    let progress = &shared.progress;
    progress.update(
        &plan.image,
        &format!("building ({} files in the context)", context.files),
    );
    let mut tail: VecDeque<String> = VecDeque::with_capacity(LOG_TAIL_LINES);
    let on_line = |line: &str| {
        if tail.len() == LOG_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_string());
        progress.update(&plan.image, line);
    };
    let built = shared
        .engine
        .build(context.tar, &plan.dockerfile, local, &plan.options, on_line)
        .await;
    built.map_err(|e| Failure {
        message: e.to_string(),
        log_tail: tail.into(),
    })
}

/// Pushes the content-key tag, then each extra tag, which must land on the same digest.
async fn push_all(shared: &Shared, plan: &Plan, tag: &str) -> Result<Digest, Failure> {
    let host = &plan.repository.registry;
    let name = plan.repository.name();
    let credential = credential_for(host).map_err(failure)?;
    let pushed = push(shared, host, name, tag, credential.as_ref()).await?;
    let local = format!("{name}:{tag}");
    for extra in &plan.extra_tags {
        shared
            .engine
            .tag(&local, name, extra)
            .await
            .map_err(failure)?;
        let again = push(shared, host, name, extra, credential.as_ref()).await?;
        if again != pushed {
            return Err(failure(format!(
                "{name}:{extra} was pushed as {again} but {local} as {pushed}"
            )));
        }
    }
    Ok(pushed)
}

/// Pushes through the engine with bounded retries. A refusal for lack of credentials is not
/// retried and is said in the same words as the registry checks use.
async fn push(
    shared: &Shared,
    host: &str,
    repository: &str,
    tag: &str,
    credential: Option<&Credential>,
) -> Result<Digest, Failure> {
    let mut delay = std::time::Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        let error = match shared.engine.push(repository, tag, credential).await {
            Ok(digest) => return Ok(digest),
            Err(e) => e.to_string(),
        };
        if refused_for_credentials(&error) {
            let why = if credential.is_some() {
                "refused"
            } else {
                "missing (run `docker login` for it)"
            };
            return Err(failure(format!(
                "registry {host}: credentials were {why}; the engine said: {error}"
            )));
        }
        if attempt == PUSH_ATTEMPTS {
            return Err(failure(format!("{error} (after {PUSH_ATTEMPTS} attempts)")));
        }
        let what = format!("push {repository}:{tag}");
        shared.retrier.note(&what, attempt, &error, delay);
        tokio::time::sleep(delay).await;
        delay *= 2;
        attempt += 1;
    }
}

/// The engine's words for a registry that wants other credentials.
fn refused_for_credentials(error: &str) -> bool {
    let lower = error.to_lowercase();
    [
        "unauthorized",
        "authentication required",
        "denied",
        "no basic auth credentials",
    ]
    .iter()
    .any(|w| lower.contains(w))
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
            let inspected = shared.engine.docker.inspect_image(&image).await;
            inspected.ok().and_then(|i| i.id)
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
    let reference = ImageRef::parse(image).ok()?;
    if reference.digest.is_some() {
        return Some(image.to_string());
    }
    let registry = shared.registry(&reference.registry).await.ok()?;
    registry
        .manifest_digest(&reference.repository, reference.tag_or_latest())
        .await
        .ok()
        .map(|d| d.to_string())
}
