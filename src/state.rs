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

/// The commit a directory of the repository was taken from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub sha: String,
    /// The `origin` remote's URL, if there is one.
    pub remote_url: Option<String>,
    /// Files under the directory differ from the commit (or are untracked).
    pub dirty: bool,
}

/// The HEAD commit of the repository at `root`, and whether `path` (relative) has changes.
/// `None` outside a repository or before the first commit.
pub fn revision_of(root: &Path, path: &str) -> Option<Revision> {
    let repo = git2::Repository::discover(root).ok()?;
    let sha = repo.head().ok()?.peel_to_commit().ok()?.id().to_string();
    let remote_url = repo
        .find_remote("origin")
        .ok()
        .and_then(|r| r.url().ok().map(str::to_string));
    let mut options = git2::StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .pathspec(path);
    let dirty = repo
        .statuses(Some(&mut options))
        .map(|s| !s.is_empty())
        .unwrap_or(true);
    Some(Revision {
        sha,
        remote_url,
        dirty,
    })
}
