//! The state directory of one environment: its files in memory, written as a whole (a complete
//! new directory replaces the old one, or nothing changes), or compared with what is on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::formats::images_lock::ImagesLock;
use crate::formats::layout::{self, IMAGES_LOCK_FILE};
use crate::formats::manifest;
use crate::formats::secrets::{is_secret_like, mask_secret_data};

use super::split::RenderedObject;

/// The file of an object as rendered: where it came from, then the object.
pub fn plain_file(object: &RenderedObject) -> String {
    source_header(object) + &manifest::to_yaml(&object.value)
}

/// The first line of an object's file, naming the template it came from.
pub fn source_header(object: &RenderedObject) -> String {
    format!("# Source: {}\n", object.source)
}

/// Relative path -> content of every file of an environment's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateFiles {
    pub files: BTreeMap<PathBuf, String>,
}

/// The file names an object may take, the plainest first; the last one is unique per group,
/// kind, namespace and name.
fn file_names(object: &RenderedObject) -> [PathBuf; 3] {
    let kind = object.kind().to_ascii_lowercase();
    let name = object.name();
    let namespace = object.namespace().unwrap_or("cluster");
    let group = object
        .api_version()
        .rsplit_once('/')
        .map_or("core", |(group, _)| group);
    let app = Path::new(&object.app);
    [
        app.join(format!("{kind}-{name}.yaml")),
        app.join(format!("{kind}-{namespace}-{name}.yaml")),
        app.join(format!("{kind}.{group}-{namespace}-{name}.yaml")),
    ]
}

impl StateFiles {
    /// One file per object, `<app>/<kind>-<name>.yaml`, and the lock. When two objects of an
    /// app would share a file, the namespace is added (`<kind>-<namespace>-<name>.yaml`), then
    /// the API group too (`<kind>.<group>-<namespace>-<name>.yaml`, `core` for the core group).
    /// `content` writes each object's file, given its path below the state directory.
    pub fn from_objects(
        objects: &[RenderedObject],
        lock: &ImagesLock,
        mut content: impl FnMut(&RenderedObject, &Path) -> Result<String, String>,
    ) -> Result<Self, String> {
        let mut files = BTreeMap::new();
        let mut taken: BTreeMap<PathBuf, String> = BTreeMap::new();
        let mut seen: BTreeMap<[&str; 4], &str> = BTreeMap::new();
        for object in objects {
            let group = object.api_version().rsplit_once('/').map_or("", |(g, _)| g);
            let identity = [
                group,
                object.kind(),
                object.namespace().unwrap_or(""),
                object.name(),
            ];
            if let Some(first) = seen.insert(identity, &object.source) {
                return Err(format!(
                    "app {}: {} is rendered twice (from {first} and {}); names must be unique per kind and namespace",
                    object.app,
                    object.describe(),
                    object.source
                ));
            }
            let candidates = file_names(object);
            let Some(path) = candidates.iter().find(|p| !taken.contains_key(*p)).cloned() else {
                return Err(format!(
                    "app {}: {} has no file name of its own: {} are taken",
                    object.app,
                    object.describe(),
                    candidates.map(|p| p.display().to_string()).join(", ")
                ));
            };
            taken.insert(path.clone(), object.source.clone());
            let text = content(object, &path)?;
            files.insert(path, text);
        }
        files.insert(PathBuf::from(IMAGES_LOCK_FILE), lock.to_yaml());
        Ok(StateFiles { files })
    }

    /// Reads what is on disk under `dir` (empty when it does not exist). Anything but plain
    /// directories and files (a symbolic link, `dir` itself too) is an error, never followed.
    pub fn read(dir: &Path) -> std::io::Result<Self> {
        let mut files = BTreeMap::new();
        match std::fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => read_into(dir, dir, &mut files)?,
            Ok(meta) if meta.file_type().is_symlink() => return Err(not_plain(dir)),
            _ => {}
        }
        Ok(StateFiles { files })
    }

    /// Writes every file into a new directory beside `dir`, then swaps it in for `dir`. Every
    /// path must stay below `dir`. Renders of the same state take turns; what a killed render
    /// left beside `dir` is removed.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        self.check_paths(dir)?;
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let turn = std::fs::File::open(parent)?;
        turn.lock()?;
        remove_leftovers(parent, &name)?;
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{name}.new-"))
            .tempdir_in(parent)?;
        let directories: std::collections::BTreeSet<&Path> =
            self.files.keys().filter_map(|p| p.parent()).collect();
        for directory in directories {
            std::fs::create_dir_all(staging.path().join(directory))?;
        }
        for (relative, content) in &self.files {
            let file = staging.path().join(relative);
            // An unchanged file is linked, not written again: on many filesystems creating a
            // file costs far more than linking one, and most of a state is unchanged between
            // renders. The old directory is only ever removed, never changed in place.
            let previous = dir.join(relative);
            if !(unchanged(&previous, content) && std::fs::hard_link(&previous, &file).is_ok()) {
                std::fs::write(&file, content)?;
            }
        }
        let staged = staging.keep();
        let swap = || -> std::io::Result<()> {
            if dir.exists() {
                let old = tempfile::Builder::new()
                    .prefix(&format!(".{name}.old-"))
                    .tempdir_in(parent)?
                    .keep();
                std::fs::remove_dir(&old)?;
                std::fs::rename(dir, &old)?;
                if let Err(e) = std::fs::rename(&staged, dir) {
                    // Put the previous state back: nothing changes on failure.
                    std::fs::rename(&old, dir)?;
                    return Err(e);
                }
                std::fs::remove_dir_all(&old)
            } else {
                std::fs::rename(&staged, dir)
            }
        };
        swap().inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&staged);
        })
    }

    /// Every path stays below `dir`, and neither `dir`, nor the directory it is in, nor
    /// anything in it is a symbolic link (which could lead anywhere).
    fn check_paths(&self, dir: &Path) -> std::io::Result<()> {
        let refused = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        if let Some(outside) = self.files.keys().find(|p| !layout::stays_below(p)) {
            let below = format!("{} would not be below {}", outside.display(), dir.display());
            return Err(refused(below));
        }
        let parent = dir.parent().unwrap_or(Path::new("."));
        refuse_links(parent, false)
            .and_then(|()| refuse_links(dir, true))
            .map_err(refused)
    }

    /// A short unified diff from `before` to `self`; `None` when they are the same.
    pub fn diff_from(&self, before: &StateFiles, max_lines: usize) -> Option<String> {
        let paths: std::collections::BTreeSet<&PathBuf> =
            self.files.keys().chain(before.files.keys()).collect();
        let mut out = Vec::new();
        for path in paths {
            let old = before.files.get(path).map(String::as_str).unwrap_or("");
            let new = self.files.get(path).map(String::as_str).unwrap_or("");
            if old == new {
                continue;
            }
            let name = path.display().to_string();
            let (old, new) = shown(old, new);
            let diff = similar::TextDiff::from_lines(&old, &new);
            let text = diff
                .unified_diff()
                .context_radius(2)
                .header(&format!("a/{name}"), &format!("b/{name}"))
                .to_string();
            out.extend(text.lines().map(str::to_string));
        }
        if out.is_empty() {
            return None;
        }
        let total = out.len();
        out.truncate(max_lines);
        if total > max_lines {
            out.push(format!("... {} more lines", total - max_lines));
        }
        Some(out.join("\n"))
    }
}

/// The two versions of a state file as `--check` may show them: as they are, but for a
/// Secret-like object, whose values are masked (numbered per key, so a change still shows).
/// A file that cannot be read but names a Secret-like kind is not shown at all.
fn shown(old: &str, new: &str) -> (String, String) {
    let parsed = |text: &str| {
        manifest::parse_documents(text)
            .ok()
            .filter(|d| d.len() == 1)
            .and_then(|mut d| d.pop())
    };
    let (mut before, mut after) = (parsed(old), parsed(new));
    let secret = |value: &Option<Value>, text: &str| match value {
        Some(value) => is_secret_like(value),
        None => text
            .lines()
            .any(|l| l.trim_start().starts_with("kind:") && l.contains("Secret")),
    };
    if !secret(&before, old) && !secret(&after, new) {
        return (old.to_string(), new.to_string());
    }
    match (&mut before, &mut after) {
        (Some(b), Some(a)) => mask_secret_data(Some(b), a),
        (Some(only), None) | (None, Some(only)) => mask_secret_data(None, only),
        (None, None) => {}
    }
    let text = |value: Option<Value>, original: &str| match value {
        Some(value) => format!("{}{}", comments(original), manifest::to_yaml(&value)),
        None if original.is_empty() => String::new(),
        None => "(a Secret-like object that cannot be read: not shown)\n".into(),
    };
    (text(before, old), text(after, new))
}

/// The comment lines a state file starts with (`# Source: ...`).
fn comments(text: &str) -> String {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Removes what a render killed while writing `name` left beside it: `.name.new-*` and
/// `.name.old-*`. Called holding the turn, so no live render's directory is among them.
fn remove_leftovers(parent: &Path, name: &str) -> std::io::Result<()> {
    let prefixes = [format!(".{name}.new-"), format!(".{name}.old-")];
    for entry in std::fs::read_dir(parent)? {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if prefixes.iter().any(|p| file_name.starts_with(p.as_str())) && entry.file_type()?.is_dir()
        {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// The file is a plain file holding exactly `content`, with the mode a fresh file gets (not
/// executable).
fn unchanged(file: &Path, content: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(file)
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 == 0)
        && std::fs::read(file).is_ok_and(|old| old == content.as_bytes())
}

/// Refuses a symbolic link at `path` (or anything but a plain directory or file), and with
/// `below`, anywhere below it: the state is never read or written through one. Nothing there
/// is fine.
pub fn refuse_links(path: &Path, below: bool) -> Result<(), String> {
    let kind = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta.file_type(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if kind.is_dir() && below {
        let entries = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
            refuse_links(&entry.path(), true)?;
        }
        Ok(())
    } else if kind.is_dir() || kind.is_file() {
        Ok(())
    } else {
        Err(not_plain(path).to_string())
    }
}

/// What a state holding anything but plain directories and files is told.
fn not_plain(path: &Path) -> std::io::Error {
    let what = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => "a symbolic link",
        _ => "not a plain file or directory",
    };
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "{}: {what}: the state holds only plain files and directories, and is never read or written through a link",
            path.display()
        ),
    )
}

fn read_into(
    root: &Path,
    dir: &Path,
    files: &mut BTreeMap<PathBuf, String>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let kind = std::fs::symlink_metadata(&path)?.file_type();
        if kind.is_dir() {
            read_into(root, &path, files)?;
        } else if kind.is_file() {
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            files.insert(relative, std::fs::read_to_string(&path)?);
        } else {
            return Err(not_plain(&path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> StateFiles {
        StateFiles {
            files: entries
                .iter()
                .map(|(p, c)| (PathBuf::from(p), c.to_string()))
                .collect(),
        }
    }

    fn rendered(api_version: &str, kind: &str, namespace: &str, name: &str) -> RenderedObject {
        RenderedObject {
            app: "app".into(),
            source: format!("shop/charts/app/templates/{name}.yaml"),
            value: serde_json::json!({
                "apiVersion": api_version, "kind": kind,
                "metadata": {"name": name, "namespace": namespace},
            }),
        }
    }

    #[test]
    fn file_names_grow_only_as_much_as_two_objects_need() {
        let objects = [
            rendered("v1", "Service", "a", "web"),
            rendered("v1", "Service", "b", "web"),
            rendered("serving.knative.dev/v1", "Service", "b", "web"),
            rendered("v1", "ConfigMap", "a", "web"),
        ];
        let state =
            StateFiles::from_objects(&objects, &ImagesLock::default(), |o, _| Ok(plain_file(o)))
                .unwrap();
        let names: Vec<String> = state
            .files
            .keys()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "app/configmap-web.yaml",
                "app/service-b-web.yaml",
                "app/service-web.yaml",
                "app/service.serving.knative.dev-b-web.yaml",
                IMAGES_LOCK_FILE,
            ]
        );
        let twice = [objects[1].clone(), objects[1].clone(), objects[1].clone()];
        let error =
            StateFiles::from_objects(&twice, &ImagesLock::default(), |o, _| Ok(plain_file(o)))
                .unwrap_err();
        assert!(error.contains("Service/web is rendered twice"), "{error}");
    }

    #[test]
    fn an_unchanged_file_is_linked_and_a_changed_one_written() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("umbrella-state/production");
        let inode = |file: &str| std::fs::metadata(dir.join(file)).unwrap().ino();
        files(&[("a/same.yaml", "1\n"), ("a/changed.yaml", "1\n")])
            .write(&dir)
            .unwrap();
        let (same, changed) = (inode("a/same.yaml"), inode("a/changed.yaml"));
        files(&[("a/same.yaml", "1\n"), ("a/changed.yaml", "2\n")])
            .write(&dir)
            .unwrap();
        assert_eq!(inode("a/same.yaml"), same);
        assert_ne!(inode("a/changed.yaml"), changed);
        assert_eq!(
            StateFiles::read(&dir).unwrap(),
            files(&[("a/same.yaml", "1\n"), ("a/changed.yaml", "2\n")])
        );
    }

    #[test]
    fn write_replaces_the_whole_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("umbrella-state/production");
        files(&[("a/x.yaml", "1\n"), ("gone.yaml", "old\n")])
            .write(&dir)
            .unwrap();
        files(&[("a/x.yaml", "2\n"), ("b/y.yaml", "3\n")])
            .write(&dir)
            .unwrap();
        let on_disk = StateFiles::read(&dir).unwrap();
        assert_eq!(on_disk, files(&[("a/x.yaml", "2\n"), ("b/y.yaml", "3\n")]));
        let leftovers: Vec<_> = std::fs::read_dir(root.path().join("umbrella-state"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("production")]);
    }

    #[test]
    fn diff_names_files_and_lines() {
        let before = files(&[("a/x.yaml", "k: 1\n"), ("gone.yaml", "g\n")]);
        let after = files(&[("a/x.yaml", "k: 2\n")]);
        let diff = after.diff_from(&before, 100).unwrap();
        assert!(
            diff.contains("--- a/a/x.yaml") && diff.contains("-k: 1") && diff.contains("+k: 2"),
            "{diff}"
        );
        assert!(diff.contains("a/gone.yaml"), "{diff}");
        assert_eq!(after.diff_from(&after, 100), None);
    }

    #[test]
    fn nothing_is_written_outside_and_leftovers_go() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("umbrella-state/production");
        let error = files(&[("a/../../../escaped.yaml", "x\n")])
            .write(&dir)
            .unwrap_err();
        assert!(error.to_string().contains("would not be below"), "{error}");
        assert!(!root.path().join("escaped.yaml").exists() && !dir.exists());
        let killed = root.path().join("umbrella-state/.production.new-abc123");
        std::fs::create_dir_all(killed.join("a")).unwrap();
        files(&[("a/x.yaml", "1\n")]).write(&dir).unwrap();
        assert!(!killed.exists(), "a killed render's directory stays");
    }

    #[test]
    fn a_symbolic_link_in_the_state_is_an_error_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("umbrella-state/production");
        files(&[("a/x.yaml", "1\n")]).write(&dir).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("b")).unwrap();
        let error = StateFiles::read(&dir).unwrap_err();
        assert!(error.to_string().contains("/b: a symbolic link"), "{error}");
        let error = files(&[("a/x.yaml", "2\n")]).write(&dir).unwrap_err();
        assert!(error.to_string().contains("/b: a symbolic link"), "{error}");
    }

    #[test]
    fn a_state_reached_through_a_link_is_neither_written_nor_read() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let state = root.path().join("umbrella-state");
        std::os::unix::fs::symlink(outside.path(), &state).unwrap();
        let error = files(&[("a/x.yaml", "1\n")])
            .write(&state.join("production"))
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("umbrella-state: a symbolic link"),
            "{error}"
        );
        std::fs::remove_file(&state).unwrap();
        std::fs::create_dir(&state).unwrap();
        let dir = state.join("production");
        std::os::unix::fs::symlink(outside.path(), &dir).unwrap();
        let error = files(&[("a/x.yaml", "1\n")]).write(&dir).unwrap_err();
        assert!(
            error.to_string().contains("production: a symbolic link"),
            "{error}"
        );
        let error = StateFiles::read(&dir).unwrap_err();
        assert!(
            error.to_string().contains("production: a symbolic link"),
            "{error}"
        );
        let written: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
        assert!(written.is_empty(), "written through a link: {written:?}");
    }

    #[test]
    fn a_secret_diff_shows_that_a_value_changed_never_the_value() {
        let secret = |value: &str| {
            format!(
                "# Source: shop/templates/s.yaml\napiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {value}\n"
            )
        };
        let before = files(&[("a/secret-db.yaml", &secret("old-hunter2"))]);
        let after = files(&[("a/secret-db.yaml", &secret("new-hunter3"))]);
        let diff = after.diff_from(&before, 100).unwrap();
        assert!(!diff.contains("hunter"), "{diff}");
        assert!(
            diff.contains("(value #1 masked)") && diff.contains("(value #2 masked)"),
            "{diff}"
        );
        let removed = files(&[]).diff_from(&before, 100).unwrap();
        assert!(!removed.contains("hunter"), "{removed}");
        assert!(
            removed.contains("-# Source: shop/templates/s.yaml"),
            "{removed}"
        );
    }
}
