//! Shared helpers of the integration tests. They run against the real local environment
//! (`scripts/testenv up`); a missing component fails the test with a message, never skips it.
#![allow(dead_code)] // each test binary uses its own subset

pub mod delay;
pub mod group;
pub mod http_faults;
pub mod proxy;
pub mod token_registry;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A variable exported by `scripts/testenv env`.
pub fn testenv(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the local environment with `scripts/testenv up` and load it with `eval \"$(scripts/testenv env)\"` (or run `make test`)")
    })
}

/// The repository root: the example chart and sources live there.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A short name unique to this run, for namespaces, repositories and tags.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{prefix}-{}-{:x}", std::process::id(), nanos % 0xffff_ffff)
}

/// Writes a file (and the directories on its way) for a test.
pub fn write_file(path: impl AsRef<Path>, text: impl AsRef<[u8]>) {
    let path = path.as_ref();
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create dirs");
    std::fs::write(path, text).expect("write file");
}

/// A git repository whose umbrella chart `shop` renders `templates` (name, text) as its own
/// app.
pub fn chart_repository(templates: &[(&str, &str)]) -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("temp dir");
    let chart = repo.path().join("umbrella-chart");
    write_file(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: shop\nversion: 0.1.0\n",
    );
    write_file(chart.join("values.yaml"), "{}\n");
    for (name, text) in templates {
        write_file(chart.join("templates").join(name), text);
    }
    git2::Repository::init(repo.path()).expect("git init");
    repo
}

/// Copies a directory tree (files and directories only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// A fresh git repository holding a copy of the example (chart, sources, services).
pub fn example_repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for part in ["umbrella-chart", "services", "umbrella-state", "demo-keys"] {
        copy_tree(&repo_root().join(part), &dir.path().join(part));
    }
    for file in ["sources.yaml", ".sops.yaml"] {
        std::fs::copy(repo_root().join(file), dir.path().join(file))
            .unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
    git2::Repository::init(dir.path()).expect("git init");
    dir
}

/// Commits everything in the work tree of `dir` (a test author, whatever git's configuration).
pub fn commit_all(dir: &Path, message: &str) -> String {
    umbrella::adapters::git::commit_paths(
        dir,
        &["*"],
        message,
        Some("umbrella tests <tests@umbrella.invalid>"),
    )
    .expect("commit")
    .expect("a change to commit")
}

/// The example's demo-only age key (what `make demo` decrypts its Secrets with).
pub fn demo_key_file() -> PathBuf {
    repo_root().join("demo-keys/age.txt")
}

/// The umbrella binary with the example's demo key as its only age key: the tester's own
/// keys (`SOPS_AGE_KEY`, `~/.config/sops/age/keys.txt`) never count. A test takes the key
/// away with `SOPS_AGE_KEY_FILE` set to a file that does not exist.
pub fn umbrella_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_umbrella"));
    command
        .env("SOPS_AGE_KEY_FILE", demo_key_file())
        .env_remove("SOPS_AGE_KEY")
        .env("XDG_CONFIG_HOME", "/nonexistent/umbrella-tests");
    command
}

/// Runs the umbrella binary in `dir`; returns the exit code, stdout and stderr.
pub fn umbrella(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = umbrella_command()
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .expect("run umbrella");
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The example repository with its images pushed to a repository path of its own, so a test
/// starts from images that were never built; returns the repository and that path prefix.
pub fn fresh_example(registry: &str) -> (tempfile::TempDir, String) {
    let repo = example_repository();
    let prefix = unique("t");
    let sources = std::fs::read_to_string(repo.path().join("sources.yaml")).expect("read");
    let sources = sources.replace("127.0.0.1:5000/umbrella/", &format!("{registry}/{prefix}/"));
    std::fs::write(repo.path().join("sources.yaml"), sources).expect("write");
    (repo, prefix)
}

/// The test cluster's kubeconfig with its server behind `proxy`, written under `dir`.
pub fn kubeconfig_via(proxy: &proxy::FaultProxy, dir: &Path) -> PathBuf {
    proxy::kubeconfig_via(&proxy.address(), Path::new(&testenv("KUBECONFIG")), dir)
}

/// The test cluster's API server, `host:port`.
pub fn api_server() -> String {
    proxy::server_of(Path::new(&testenv("KUBECONFIG")))
}

/// A TCP proxy that slows every byte (see [`latency::SlowProxy`]).
pub mod latency;
