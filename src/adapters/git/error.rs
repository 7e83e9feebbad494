//! Why a git operation failed.

use std::path::Path;

/// A git operation failed, or a revision or path does not exist.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("{0}")]
    Invalid(String),
}

/// A file of the work tree that could not be read, as a refusal naming it.
pub(super) fn io_refusal(path: &Path, error: &std::io::Error) -> GitError {
    GitError::Invalid(format!("{}: {error}", path.display()))
}
