//! `umbrella images update --env ENV`: moves the image tags that values files mark with
//! `# {"$imagepolicy": ...}` to what each policy of `umbrella-chart/image-policies.yaml` picks
//! among the repository's tags, and commits the change as a reviewed release step. Everything
//! is decided first (every marker checked, every tag list read); only then are files written,
//! so a bad marker or an unreachable registry writes nothing.

pub mod choose;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::adapters::git::{self, GitError};
use crate::adapters::registry;
use crate::adapters::retry::{Retrier, RetryNote};
use crate::exit::{self, ExitStatus};
use crate::formats::environments::Environment;
use crate::formats::image_markers::{self, Field, Marker};
use crate::formats::image_policies::{ImagePolicies, ImagePolicy, POLICIES_FILE};
use crate::formats::image_ref::ImageRef;
use crate::formats::layout;
use crate::formats::yaml::YamlError;

/// What to update.
#[derive(Debug, Clone)]
pub struct UpdateRequest {
    pub root: PathBuf,
    pub env: String,
    /// The environment's settings in `umbrella.yaml` (its values files).
    pub environment: Environment,
    /// Only these policies (all when empty).
    pub policies: Vec<String>,
    pub dry_run: bool,
    /// Move a tag back when every candidate is older than it.
    pub allow_downgrade: bool,
    /// The commit's author (default: git's configuration).
    pub author: Option<String>,
}

/// One marked value and what became of it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Move {
    pub image: String,
    pub policy: String,
    pub env: String,
    /// The values file, relative to the repository.
    pub file: String,
    pub line: usize,
    pub old: String,
    /// The new tag (or value, for a `:name` marker); `None` when it stays.
    pub new: Option<String>,
    /// Why it stays, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchanged: Option<String>,
}

/// What an update did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Updated {
    pub env: String,
    pub moves: Vec<Move>,
    pub dry_run: bool,
    /// The commit that records the change.
    pub commit: Option<String>,
    /// Registry requests that failed for a passing reason and were tried again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<RetryNote>,
}

/// The update could not be made; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Input(#[from] YamlError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Registry(String),
    #[error("{0}")]
    Refused(String),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("committing the update: {0}")]
    Git(#[from] GitError),
    /// The update failed and these files could not be put back as they were.
    #[error(
        "{cause}; and {files} could not be put back as they were: restore them with `git checkout -- {files}`"
    )]
    NotRestored {
        cause: Box<UpdateError>,
        files: String,
    },
}

impl ExitStatus for UpdateError {
    fn exit_code(&self) -> u8 {
        match self {
            UpdateError::Input(_) | UpdateError::Invalid(_) => exit::REFUSED,
            _ => exit::FAILURE,
        }
    }
}

/// One marker with the file it is in and the policy it names.
struct Found {
    file: PathBuf,
    marker: Marker,
    policy: ImagePolicy,
}

/// Decides every move, then (unless a dry run) writes the values files and commits them.
pub async fn run(request: &UpdateRequest) -> Result<Updated, UpdateError> {
    let chart_dir = request.root.join(layout::CHART_DIR);
    let policies = ImagePolicies::load(&chart_dir)?.ok_or_else(|| {
        UpdateError::Invalid(format!(
            "{}: no image policies (see the README's image updates)",
            chart_dir.join(POLICIES_FILE).display()
        ))
    })?;
    let chosen = chosen_policies(&policies, &request.policies)?;
    let files = request
        .environment
        .values_files(&request.root, &chart_dir, &request.env);
    let texts = read_all(&files)?;
    let found = markers(&texts, &policies, &chosen)?;
    let retrier = Retrier::default();
    let tags = tag_lists(&found, &retrier).await?;
    let moves: Vec<(Found, Move)> = found
        .into_iter()
        .map(|f| {
            let listed = tags.get(&f.policy.image).map_or(&[][..], Vec::as_slice);
            let decided = decide(&f, listed, request);
            (f, decided)
        })
        .collect();
    let commit = if request.dry_run {
        None
    } else {
        write_and_commit(request, &texts, &moves)?
    };
    Ok(Updated {
        env: request.env.clone(),
        moves: moves.into_iter().map(|(_, m)| m).collect(),
        dry_run: request.dry_run,
        commit,
        retries: retrier.notes(),
    })
}

fn chosen_policies(
    policies: &ImagePolicies,
    asked: &[String],
) -> Result<BTreeSet<String>, UpdateError> {
    if let Some(unknown) = asked.iter().find(|name| policies.get(name).is_none()) {
        return Err(UpdateError::Invalid(format!(
            "--policy {unknown}: no such policy in {}",
            policies.file.display()
        )));
    }
    Ok(if asked.is_empty() {
        policies.policies.iter().map(|p| p.name.clone()).collect()
    } else {
        asked.iter().cloned().collect()
    })
}

fn read_all(files: &[PathBuf]) -> Result<BTreeMap<PathBuf, String>, UpdateError> {
    files
        .iter()
        .map(|file| {
            std::fs::read_to_string(file)
                .map(|text| (file.clone(), text))
                .map_err(|source| {
                    UpdateError::Input(YamlError::Read {
                        path: file.clone(),
                        source,
                    })
                })
        })
        .collect()
}

/// Every marker of the values files naming one of `chosen`; a malformed marker or one naming
/// no policy is an error with its file and line.
fn markers(
    texts: &BTreeMap<PathBuf, String>,
    policies: &ImagePolicies,
    chosen: &BTreeSet<String>,
) -> Result<Vec<Found>, UpdateError> {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for (file, text) in texts {
        let markers = match image_markers::find(text) {
            Ok(markers) => markers,
            Err(e) => {
                problems.push(format!("{}:{}: {}", file.display(), e.line, e.message));
                continue;
            }
        };
        for marker in markers {
            match policies.get(&marker.policy) {
                None => problems.push(format!(
                    "{}:{}: the marker names policy '{}', which {} does not define",
                    file.display(),
                    marker.line,
                    marker.policy,
                    policies.file.display()
                )),
                Some(policy) if chosen.contains(&policy.name) => found.push(Found {
                    file: file.clone(),
                    policy: policy.clone(),
                    marker,
                }),
                Some(_) => {}
            }
        }
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(UpdateError::Invalid(problems.join("\n")))
    }
}

/// The tags of every repository a marker follows, read concurrently; any failure is the
/// update's (nothing is decided on a partial view).
async fn tag_lists(
    found: &[Found],
    retrier: &Retrier,
) -> Result<BTreeMap<String, Vec<String>>, UpdateError> {
    let images: BTreeSet<&str> = found
        .iter()
        .filter(|f| f.marker.field != Field::Name)
        .map(|f| f.policy.image.as_str())
        .collect();
    let hosts = images
        .iter()
        .map(|image| ImageRef::parse(image).map(|r| r.registry))
        .collect::<Result<_, _>>()
        .map_err(|e| UpdateError::Invalid(e.to_string()))?;
    let registries = registry::connect_all(hosts, retrier).await;
    let lists = futures_util::future::join_all(images.iter().map(|image| {
        let registries = &registries;
        async move {
            let reference = ImageRef::parse(image).map_err(|e| e.to_string())?;
            let registry = registries
                .get(&reference.registry)
                .ok_or_else(|| format!("no client for {}", reference.registry))?
                .as_ref()
                .map_err(Clone::clone)?;
            let tags = registry
                .list_tags(&reference.repository)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((image.to_string(), tags))
        }
    }))
    .await;
    lists
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(UpdateError::Registry)
}

/// What becomes of one marked value.
fn decide(found: &Found, tags: &[String], request: &UpdateRequest) -> Move {
    let (marker, policy) = (&found.marker, &found.policy);
    let old = match marker.field {
        Field::Whole => ImageRef::parse(&marker.value)
            .ok()
            .and_then(|r| r.tag)
            .unwrap_or_default(),
        Field::Tag | Field::Name => marker.value.clone(),
    };
    let stays = |why: String| (None, Some(why));
    let (new, unchanged) = match marker.field {
        Field::Name if marker.value == policy.image => stays("up to date".into()),
        Field::Name => (Some(policy.image.clone()), None),
        Field::Whole | Field::Tag => {
            match choose::latest(tags, policy.filter.as_ref(), &policy.rule) {
                None => stays(format!("no tag of {} matches the policy", policy.image)),
                Some(latest) if latest == old && repository_kept(marker, policy) => {
                    stays("up to date".into())
                }
                Some(latest)
                    if !request.allow_downgrade
                        && choose::is_newer(&old, latest, policy.filter.as_ref(), &policy.rule) =>
                {
                    stays(format!(
                        "{old} is newer than every candidate (the latest is {latest}); --allow-downgrade moves it back"
                    ))
                }
                Some(latest) => (Some(latest.to_string()), None),
            }
        }
    };
    Move {
        image: policy.image.clone(),
        policy: policy.name.clone(),
        env: request.env.clone(),
        file: relative(&request.root, &found.file),
        line: marker.line,
        old,
        new,
        unchanged,
    }
}

/// A whole `repo:tag` value already names the policy's repository.
fn repository_kept(marker: &Marker, policy: &ImagePolicy) -> bool {
    marker.field != Field::Whole
        || ImageRef::parse(&marker.value).is_ok_and(|r| r.name() == policy.image)
}

fn relative(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// The scalar a move writes: a whole reference, a tag, or a repository.
fn written_value(marker: &Marker, image: &str, new: &str) -> String {
    match marker.field {
        Field::Whole => format!("{image}:{new}"),
        Field::Tag | Field::Name => new.to_string(),
    }
}

/// Writes the changed values files and commits exactly them. Refused, with nothing written,
/// when anything is staged or a file to change has changes of its own; a failed commit puts
/// the files back.
fn write_and_commit(
    request: &UpdateRequest,
    texts: &BTreeMap<PathBuf, String>,
    moves: &[(Found, Move)],
) -> Result<Option<String>, UpdateError> {
    let mut edits: BTreeMap<&PathBuf, Vec<(&Marker, String)>> = BTreeMap::new();
    for (found, m) in moves {
        if let Some(new) = &m.new {
            edits
                .entry(&found.file)
                .or_default()
                .push((&found.marker, written_value(&found.marker, &m.image, new)));
        }
    }
    if edits.is_empty() {
        return Ok(None);
    }
    let changed: Vec<String> = edits.keys().map(|f| relative(&request.root, f)).collect();
    check_clean(&request.root, &changed)?;
    let mut written: Vec<&PathBuf> = Vec::new();
    let result = (|| {
        for (file, file_edits) in &edits {
            let edits: Vec<(&Marker, &str)> =
                file_edits.iter().map(|(m, v)| (*m, v.as_str())).collect();
            let text = image_markers::rewrite(&texts[*file], &edits);
            write_in_place(file, &text)?;
            written.push(file);
        }
        let specs: Vec<&str> = changed.iter().map(String::as_str).collect();
        Ok(git::commit_paths(
            &request.root,
            &specs,
            &commit_message(&request.env, moves),
            request.author.as_deref(),
        )?)
    })();
    let Err(error) = result else {
        return result;
    };
    let unrestored: Vec<String> = written
        .into_iter()
        .filter(|file| write_in_place(file, &texts[*file]).is_err())
        .map(|file| relative(&request.root, file))
        .collect();
    if unrestored.is_empty() {
        return Err(error);
    }
    Err(UpdateError::NotRestored {
        cause: Box::new(error),
        files: unrestored.join(", "),
    })
}

fn check_clean(root: &Path, files: &[String]) -> Result<(), UpdateError> {
    let staged = git::staged_outside(root, "")?;
    if !staged.is_empty() {
        return Err(UpdateError::Refused(format!(
            "other changes are staged ({}): the update commits only the values files it changes",
            staged.join(", ")
        )));
    }
    let dirty: Vec<&String> = git::changed_outside(root, "")?
        .iter()
        .filter_map(|p| files.iter().find(|f| *f == p))
        .collect();
    if !dirty.is_empty() {
        return Err(UpdateError::Refused(format!(
            "{} has uncommitted changes: commit them first, so the update's commit holds only the update",
            dirty
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// Writes beside the file, then renames over it: a file is either as it was or as updated.
fn write_in_place(file: &Path, text: &str) -> Result<(), UpdateError> {
    let failed = |source| UpdateError::Write {
        path: file.to_path_buf(),
        source,
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut temporary = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    std::io::Write::write_all(&mut temporary, text.as_bytes()).map_err(failed)?;
    if let Ok(metadata) = std::fs::metadata(file) {
        let _ = std::fs::set_permissions(temporary.path(), metadata.permissions());
    }
    temporary.persist(file).map_err(|e| failed(e.error))?;
    Ok(())
}

/// `umbrella: update images for ENV`, with an `Image-Update:` trailer per move.
fn commit_message(env: &str, moves: &[(Found, Move)]) -> String {
    let mut trailers: Vec<String> = moves
        .iter()
        .filter_map(|(_, m)| {
            let new = m.new.as_ref()?;
            Some(format!("Image-Update: {} {} -> {new}", m.image, m.old))
        })
        .collect();
    trailers.dedup();
    format!(
        "umbrella: update images for {env}\n\n{}\n",
        trailers.join("\n")
    )
}
