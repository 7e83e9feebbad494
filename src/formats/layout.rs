//! Where things live in a umbrella repository: `sources.yaml`, the umbrella chart, and the
//! state of each environment, `umbrella-state/<env>/<app dir>/` with its images lock. Every
//! path of the state is built here, and app names (`<env>-<dir>`, kapp's convention) too.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use super::names;

/// The environments' settings, at the repository root.
pub const CONFIG_FILE: &str = "umbrella.yaml";
/// kbld's configuration of the images to build, at the repository root.
pub const SOURCES_FILE: &str = "sources.yaml";
/// The umbrella chart, relative to the repository root.
pub const CHART_DIR: &str = "umbrella-chart";
/// The directory of every environment's state, relative to the repository root.
pub const STATE_DIR: &str = "umbrella-state";
/// The images lock of an environment's state, beside its app directories.
pub const IMAGES_LOCK_FILE: &str = "images.lock.yaml";
/// What an environment's cluster offered charts when it was last seen (`.Capabilities`), beside
/// its app directories.
pub const CAPABILITIES_FILE: &str = "capabilities.yaml";
/// Where the build stage writes its images lock unless told otherwise.
pub const DEFAULT_BUILD_LOCK: &str = "umbrella-state/images.lock.yaml";

/// An environment's name: a DNS label, since it names namespaces, Leases and the state's
/// directory (`--env ../x` must never leave `umbrella-state/`).
pub fn parse_env(env: &str) -> Result<String, String> {
    names::dns_label(env).map_err(|e| format!("environment {e}"))?;
    Ok(env.to_string())
}

/// Whether `relative` stays below the directory it is joined to: plain names only, no `..`,
/// no root, nothing empty.
pub fn stays_below(relative: &Path) -> bool {
    relative.components().count() > 0
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Refuses a symbolic link on the way from `root` to `root/relative` (the root itself is the
/// user's choice): the state is never read or written through one, which could lead anywhere.
/// The way ends where nothing exists yet.
pub fn no_link_on_the_way(root: &Path, relative: &Path) -> Result<(), String> {
    let mut path = root.to_path_buf();
    for component in relative.components() {
        path.push(component);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "{}: a symbolic link: the state is never read or written through one",
                    path.display()
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Ok(())
}

/// [`no_link_on_the_way`] to an environment's state: neither `umbrella-state` nor
/// `umbrella-state/<env>` may be a symbolic link.
pub fn no_link_to_env(root: &Path, env: &str) -> Result<(), String> {
    no_link_on_the_way(root, Path::new(&env_path(env)))
}

/// `umbrella-state/<env>`, relative to the repository root (as git names paths).
pub fn env_path(env: &str) -> String {
    format!("{STATE_DIR}/{env}")
}

/// `umbrella-state/<env>` under the repository root.
pub fn env_dir(root: &Path, env: &str) -> PathBuf {
    root.join(STATE_DIR).join(env)
}

/// The images lock of an environment's state.
pub fn env_lock(root: &Path, env: &str) -> PathBuf {
    env_dir(root, env).join(IMAGES_LOCK_FILE)
}

/// One app of an environment: a directory of its state, deployed as `<env>-<dir>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppId {
    env: String,
    dir: String,
}

impl AppId {
    /// The app of `env` in directory `dir`, once `dir` is known to be a DNS label short enough
    /// for the app's name (`<env>-<dir>`, a label value) to stay within 63 characters.
    pub fn checked(env: &str, dir: &str) -> Result<Self, String> {
        names::dns_label(dir).map_err(|e| format!("app directory {e}"))?;
        let app = AppId::new(env, dir);
        let name = app.to_string();
        if name.len() > 63 {
            return Err(format!(
                "app directory `{dir}`: the app's name `{name}` is longer than 63 characters"
            ));
        }
        Ok(app)
    }

    pub fn new(env: &str, dir: &str) -> Self {
        AppId {
            env: env.to_string(),
            dir: dir.to_string(),
        }
    }

    /// The app of `env` that the name `<env>-<dir>` stands for.
    pub fn from_name(env: &str, name: &str) -> Option<Self> {
        let dir = name.strip_prefix(env)?.strip_prefix('-')?;
        (!dir.is_empty()).then(|| AppId::new(env, dir))
    }

    pub fn env(&self) -> &str {
        &self.env
    }

    /// The app's directory under `umbrella-state/<env>/`.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// `umbrella-state/<env>/<dir>`, relative to the repository root.
    pub fn path(&self) -> String {
        format!("{}/{}", env_path(&self.env), self.dir)
    }
}

impl fmt::Display for AppId {
    /// The app's name in the cluster, `<env>-<dir>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.env, self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_are_env_dash_dir() {
        let app = AppId::new("production", "order-service");
        assert_eq!(app.to_string(), "production-order-service");
        assert_eq!(app.path(), "umbrella-state/production/order-service");
        assert_eq!(
            AppId::from_name("production", "production-order-service"),
            Some(app)
        );
        assert_eq!(AppId::from_name("production", "staging-web"), None);
        assert_eq!(AppId::from_name("production", "production-"), None);
        assert!(AppId::checked("production", "my_app").is_err());
        assert!(AppId::checked("production", &"a".repeat(53)).is_err());
        assert!(AppId::checked("production", &"a".repeat(52)).is_ok());
        assert!(parse_env("../x").is_err() && parse_env("Rel_5_19").is_err());
        assert!(stays_below(Path::new("a/b.yaml")));
        for bad in ["", "../x", "a/../../b", "/etc/x"] {
            assert!(!stays_below(Path::new(bad)), "{bad}");
        }
        assert_eq!(
            env_lock(Path::new("/r"), "dev"),
            Path::new("/r/umbrella-state/dev/images.lock.yaml")
        );
    }

    #[test]
    fn a_symbolic_link_on_the_way_to_the_state_is_refused() {
        let root = tempfile::tempdir().expect("temp dir");
        let outside = tempfile::tempdir().expect("temp dir");
        assert_eq!(no_link_to_env(root.path(), "dev"), Ok(()));
        std::os::unix::fs::symlink(outside.path(), root.path().join(STATE_DIR)).expect("link");
        let error = no_link_to_env(root.path(), "dev").expect_err("a link");
        assert!(error.contains("umbrella-state: a symbolic link"), "{error}");
        std::fs::remove_file(root.path().join(STATE_DIR)).expect("unlink");
        std::fs::create_dir(root.path().join(STATE_DIR)).expect("state dir");
        std::os::unix::fs::symlink(outside.path(), env_dir(root.path(), "dev")).expect("link");
        let error = no_link_to_env(root.path(), "dev").expect_err("a link");
        assert!(
            error.contains("umbrella-state/dev: a symbolic link"),
            "{error}"
        );
    }
}
