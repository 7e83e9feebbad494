//! Commits: the paths a stage changed, committed on HEAD with an author, the index left as it
//! was when the commit fails.

use std::path::Path;

use super::error::GitError;

/// The signature of a commit: `Name <email>`; else git's configuration; else
/// `GIT_AUTHOR_NAME`/`GIT_AUTHOR_EMAIL`; else umbrella's own (a fresh CI clone has none).
fn signature(
    repo: &git2::Repository,
    author: Option<&str>,
) -> Result<git2::Signature<'static>, GitError> {
    if let Some(author) = author {
        let (name, email) = author
            .rsplit_once('<')
            .map(|(name, email)| (name.trim(), email.trim_end_matches('>').trim()))
            .filter(|(name, email)| !name.is_empty() && email.contains('@'))
            .ok_or_else(|| {
                GitError::Invalid(format!("--author `{author}`: expected `Name <email>`"))
            })?;
        return Ok(git2::Signature::now(name, email)?);
    }
    if let Ok(signature) = repo.signature() {
        return Ok(signature.to_owned());
    }
    let name = std::env::var("GIT_AUTHOR_NAME").unwrap_or_else(|_| "umbrella".into());
    let email = std::env::var("GIT_AUTHOR_EMAIL").unwrap_or_else(|_| "umbrella@localhost".into());
    Ok(git2::Signature::now(&name, &email)?)
}

/// Where HEAD stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub sha: String,
    pub detached: bool,
}

/// HEAD's commit; `None` before the first commit.
pub fn head(root: &Path) -> Result<Option<Head>, GitError> {
    let repo = git2::Repository::discover(root)?;
    let Ok(commit) = repo.head().and_then(|h| h.peel_to_commit()) else {
        return Ok(None);
    };
    Ok(Some(Head {
        sha: commit.id().to_string(),
        detached: repo.head_detached()?,
    }))
}

/// Paths staged in the index (against HEAD) outside `prefix` (a directory, relative).
pub fn staged_outside(root: &Path, prefix: &str) -> Result<Vec<String>, GitError> {
    let repo = git2::Repository::discover(root)?;
    let tree = repo.head()?.peel_to_tree()?;
    let index = repo.index()?;
    let diff = repo.diff_tree_to_index(Some(&tree), Some(&index), None)?;
    Ok(diff
        .deltas()
        .filter_map(|d| {
            d.new_file()
                .path()
                .or(d.old_file().path())
                .map(|p| p.display().to_string())
        })
        .filter(|p| !p.starts_with(&format!("{prefix}/")))
        .collect())
}

/// Paths of the work tree that differ from HEAD or are untracked (ignored ones aside),
/// outside `prefix` (a directory, relative).
pub fn changed_outside(root: &Path, prefix: &str) -> Result<Vec<String>, GitError> {
    let repo = git2::Repository::discover(root)?;
    let mut options = git2::StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    Ok(repo
        .statuses(Some(&mut options))?
        .iter()
        .filter_map(|entry| entry.path().ok().map(str::to_string))
        .filter(|path| !path.starts_with(&format!("{prefix}/")))
        .collect())
}

/// Stages everything under `pathspecs` (additions, changes, deletions) and commits it on HEAD
/// (which may be unborn) with `message`. Returns the new commit, or `None` when the tree would
/// not change. The staging is built in memory and the index written only once the commit is
/// made: a commit that fails leaves the index as it was.
pub fn commit_paths(
    root: &Path,
    pathspecs: &[&str],
    message: &str,
    author: Option<&str>,
) -> Result<Option<String>, GitError> {
    let repo = git2::Repository::discover(root)?;
    let mut index = repo.index()?;
    index.add_all(pathspecs, git2::IndexAddOption::DEFAULT, None)?;
    index.update_all(pathspecs, None)?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    if parent.as_ref().is_some_and(|p| p.tree_id() == tree.id()) {
        index.write()?;
        return Ok(None);
    }
    let signature = signature(&repo, author)?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let id = repo.commit(
        Some("HEAD"),
        &signature,
        &signature,
        message,
        &tree,
        &parents,
    )?;
    index.write()?;
    Ok(Some(id.to_string()))
}
