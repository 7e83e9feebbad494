//! Why a git operation failed.

use std::path::{Path, PathBuf};

/// A git operation failed, or a revision or path does not exist.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("{0}")]
    Invalid(String),
    /// A commit failed after its changes were staged, and the index could not be put back.
    #[error(
        "git: {commit}; and the index {} could not be put back ({source}): `git reset` unstages what the failed commit staged",
        path.display()
    )]
    IndexNotRestored {
        commit: git2::Error,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A file of the work tree that could not be read, as a refusal naming it.
pub(super) fn io_refusal(path: &Path, error: &std::io::Error) -> GitError {
    GitError::Invalid(format!("{}: {error}", path.display()))
}
