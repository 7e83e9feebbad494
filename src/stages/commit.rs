//! The commit stage: `umbrella-state/<env>/` and nothing else becomes a commit on HEAD (the
//! release), with trailers naming the source commit, the environment and the built images.

use std::path::{Path, PathBuf};

use crate::adapters::git::{self, GitError};
use crate::exit::{self, ExitStatus};
use crate::formats::images_lock::ImagesLock;
use crate::formats::layout;

/// What `commit` needs to know.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub root: PathBuf,
    pub env: String,
    pub allow_dirty: bool,
    pub allow_detached: bool,
    /// `Name <email>`; else git's configuration, else `GIT_AUTHOR_NAME`/`GIT_AUTHOR_EMAIL`.
    pub author: Option<String>,
}

/// What `commit` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed {
        id: String,
        message: String,
    },
    /// The state of the environment is already what HEAD holds.
    Unchanged,
}

/// Why nothing was committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{0}")]
    Refused(String),
}

impl ExitStatus for CommitError {
    fn exit_code(&self) -> u8 {
        exit::FAILURE
    }
}

/// Records `umbrella-state/<env>/` (additions, changes, deletions) and nothing else as a
/// commit on HEAD. Refused when other paths are staged, when the sources have uncommitted
/// changes (unless allowed), or on a detached HEAD (unless allowed).
pub fn commit_state(request: &CommitRequest) -> Result<CommitOutcome, CommitError> {
    let root = &request.root;
    let prefix = layout::env_path(&request.env);
    let head = git::head(root)?.ok_or_else(|| {
        CommitError::Refused("the repository has no commit yet: commit the sources first".into())
    })?;
    if head.detached && !request.allow_detached {
        return Err(CommitError::Refused(
            "HEAD is detached: check out a branch, or pass --allow-detached".into(),
        ));
    }
    let staged_elsewhere = git::staged_outside(root, &prefix)?;
    if !staged_elsewhere.is_empty() {
        return Err(CommitError::Refused(format!(
            "other paths are staged ({}): a state commit holds only {prefix}/; unstage them first",
            staged_elsewhere.join(", ")
        )));
    }
    if !request.allow_dirty {
        let dirty = git::changed_outside(root, layout::STATE_DIR)?;
        if !dirty.is_empty() {
            return Err(CommitError::Refused(format!(
                "the source tree has uncommitted changes ({}): the state would not match any source commit; commit them, or pass --allow-dirty",
                dirty.join(", ")
            )));
        }
    }
    let message = message(&request.env, &head.sha, &pinned_images(root, &request.env));
    Ok(
        match git::commit_paths(root, &[&prefix], &message, request.author.as_deref())? {
            Some(id) => CommitOutcome::Committed { id, message },
            None => CommitOutcome::Unchanged,
        },
    )
}

fn message(env: &str, source: &str, images: &[String]) -> String {
    let mut message = format!(
        "umbrella: render {env} at {}\n\nSource-Commit: {source}\nEnvironment: {env}\n",
        &source[..12.min(source.len())]
    );
    for image in images {
        message.push_str(&format!("Image: {image}\n"));
    }
    message
}

/// Every image of the environment's lock, built here or third-party, as pinned: `history`
/// shows what each release changed.
fn pinned_images(root: &Path, env: &str) -> Vec<String> {
    let lock = ImagesLock::read(&layout::env_lock(root, env)).unwrap_or_default();
    lock.images().iter().map(|i| i.new_image.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_source_environment_and_images() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            message("prod", sha, &["r/a@sha256:1".into()]),
            format!(
                "umbrella: render prod at 0123456789ab\n\nSource-Commit: {sha}\nEnvironment: prod\nImage: r/a@sha256:1\n"
            )
        );
    }
}
