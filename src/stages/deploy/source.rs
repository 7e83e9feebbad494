//! The state a deploy or a diff reads: the work tree's `umbrella-state/<env>`, or the one a git
//! revision holds (read from git's objects, the work tree untouched), with each app's commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::adapters::git::{self, GitError, StateSource};
use crate::exit::{self, ExitStatus};
use crate::formats::layout::{self, AppId};

/// An environment's state on disk, and the state commit of each of its apps.
#[derive(Debug)]
pub struct DeploySource {
    pub dir: PathBuf,
    /// By app name: the commit that introduced exactly the app directory's content, or
    /// [`git::UNCOMMITTED`].
    pub commits: BTreeMap<String, String>,
    /// The repository is a shallow clone: commits beyond its boundary are unknown.
    pub shallow: bool,
    /// The repository the state comes from, recorded in the inventories.
    pub repository: git::RepositoryId,
    /// Where a revision's state was written; removed with the source.
    _scratch: Option<tempfile::TempDir>,
}

/// The state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("reading {path} at {revision}: {source}")]
    Revision {
        path: String,
        revision: String,
        source: GitError,
    },
    #[error("a temporary directory: {0}")]
    Scratch(std::io::Error),
    /// `umbrella-state` or `umbrella-state/<env>` is a symbolic link: never followed.
    #[error("{0}")]
    Linked(String),
}

impl ExitStatus for SourceError {
    fn exit_code(&self) -> u8 {
        exit::REFUSED
    }
}

impl DeploySource {
    /// The environment's state in the work tree, or as `revision` holds it.
    pub fn read(root: &Path, env: &str, revision: Option<&str>) -> Result<Self, SourceError> {
        let Some(revision) = revision else {
            layout::no_link_to_env(root, env).map_err(SourceError::Linked)?;
            let dir = layout::env_dir(root, env);
            let commits =
                git::content_commits(root, &layout::env_path(env), StateSource::WorkTree(&dir))?;
            return Ok(DeploySource::new(root, env, dir, commits, None));
        };
        let scratch = tempfile::tempdir().map_err(SourceError::Scratch)?;
        let path = layout::env_path(env);
        let in_revision = |source| SourceError::Revision {
            path: path.clone(),
            revision: revision.to_string(),
            source,
        };
        git::export_tree(root, revision, &path, scratch.path())?;
        let commits = git::content_commits(root, &path, StateSource::Revision(revision))
            .map_err(in_revision)?;
        let dir = scratch.path().to_path_buf();
        Ok(DeploySource::new(root, env, dir, commits, Some(scratch)))
    }

    /// No state at all, of `repository`: what a command that applies none of it (a delete of
    /// an environment the repository has no state for) runs under.
    pub fn none(repository: git::RepositoryId) -> Self {
        DeploySource {
            dir: PathBuf::new(),
            commits: BTreeMap::new(),
            shallow: false,
            repository,
            _scratch: None,
        }
    }

    fn new(
        root: &Path,
        env: &str,
        dir: PathBuf,
        by_directory: BTreeMap<String, String>,
        scratch: Option<tempfile::TempDir>,
    ) -> Self {
        let shallow = git::is_shallow(root);
        let commits = by_directory
            .into_iter()
            .map(|(dir, commit)| (AppId::new(env, &dir).to_string(), commit))
            .collect();
        DeploySource {
            dir,
            commits,
            shallow,
            repository: git::repository_id(root),
            _scratch: scratch,
        }
    }

    /// The apps whose state no commit holds (or none that a shallow clone shows): they deploy,
    /// but cannot be rolled back to or checked for drift by commit.
    pub fn uncommitted(&self) -> Vec<&str> {
        self.commits
            .iter()
            .filter(|(_, commit)| *commit == git::UNCOMMITTED)
            .map(|(app, _)| app.as_str())
            .collect()
    }
}
