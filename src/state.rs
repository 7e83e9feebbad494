//! The git repository that holds the sources and the rendered state (git2).

use std::path::{Path, PathBuf};

/// The repository could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{}: not inside a git repository ({reason})", path.display())]
pub struct NotARepository {
    pub path: PathBuf,
    pub reason: String,
}

/// The work tree root of the git repository containing `path`.
pub fn repository_root(path: &Path) -> Result<PathBuf, NotARepository> {
    let not_a_repo = |reason: String| NotARepository {
        path: path.to_path_buf(),
        reason,
    };
    let repo = git2::Repository::discover(path).map_err(|e| not_a_repo(e.message().to_string()))?;
    // Collecting the components drops libgit2's trailing slash.
    repo.workdir()
        .map(|dir| dir.components().collect())
        .ok_or_else(|| not_a_repo("the repository is bare".into()))
}
