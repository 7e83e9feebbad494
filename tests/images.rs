//! `umbrella images update` against the real registries: registry A (plain HTTP, which lists
//! every tag at once) and registry C (bearer tokens per repository, and tag lists paged with
//! `n` and `Link`), in a real git repository.

mod common;

use std::path::Path;

use common::token_registry::{TokenRegistry, seed_plain, seed_tls_basic};
use common::{commit_all, testenv, umbrella, unique};
use serde_json::Value;

const HEAD: &str = "apiVersion: umbrella.dev/v1alpha1\nkind: ImagePolicies\npolicies:\n";

/// A repository with `umbrella-chart/` files, committed.
fn git_repository(files: &[(&str, String)]) -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("temp dir");
    git2::Repository::init(repo.path()).expect("git init");
    for (path, text) in files {
        let file = repo.path().join("umbrella-chart").join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("dir");
        std::fs::write(file, text).expect("write");
    }
    commit_all(repo.path(), "sources");
    repo
}

fn read(repo: &Path, file: &str) -> String {
    std::fs::read_to_string(repo.join("umbrella-chart").join(file)).expect("read values")
}

fn head(repo: &Path) -> (String, String) {
    let git = git2::Repository::open(repo).expect("open");
    let commit = git.head().expect("HEAD").peel_to_commit().expect("commit");
    (
        commit.id().to_string(),
        commit.message().unwrap_or_default().to_string(),
    )
}

fn update(repo: &Path, env: &str, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["images", "update", "--env", env, "-o", "json"];
    args.extend(extra);
    let (code, out, err) = umbrella(repo, &args, &[]);
    (code, serde_json::from_str(&out).unwrap_or(Value::Null), err)
}

/// (old, new, why unchanged) of every move.
fn moves(report: &Value) -> Vec<(String, String, String)> {
    report["moves"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|m| {
            let text = |key: &str| m[key].as_str().unwrap_or_default().to_string();
            (text("old"), text("new"), text("unchanged"))
        })
        .collect()
}

#[test]
fn each_environment_follows_its_policy_rewritten_in_place_and_committed_with_trailers() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let image = format!("{registry}/{}/order-service", unique("upd"));
    let repository = image.split_once('/').expect("host").1;
    let tags: Vec<String> = [
        "0.4.9",
        "0.4.10",
        "v0.4.2",
        "0.5.0",
        "0.4.11-rc.1",
        "12345",
        "stg-99",
        "stg-100",
        "stg-1000",
        "dev-5000",
        "latest",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    seed_plain(&registry, repository, &tags);
    let policies = format!(
        "{HEAD}- name: order-service-staging\n  image: {image}\n  filterTags:\n    pattern: '^stg-(?P<ts>[0-9]+)$'\n    extract: '$ts'\n  policy:\n    numerical: {{order: asc}}\n- name: order-service-release\n  image: {image}\n  policy:\n    semver: {{range: '~0.4'}}\n"
    );
    let staging = "# Staging follows every stg-* build.\norder-service:\n  tag: stg-99 # {\"$imagepolicy\": \"order-service-staging:tag\"}\n".to_string();
    let production = format!(
        "# Production: reviewed by the release team.\norder-service:\n  # the tag, and the whole reference for the sidecar\n  tag: '0.4.9'   # {{\"$imagepolicy\": \"order-service-release:tag\"}}\n  sidecar:    \"{image}:0.4.9\" #{{\"$imagepolicy\":\"order-service-release\"}}\n  replicas: 3 # three\nlist:\n  - \"unrelated\"  # a comment\n"
    );
    let repo = git_repository(&[
        ("image-policies.yaml", policies),
        ("values-staging.yaml", staging.clone()),
        ("values-production.yaml", production.clone()),
    ]);
    let (first, _) = head(repo.path());

    let (code, report, err) = update(repo.path(), "staging", &["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        moves(&report),
        [("stg-99".into(), "stg-1000".into(), String::new())]
    );
    assert_eq!(
        read(repo.path(), "values-staging.yaml"),
        staging,
        "a dry run wrote"
    );
    assert_eq!(head(repo.path()).0, first, "a dry run committed");

    let (code, _, err) = update(repo.path(), "staging", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        read(repo.path(), "values-staging.yaml"),
        staging.replace("stg-99 #", "stg-1000 #")
    );
    assert_eq!(read(repo.path(), "values-production.yaml"), production);
    let (staged, message) = head(repo.path());
    assert_eq!(
        message,
        format!(
            "umbrella: update images for staging\n\nImage-Update: {image} stg-99 -> stg-1000\n"
        )
    );

    let (code, report, err) = update(repo.path(), "production", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(moves(&report).len(), 2, "{report}");
    // Every byte but the two tags is as it was: quoting, comments, spacing, order.
    assert_eq!(
        read(repo.path(), "values-production.yaml"),
        production
            .replace("'0.4.9'", "'0.4.10'")
            .replace(":0.4.9\"", ":0.4.10\"")
    );
    let (released, message) = head(repo.path());
    assert_ne!(released, staged);
    assert!(
        message.starts_with("umbrella: update images for production\n\n")
            && message.contains(&format!("Image-Update: {image} 0.4.9 -> 0.4.10")),
        "{message}"
    );

    // Nothing to move: no commit.
    let (code, report, err) = update(repo.path(), "production", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        moves(&report)
            .iter()
            .all(|(_, new, why)| new.is_empty() && why == "up to date")
    );
    assert_eq!(head(repo.path()).0, released);

    // A tag ahead of every candidate stays, unless a downgrade is allowed.
    let ahead = read(repo.path(), "values-production.yaml").replace("'0.4.10'", "'0.5.0'");
    std::fs::write(
        repo.path().join("umbrella-chart/values-production.yaml"),
        &ahead,
    )
    .expect("write");
    commit_all(repo.path(), "production runs 0.5.0 for now");
    let (code, report, err) = update(
        repo.path(),
        "production",
        &["--policy", "order-service-release"],
    );
    assert_eq!(code, 0, "{err}");
    let kept = moves(&report);
    assert!(
        kept.iter().any(|(old, new, why)| old == "0.5.0"
            && new.is_empty()
            && why.contains("newer than every candidate")),
        "{kept:?}"
    );
    assert_eq!(read(repo.path(), "values-production.yaml"), ahead);
    let (code, _, err) = update(repo.path(), "production", &["--allow-downgrade"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        read(repo.path(), "values-production.yaml"),
        ahead.replace("'0.5.0'", "'0.4.10'")
    );
}

#[test]
fn tags_past_a_thousand_are_read_page_by_page_from_a_token_registry() {
    let registry = TokenRegistry::from_env();
    let repository = format!("{}/app", unique("paged"));
    let tags: Vec<String> = (0..1200).map(|i| format!("build-{i:04}")).collect();
    registry.seed(std::slice::from_ref(&repository), &tags);
    let image = format!("{}/{repository}", registry.host);
    let policies = format!(
        "{HEAD}- name: builds\n  image: {image}\n  filterTags:\n    pattern: '^build-(?P<n>[0-9]+)$'\n    extract: '$n'\n  policy:\n    numerical: {{}}\n- name: earliest\n  image: {image}\n  policy:\n    alphabetical: {{order: desc}}\n"
    );
    let values = format!(
        "app:\n  image: {image}:build-0007 # {{\"$imagepolicy\": \"builds\"}}\n  first: build-0100 # {{\"$imagepolicy\": \"earliest:tag\"}}\n"
    );
    let repo = git_repository(&[("image-policies.yaml", policies), ("values.yaml", values)]);
    let (code, report, err) = update(repo.path(), "dev", &["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    // build-1199 comes last in the registry's (lexical) order: on the second page of 1,000.
    assert_eq!(
        moves(&report),
        [
            ("build-0007".into(), "build-1199".into(), String::new()),
            ("build-0100".into(), "build-0000".into(), String::new()),
        ]
    );
}

#[test]
fn bad_policies_bad_markers_and_an_unreachable_registry_write_nothing() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let image = format!("{registry}/{}/app", unique("bad"));
    let good = format!(
        "{HEAD}- name: release\n  image: {image}\n  policy:\n    semver: {{range: '^1'}}\n"
    );
    let values = "app:\n  tag: 1.0.0 # {\"$imagepolicy\": \"release:tag\"}\n".to_string();

    let bad_regex = format!(
        "{good}- name: broken\n  image: {image}\n  filterTags:\n    pattern: '(['\n  policy:\n    numerical: {{}}\n"
    );
    let repo = git_repository(&[
        ("image-policies.yaml", bad_regex),
        ("values.yaml", values.clone()),
    ]);
    let (code, _, err) = update(repo.path(), "dev", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("image-policies.yaml:8")
            && err.contains("policies[1] (broken): filterTags.pattern"),
        "{err}"
    );

    let unknown = format!("{values}other: x # {{\"$imagepolicy\": \"nope:tag\"}}\n");
    let repo = git_repository(&[
        ("image-policies.yaml", good.clone()),
        ("values.yaml", unknown.clone()),
    ]);
    let (code, _, err) = update(repo.path(), "dev", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("values.yaml:3: the marker names policy 'nope'"),
        "{err}"
    );
    assert_eq!(read(repo.path(), "values.yaml"), unknown);

    // A comment naming the marker key that is not a marker (its closing brace missing).
    let malformed = format!("{values}other: x # {{\"$imagepolicy\": \"release:tag\"\n");
    let repo = git_repository(&[
        ("image-policies.yaml", good.clone()),
        ("values.yaml", malformed.clone()),
    ]);
    let (before, _) = head(repo.path());
    let (code, _, err) = update(repo.path(), "dev", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("values.yaml:3: the comment `# {\"$imagepolicy\": \"release:tag\"`")
            && err.contains("not valid marker JSON"),
        "{err}"
    );
    assert_eq!(read(repo.path(), "values.yaml"), malformed);
    assert_eq!(head(repo.path()).0, before);

    let unreachable = good.replace(&registry, "127.0.0.1:9");
    let values = values.clone();
    let repo = git_repository(&[
        ("image-policies.yaml", unreachable),
        ("values.yaml", values.clone()),
    ]);
    let (before, _) = head(repo.path());
    let (code, _, err) = update(repo.path(), "dev", &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("127.0.0.1:9"), "{err}");
    assert_eq!(read(repo.path(), "values.yaml"), values);
    assert_eq!(head(repo.path()).0, before);
}

/// `git status --porcelain`: empty when nothing is staged, changed or untracked.
fn porcelain(repo: &Path) -> String {
    let output = std::process::Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(repo)
        .output()
        .expect("git status");
    assert!(output.status.success(), "git status failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_commit_that_fails_leaves_the_values_files_and_the_index_as_they_were() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let image = format!("{registry}/{}/app", unique("fail"));
    let repository = image.split_once('/').expect("host").1;
    seed_plain(&registry, repository, &["1.0.0".into(), "1.1.0".into()]);
    let policies = format!(
        "{HEAD}- name: release\n  image: {image}\n  policy:\n    semver: {{range: '^1'}}\n"
    );
    let values = "app:\n  tag: 1.0.0 # {\"$imagepolicy\": \"release:tag\"}\n".to_string();
    let repo = git_repository(&[
        ("image-policies.yaml", policies),
        ("values.yaml", values.clone()),
    ]);
    let (before, _) = head(repo.path());
    let index = repo.path().join(".git/index");
    let read_index = || std::fs::read(&index).expect("read the index");
    // Byte for byte; read again before each run, as `git status` refreshes the index.
    let nothing_written = |what: &str, index_before: Vec<u8>| {
        assert_eq!(
            read(repo.path(), "values.yaml"),
            values,
            "{what}: the values file changed"
        );
        assert_eq!(head(repo.path()).0, before, "{what}: committed");
        assert!(read_index() == index_before, "{what}: the index changed");
        assert_eq!(
            porcelain(repo.path()),
            "",
            "{what}: something is staged or changed"
        );
    };

    // An author umbrella reads as `Name <email>` but git refuses (an angle bracket in the email).
    let index_before = read_index();
    let (code, _, err) = update(repo.path(), "dev", &["--author", "Ann <ann>@example.com>"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("angle brackets"), "{err}");
    nothing_written("a bad author", index_before);

    // HEAD's branch locked, as by a git command under way: the commit fails after staging.
    let branch = git2::Repository::open(repo.path())
        .expect("open")
        .head()
        .expect("HEAD")
        .name()
        .expect("a branch")
        .to_string();
    let lock = repo.path().join(".git").join(format!("{branch}.lock"));
    std::fs::write(&lock, "").expect("lock the branch");
    let index_before = read_index();
    let (code, _, err) = update(repo.path(), "dev", &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("committing the update"), "{err}");
    nothing_written("a locked branch", index_before);

    std::fs::remove_file(&lock).expect("unlock the branch");
    let (code, _, err) = update(repo.path(), "dev", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        read(repo.path(), "values.yaml"),
        values.replace("1.0.0 #", "1.1.0 #")
    );
    assert_ne!(head(repo.path()).0, before);
    assert_eq!(porcelain(repo.path()), "");
}

#[test]
fn ci_with_update_images_commits_the_update_then_the_release_it_renders() {
    let (repo, _) = common::fresh_example(&testenv("UMBRELLA_TEST_REGISTRY_A"));
    commit_all(repo.path(), "sources");
    let (code, out, err) = umbrella(
        repo.path(),
        &["ci", "--env", "production", "--update-images", "-o", "json"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    // The example's production follows ~1.35: the seeded 1.35.0, or a newer 1.35.x.
    let values = read(repo.path(), "values-production.yaml");
    let moved = values
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("image: 127.0.0.1:5000/mirror/busybox:")
        })
        .and_then(|rest| rest.split_once(' '))
        .map(|(tag, _)| tag.to_string())
        .expect("the log shipper's image");
    assert!(moved.starts_with("1.35."), "{values}\n{out}");
    let git = git2::Repository::open(repo.path()).expect("open");
    let release = git.head().expect("HEAD").peel_to_commit().expect("commit");
    let update = release.parent(0).expect("the update commit");
    assert!(
        release
            .message()
            .unwrap_or_default()
            .starts_with("umbrella: render production at "),
        "{:?}",
        release.message()
    );
    assert_eq!(
        update.message().unwrap_or_default(),
        format!(
            "umbrella: update images for production\n\nImage-Update: 127.0.0.1:5000/mirror/busybox 1.35 -> {moved}\n"
        )
    );
    assert!(
        release
            .message()
            .unwrap_or_default()
            .contains(&format!("Source-Commit: {}", update.id())),
        "the release does not name the update as its source"
    );
}

#[test]
fn a_tls_registry_with_basic_auth_is_read_with_the_docker_config_s_ca_and_credentials() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_B");
    let repository = format!("{}/app", unique("tls"));
    let tags: Vec<String> = ["2.0.0", "2.1.0", "2.1.1-beta.1", "v2.0.5", "3.0.0"]
        .iter()
        .map(|t| t.to_string())
        .collect();
    seed_tls_basic(&registry, &repository, &tags);
    let image = format!("{registry}/{repository}");
    let policies = format!(
        "{HEAD}- name: two\n  image: {image}\n  policy:\n    semver: {{range: '^2'}}\n- name: beta\n  image: {image}\n  policy:\n    semver: {{range: '>=2.1.1-beta.0 <3'}}\n"
    );
    let values =
        "a: 2.0.0 # {\"$imagepolicy\": \"two:tag\"}\nb: 2.0.0 # {\"$imagepolicy\": \"beta:tag\"}\n"
            .to_string();
    let repo = git_repository(&[("image-policies.yaml", policies), ("values.yaml", values)]);
    let (code, report, err) = update(repo.path(), "dev", &["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    // A pre-release is a candidate only where the range names one.
    assert_eq!(
        moves(&report),
        [
            ("2.0.0".into(), "2.1.0".into(), String::new()),
            ("2.0.0".into(), "2.1.1-beta.1".into(), String::new()),
        ]
    );
}
