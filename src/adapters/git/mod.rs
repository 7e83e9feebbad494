//! The git repository that holds the sources and the rendered state (git2).

mod commit;
mod error;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use commit::{Head, changed_outside, commit_paths, head, staged_outside};
pub use error::GitError;
use error::io_refusal;

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

/// The last commit that changed `path` (relative; like `git log -1 -- path`), and whether the
/// work tree has changes under it. Not HEAD: a state commit must not change the origin of an
/// image whose sources did not change. `None` outside a repository or before the first commit.
pub fn revision_of(root: &Path, path: &str) -> Option<Revision> {
    let repo = git2::Repository::discover(root).ok()?;
    let sha = last_commit_touching(&repo, Path::new(path))?.to_string();
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

fn last_commit_touching(repo: &git2::Repository, path: &Path) -> Option<git2::Oid> {
    let head = repo.head().ok()?.peel_to_commit().ok()?;
    let content = entry_id(&head, path);
    // Back from HEAD while the entry stays the same: the oldest of that run changed it.
    first_parents(head)
        .take_while(|c| entry_id(c, path) == content)
        .last()
        .map(|c| c.id())
}

/// The id of `path` in the commit's tree (`None` where the commit does not have it).
fn entry_id(commit: &git2::Commit<'_>, path: &Path) -> Option<git2::Oid> {
    commit.tree().ok()?.get_path(path).ok().map(|e| e.id())
}

/// `start` and its first parents, newest first.
fn first_parents(start: git2::Commit<'_>) -> impl Iterator<Item = git2::Commit<'_>> {
    std::iter::successors(Some(start), |c| c.parent(0).ok())
}

/// Writes the `path` directory (relative to the repository root) as it is in the commit `rev`
/// into `target`, straight from git's objects: the work tree is not touched. Returns the
/// commit's full sha. A symbolic link or submodule in it is refused.
pub fn export_tree(root: &Path, rev: &str, path: &str, target: &Path) -> Result<String, GitError> {
    let repo = git2::Repository::discover(root)?;
    let commit = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| GitError::Invalid(format!("revision `{rev}`: {}", e.message())))?;
    let entry = commit
        .tree()?
        .get_path(Path::new(path))
        .map_err(|_| GitError::Invalid(format!("revision `{rev}` has no {path}")))?;
    let tree = repo
        .find_tree(entry.id())
        .map_err(|_| GitError::Invalid(format!("revision `{rev}`: {path} is not a directory")))?;
    let mut failure = None;
    let walked = tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or_default();
        if entry.kind() == Some(git2::ObjectType::Tree) {
            return git2::TreeWalkResult::Ok;
        }
        // A link (or submodule) counts as neither a file nor a removal: refused, as in the
        // work tree.
        if entry.kind() != Some(git2::ObjectType::Blob) || entry.filemode() == i32::from(git2::FileMode::Link) {
            failure = Some(format!(
                "{path}/{dir}{name} at revision `{rev}` is a symbolic link or submodule, not a plain file or directory: never followed"
            ));
            return git2::TreeWalkResult::Abort;
        }
        let file = target.join(dir).join(name);
        let written = repo
            .find_blob(entry.id())
            .map_err(|e| e.to_string())
            .and_then(|blob| {
                std::fs::create_dir_all(file.parent().unwrap_or(target))
                    .map_err(|e| e.to_string())?;
                std::fs::write(&file, blob.content()).map_err(|e| e.to_string())
            });
        match written {
            Ok(()) => git2::TreeWalkResult::Ok,
            Err(e) => {
                failure = Some(format!("{}: {e}", file.display()));
                git2::TreeWalkResult::Abort
            }
        }
    });
    // An abort of ours says why; git's own error only that the walk stopped.
    if let Some(reason) = failure {
        return Err(GitError::Invalid(reason));
    }
    walked?;
    Ok(commit.id().to_string())
}

/// One commit that changed an environment's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateCommit {
    pub sha: String,
    /// Seconds since the epoch.
    pub time: i64,
    pub summary: String,
    /// The `Source-Commit:` trailer, when umbrella made the commit.
    pub source_commit: Option<String>,
    /// The `Image:` trailers.
    pub images: Vec<String>,
}

/// The commits of HEAD's first-parent history that changed `path` (relative to the root),
/// newest first.
pub fn history(root: &Path, path: &str) -> Result<Vec<StateCommit>, GitError> {
    let repo = git2::Repository::discover(root)?;
    let path = Path::new(path);
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|_| GitError::Invalid("the repository has no commit yet".into()))?;
    Ok(first_parents(head)
        .filter(|commit| {
            let here = entry_id(commit, path);
            here.is_some() && here != commit.parent(0).ok().and_then(|p| entry_id(&p, path))
        })
        .map(|commit| state_commit(&commit))
        .collect())
}

fn state_commit(commit: &git2::Commit<'_>) -> StateCommit {
    let message = commit.message().unwrap_or_default();
    let trailer = |key: &'static str| {
        message
            .lines()
            .filter_map(move |l| l.strip_prefix(key).map(|v| v.trim().to_string()))
    };
    StateCommit {
        sha: commit.id().to_string(),
        time: commit.time().seconds(),
        summary: commit
            .summary()
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_string(),
        source_commit: trailer("Source-Commit:").next(),
        images: trailer("Image:").collect(),
    }
}

/// Where the state of an environment is read from.
#[derive(Debug, Clone, Copy)]
pub enum StateSource<'a> {
    /// A directory on disk (the work tree's `umbrella-state/<env>`).
    WorkTree(&'a Path),
    /// The state as a git revision holds it.
    Revision(&'a str),
}

/// The commit each app directory of an environment's state (`path`, relative to the root)
/// comes from, found by content: the commit that introduced exactly that content on the
/// first-parent history of the revision (HEAD for the work tree). A revision deployed with
/// `--revision REV` and the same revision checked out with `git checkout REV -- path` record
/// the same commits, unless the same content appeared more than once in the history (then the
/// checkout finds its newest appearance). Content no commit holds, and content whose commit
/// lies beyond a shallow clone's boundary, is `uncommitted`.
pub fn content_commits(
    root: &Path,
    path: &str,
    source: StateSource<'_>,
) -> Result<BTreeMap<String, String>, GitError> {
    // Outside a repository, or before its first commit, everything is uncommitted.
    let repo = git2::Repository::discover(root).ok();
    let (contents, start) = match source {
        StateSource::WorkTree(dir) => (
            work_tree_contents(dir)?,
            repo.as_ref()
                .and_then(|r| r.head().and_then(|h| h.peel_to_commit()).ok()),
        ),
        StateSource::Revision(rev) => {
            let repo = repo.as_ref().ok_or_else(|| {
                GitError::Invalid(format!("revision `{rev}`: not inside a git repository"))
            })?;
            let commit = repo
                .revparse_single(rev)
                .and_then(|o| o.peel_to_commit())
                .map_err(|e| GitError::Invalid(format!("revision `{rev}`: {}", e.message())))?;
            (revision_contents(repo, &commit, path)?, Some(commit))
        }
    };
    let boundary = repo.as_ref().map(shallow_boundary).unwrap_or_default();
    Ok(contents
        .into_iter()
        .map(|(name, content)| {
            let commit = start
                .as_ref()
                .and_then(|s| {
                    introducing_commit(s, &Path::new(path).join(&name), content, &boundary)
                })
                .map_or_else(|| UNCOMMITTED.to_string(), |id| id.to_string());
            (name, commit)
        })
        .collect())
}

/// The git tree id of every app directory (direct subdirectory, not followed through links).
fn work_tree_contents(dir: &Path) -> Result<BTreeMap<String, git2::Oid>, GitError> {
    let mut contents = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_refusal(dir, &e))? {
        let entry = entry.map_err(|e| io_refusal(dir, &e))?;
        if entry.file_type().map_err(|e| io_refusal(dir, &e))?.is_dir() {
            let id = directory_tree_id(&entry.path()).map_err(|e| io_refusal(dir, &e))?;
            contents.insert(entry.file_name().to_string_lossy().into_owned(), id);
        }
    }
    Ok(contents)
}

/// The tree id of every app directory as the commit holds it, straight from git.
fn revision_contents(
    repo: &git2::Repository,
    commit: &git2::Commit<'_>,
    path: &str,
) -> Result<BTreeMap<String, git2::Oid>, GitError> {
    let entry = commit
        .tree()?
        .get_path(Path::new(path))
        .map_err(|_| GitError::Invalid(format!("revision {} has no {path}", commit.id())))?;
    let tree = entry
        .to_object(repo)?
        .peel_to_tree()
        .map_err(|_| GitError::Invalid(format!("{path} is not a directory")))?;
    Ok(tree
        .iter()
        .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
        .filter_map(|e| Some((e.name().ok()?.to_string(), e.id())))
        .collect())
}

/// The commits where a shallow clone's history is cut: beyond them, what introduced a content
/// is unknown.
fn shallow_boundary(repo: &git2::Repository) -> BTreeSet<git2::Oid> {
    std::fs::read_to_string(repo.path().join("shallow"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| git2::Oid::from_str(line.trim()).ok())
        .collect()
}

/// What identifies a repository across its clones: its `origin` (as host and path, whatever
/// the URL's form) and its root commit (unknown in a shallow clone, whose history is cut).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryId {
    pub origin: Option<String>,
    pub root: Option<String>,
}

impl RepositoryId {
    /// Whether the two surely name different repositories: their origins differ, or, where
    /// either has no origin, their root commits do. Unknown parts decide nothing.
    pub fn differs_from(&self, other: &RepositoryId) -> bool {
        if let (Some(a), Some(b)) = (&self.origin, &other.origin) {
            return a != b;
        }
        matches!((&self.root, &other.root), (Some(a), Some(b)) if a != b)
    }
}

impl std::fmt::Display for RepositoryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.origin, &self.root) {
            (Some(origin), _) => write!(f, "{origin}"),
            (None, Some(root)) => write!(
                f,
                "the repository whose first commit is {}",
                &root[..12.min(root.len())]
            ),
            (None, None) => write!(f, "an unknown repository"),
        }
    }
}

/// The identity of the repository holding `root` (empty outside a repository).
pub fn repository_id(root: &Path) -> RepositoryId {
    let Ok(repo) = git2::Repository::discover(root) else {
        return RepositoryId::default();
    };
    let origin = repo
        .find_remote("origin")
        .ok()
        .and_then(|r| r.url().ok().map(normalized_url));
    let first = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .ok()
        .and_then(|head| first_parents(head).last())
        .filter(|_| !repo.is_shallow())
        .map(|c| c.id().to_string());
    RepositoryId {
        origin,
        root: first,
    }
}

/// `host/path` of a remote URL, whatever its form (`https://`, `ssh://`, `git@host:path`),
/// without a trailing `.git` or `/`.
fn normalized_url(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split_once('@').map_or(rest, |(_, host)| host);
    let rest = match rest.split_once(':') {
        // scp-like `host:path`; a port (`host:2222/path`) is not this form.
        Some((host, path)) if !url.contains("://") && !host.contains('/') => {
            format!("{host}/{path}")
        }
        _ => rest.to_string(),
    };
    let rest = rest.trim_end_matches('/');
    rest.strip_suffix(".git").unwrap_or(rest).to_lowercase()
}

/// Whether the repository holding `root` is a shallow clone.
pub fn is_shallow(root: &Path) -> bool {
    git2::Repository::discover(root).is_ok_and(|r| r.is_shallow())
}

/// What `content_commits` records for content that no commit holds.
pub const UNCOMMITTED: &str = "uncommitted";

/// The newest commit of `start`'s first-parent history whose `path` holds `content` while its
/// parent's does not; `None` when no commit holds it, or when the history is cut (a shallow
/// clone) before the content's first appearance.
fn introducing_commit(
    start: &git2::Commit<'_>,
    path: &Path,
    content: git2::Oid,
    boundary: &BTreeSet<git2::Oid>,
) -> Option<git2::Oid> {
    let holds = |commit: &git2::Commit<'_>| entry_id(commit, path) == Some(content);
    let oldest = first_parents(start.clone())
        .skip_while(|c| !holds(c))
        .take_while(holds)
        .last()?;
    let cut_off = oldest.parent(0).is_err() && boundary.contains(&oldest.id());
    (!cut_off).then(|| oldest.id())
}

/// The id git gives the tree of a directory on disk (without writing any object), so work-tree
/// content can be matched with commits. Empty directories are left out, as git does.
pub fn directory_tree_id(dir: &Path) -> std::io::Result<git2::Oid> {
    match tree_entry(dir)? {
        Some((_, id)) => Ok(id),
        None => git2::Oid::hash_object(git2::ObjectType::Tree, b"").map_err(std::io::Error::other),
    }
}

/// The mode and id of `path` as a git tree entry; `None` for an empty directory.
fn tree_entry(path: &Path) -> std::io::Result<Option<(&'static str, git2::Oid)>> {
    let metadata = std::fs::symlink_metadata(path)?;
    let hash =
        |kind, bytes: &[u8]| git2::Oid::hash_object(kind, bytes).map_err(std::io::Error::other);
    if metadata.is_symlink() {
        let target = std::fs::read_link(path)?;
        return Ok(Some((
            "120000",
            hash(
                git2::ObjectType::Blob,
                target.as_os_str().as_encoded_bytes(),
            )?,
        )));
    }
    if metadata.is_file() {
        use std::os::unix::fs::PermissionsExt;
        // git looks at the owner's execute bit only.
        let mode = if metadata.permissions().mode() & 0o100 != 0 {
            "100755"
        } else {
            "100644"
        };
        return Ok(Some((
            mode,
            hash(git2::ObjectType::Blob, &std::fs::read(path)?)?,
        )));
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        // A nested repository is not content git would record.
        if entry.file_name() == ".git" {
            continue;
        }
        if let Some((mode, id)) = tree_entry(&entry.path())? {
            entries.push((entry.file_name().as_encoded_bytes().to_vec(), mode, id));
        }
    }
    if entries.is_empty() {
        return Ok(None);
    }
    // git orders a tree's entries by name, a subtree's name taken as if it ended with '/'.
    let sort_key = |(name, mode, _): &(Vec<u8>, &str, git2::Oid)| {
        let mut key = name.clone();
        if *mode == "40000" {
            key.push(b'/');
        }
        key
    };
    entries.sort_by_key(sort_key);
    let mut bytes = Vec::new();
    for (name, mode, id) in entries {
        bytes.extend_from_slice(mode.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(&name);
        bytes.push(0);
        bytes.extend_from_slice(id.as_bytes());
    }
    Ok(Some(("40000", hash(git2::ObjectType::Tree, &bytes)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::write;

    /// Commits the whole work tree on HEAD and returns the commit's id.
    fn commit_all(repo: &git2::Repository, message: &str) -> git2::Oid {
        let root = repo.workdir().expect("a work tree");
        let id = commit_paths(root, &["*"], message, Some("t <t@example.com>"))
            .expect("commit")
            .expect("something to commit");
        git2::Oid::from_str(&id).expect("an id")
    }

    #[test]
    fn a_commit_that_fails_puts_the_index_back_as_it_was() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = git2::Repository::init(dir.path()).expect("init");
        let branch = repo
            .find_reference("HEAD")
            .expect("HEAD")
            .symbolic_target()
            .ok()
            .flatten()
            .expect("a branch")
            .to_string();
        let lock = repo.path().join(format!("{branch}.lock"));
        let index = repo.path().join("index");
        let author = Some("t <t@example.com>");
        write(dir.path(), "state/a.yaml", "a: 1\n");
        // Before the first commit there is no index: there is none after a failed one.
        std::fs::write(&lock, "").expect("lock the branch");
        let error = commit_paths(dir.path(), &["state"], "m", author).unwrap_err();
        assert!(matches!(error, GitError::Git(_)), "{error}");
        assert!(!index.exists(), "an index was left behind");

        std::fs::remove_file(&lock).expect("unlock");
        commit_all(&repo, "first");
        // Something else staged stays staged; the failed commit's paths are not.
        write(dir.path(), "other.txt", "staged by hand\n");
        let mut staging = repo.index().expect("index");
        staging.add_path(Path::new("other.txt")).expect("add");
        staging.write().expect("write the index");
        write(dir.path(), "state/a.yaml", "a: 2\n");
        let before = std::fs::read(&index).expect("read the index");
        std::fs::write(&lock, "").expect("lock the branch");
        let error = commit_paths(dir.path(), &["state"], "m", author).unwrap_err();
        assert!(matches!(error, GitError::Git(_)), "{error}");
        assert_eq!(std::fs::read(&index).expect("read the index"), before);
        assert!(!repo.path().join("index.lock").exists());
        let staged = staged_outside(dir.path(), "no-such-dir").expect("staged");
        assert_eq!(staged, ["other.txt"]);
    }

    #[test]
    fn a_bad_author_fails_before_anything_is_staged() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = git2::Repository::init(dir.path()).expect("init");
        write(dir.path(), "a.txt", "1\n");
        commit_all(&repo, "first");
        write(dir.path(), "a.txt", "2\n");
        let index = repo.path().join("index");
        let before = std::fs::read(&index).expect("read the index");
        // Umbrella reads it as `Name <email>`; git refuses the angle bracket in the email.
        let error = commit_paths(dir.path(), &["*"], "m", Some("A <a>@example.com>")).unwrap_err();
        assert!(error.to_string().contains("angle brackets"), "{error}");
        assert_eq!(std::fs::read(&index).expect("read the index"), before);
    }

    #[test]
    fn remote_urls_name_the_same_repository_whatever_their_form() {
        for url in [
            "https://github.com/Org/Shop.git",
            "git@github.com:org/shop.git",
            "ssh://git@github.com/org/shop",
            "https://token@github.com/org/shop/",
        ] {
            assert_eq!(normalized_url(url), "github.com/org/shop", "{url}");
        }
        let id = |origin: Option<&str>, root: Option<&str>| RepositoryId {
            origin: origin.map(str::to_string),
            root: root.map(str::to_string),
        };
        assert!(id(Some("a"), Some("1")).differs_from(&id(Some("b"), Some("1"))));
        assert!(!id(Some("a"), Some("1")).differs_from(&id(Some("a"), None)));
        assert!(id(None, Some("1")).differs_from(&id(Some("a"), Some("2"))));
        assert!(!id(None, None).differs_from(&id(Some("a"), Some("2"))));
    }

    #[test]
    fn directory_tree_id_is_the_id_git_gives_the_tree() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = git2::Repository::init(dir.path()).expect("init");
        let state = dir.path().join("state");
        // "a.yaml" sorts before the subtree "a", which git orders as "a/".
        write(&state, "a.yaml", "x: 1\n");
        write(&state, "a/b.yaml", "y: 2\n");
        write(&state, "a-b/c.yaml", "z: 3\n");
        write(&state, "run.sh", "#!/bin/sh\n");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(state.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::create_dir_all(state.join("empty")).expect("empty dir");
        let commit = repo
            .find_commit(commit_all(&repo, "state"))
            .expect("commit");
        let committed = commit
            .tree()
            .expect("tree")
            .get_path(Path::new("state"))
            .expect("entry")
            .id();
        assert_eq!(directory_tree_id(&state).expect("tree id"), committed);
    }

    #[test]
    fn a_linked_app_in_a_revision_is_refused_never_read_as_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = git2::Repository::init(dir.path()).expect("init");
        write(dir.path(), "elsewhere/cm.yaml", "kind: ConfigMap\n");
        write(
            dir.path(),
            "umbrella-state/dev/web/cm.yaml",
            "kind: ConfigMap\n",
        );
        std::os::unix::fs::symlink("../../elsewhere", dir.path().join("umbrella-state/dev/api"))
            .expect("link");
        let sha = commit_all(&repo, "state").to_string();
        let target = tempfile::tempdir().expect("temp dir");
        let error = export_tree(dir.path(), &sha, "umbrella-state/dev", target.path())
            .expect_err("a link in the state");
        assert!(
            error
                .to_string()
                .contains("umbrella-state/dev/api at revision")
                && error.to_string().contains("symbolic link"),
            "{error}"
        );
    }

    #[test]
    fn content_commits_finds_the_commit_that_introduced_the_content() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = git2::Repository::init(dir.path()).expect("init");
        let state = dir.path().join("umbrella-state/prod");
        write(&state, "web/deployment.yaml", "replicas: 1\n");
        write(&state, "db/statefulset.yaml", "replicas: 1\n");
        let first = commit_all(&repo, "first");
        write(dir.path(), "src.txt", "unrelated\n");
        let unrelated = commit_all(&repo, "unrelated");
        write(&state, "web/deployment.yaml", "replicas: 2\n");
        let second = commit_all(&repo, "second");
        let root = dir.path();
        let path = "umbrella-state/prod";

        let at_head = content_commits(root, path, StateSource::WorkTree(&state)).expect("commits");
        assert_eq!(at_head["web"], second.to_string());
        assert_eq!(at_head["db"], first.to_string());

        // The first commit's content, back in the work tree: its commit, not HEAD's.
        write(&state, "web/deployment.yaml", "replicas: 1\n");
        let checked_out =
            content_commits(root, path, StateSource::WorkTree(&state)).expect("commits");
        assert_eq!(checked_out["web"], first.to_string());
        let from_revision =
            content_commits(root, path, StateSource::Revision(&unrelated.to_string()))
                .expect("commits");
        assert_eq!(from_revision, checked_out);

        write(&state, "web/deployment.yaml", "replicas: 3\n");
        let edited = content_commits(root, path, StateSource::WorkTree(&state)).expect("commits");
        assert_eq!(edited["web"], UNCOMMITTED);
    }

    #[test]
    fn a_shallow_clone_does_not_guess_beyond_its_boundary() {
        let origin = tempfile::tempdir().expect("temp dir");
        let repo = git2::Repository::init(origin.path()).expect("init");
        write(
            origin.path(),
            "umbrella-state/prod/web/d.yaml",
            "replicas: 1\n",
        );
        commit_all(&repo, "state");
        write(origin.path(), "src.txt", "later\n");
        commit_all(&repo, "source change");
        let clone = tempfile::tempdir().expect("temp dir");
        let status = std::process::Command::new("git")
            .args(["clone", "-q", "--depth", "1"])
            .arg(format!("file://{}", origin.path().display()))
            .arg(clone.path().join("c"))
            .status()
            .expect("git clone");
        assert!(status.success());
        let root = clone.path().join("c");
        assert!(is_shallow(&root));
        let commits = content_commits(
            &root,
            "umbrella-state/prod",
            StateSource::WorkTree(&root.join("umbrella-state/prod")),
        )
        .expect("commits");
        assert_eq!(commits["web"], UNCOMMITTED);
    }
}
