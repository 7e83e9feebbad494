//! `umbrella build` against the real Docker engine and both local registries.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use umbrella::adapters::registry::Registry;

use common::{example_repository, fresh_example, testenv, unique};

/// Runs `umbrella build -o json` in `repo`; returns the exit code, the JSON report (if any) and
/// stderr.
fn build(repo: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_umbrella"))
        .args(["build", "--output", "json"])
        .args(args)
        .current_dir(repo)
        .envs(env.iter().copied())
        .output()
        .expect("run umbrella build");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (
        output.status.code().expect("exit code"),
        report,
        format!("{stdout}\n{stderr}"),
    )
}

fn outcomes(report: &Value) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = report["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no images in {report}"))
        .iter()
        .map(|i| {
            (
                i["image"].as_str().expect("image").to_string(),
                i["outcome"].as_str().expect("outcome").to_string(),
            )
        })
        .collect();
    list.sort();
    list
}

fn pair(image: &str, outcome: &str) -> (String, String) {
    (image.to_string(), outcome.to_string())
}

/// Adds `line` at the end of a file.
fn append(path: &Path, line: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    std::fs::write(path, format!("{text}{line}\n")).expect("write");
}

/// Writes `text` to `file` of the repository, then builds everything.
fn build_after_writing(repo: &Path, file: &str, text: &str) -> (i32, Value, String) {
    std::fs::write(repo.join(file), text).expect("write");
    build(repo, &[], &[])
}

fn lock_text(repo: &Path) -> String {
    std::fs::read_to_string(repo.join("umbrella-state/images.lock.yaml"))
        .expect("images lock written")
}

#[test]
fn builds_the_example_then_builds_nothing_then_only_what_changed() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let (repo, prefix) = fresh_example(&registry);

    let (code, report, text) = build(repo.path(), &[], &[]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        outcomes(&report),
        vec![
            pair("order-service", "built"),
            pair("user-service", "built")
        ]
    );
    let lock = lock_text(repo.path());
    assert!(
        lock.starts_with(
            "apiVersion: kbld.k14s.io/v1alpha1\nkind: Config\noverrides:\n- image: order-service\n"
        ),
        "{lock}"
    );
    assert!(
        lock.contains(&format!(
            "newImage: {registry}/{prefix}/order-service@sha256:"
        )),
        "{lock}"
    );
    assert!(
        lock.contains("preresolved: true") && lock.contains("path: services/order-service"),
        "{lock}"
    );
    assert!(lock.contains("contentKey:"), "{lock}");

    let (code, report, text) = build(repo.path(), &[], &[]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        outcomes(&report),
        vec![
            pair("order-service", "cached"),
            pair("user-service", "cached")
        ]
    );
    assert_eq!(
        lock_text(repo.path()),
        lock,
        "an unchanged build must write the same lock"
    );

    // README.md is excluded by the service's .dockerignore: not part of the content.
    let (_, report, _) =
        build_after_writing(repo.path(), "services/user-service/README.md", "changed\n");
    assert_eq!(
        outcomes(&report),
        vec![
            pair("order-service", "cached"),
            pair("user-service", "cached")
        ]
    );

    let (code, report, text) = build_after_writing(
        repo.path(),
        "services/user-service/www/index.html",
        "<p>new</p>\n",
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        outcomes(&report),
        vec![
            pair("order-service", "cached"),
            pair("user-service", "built")
        ]
    );
}

#[test]
fn reincluded_file_changes_the_key() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let (repo, _) = fresh_example(&registry);
    let service = repo.path().join("services/order-service");
    std::fs::write(service.join(".dockerignore"), "*.md\n!KEEP.md\n").expect("write");
    std::fs::write(service.join("KEEP.md"), "v1\n").expect("write");
    let (code, _, text) = build(repo.path(), &["--only", "order-service"], &[]);
    assert_eq!(code, 0, "{text}");
    std::fs::write(service.join("NOTES.md"), "ignored\n").expect("write");
    let (_, report, _) = build(repo.path(), &["--only", "order-service"], &[]);
    assert_eq!(outcomes(&report), vec![pair("order-service", "cached")]);
    std::fs::write(service.join("KEEP.md"), "v2\n").expect("write");
    let (_, report, _) = build(repo.path(), &["--only", "order-service"], &[]);
    assert_eq!(outcomes(&report), vec![pair("order-service", "built")]);
}

#[tokio::test]
async fn pushes_with_credentials_to_the_tls_registry_and_verifies_the_digest() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_B");
    let (repo, prefix) = fresh_example(&registry);
    let (code, report, text) = tokio::task::spawn_blocking({
        let dir = repo.path().to_path_buf();
        move || build(&dir, &[], &[])
    })
    .await
    .expect("build");
    assert_eq!(code, 0, "{text}");
    let image = &report["images"][0];
    let digest = image["digest"].as_str().expect("digest");
    let tag = image["tags"][0].as_str().expect("content tag");
    let credential = umbrella::adapters::credentials::credential_for(&registry)
        .expect("config")
        .expect("credential");
    let served = Registry::connect(&registry, Some(credential))
        .await
        .expect("connect")
        .manifest_digest(&format!("{prefix}/order-service"), tag)
        .await
        .expect("HEAD");
    assert_eq!(served.as_str(), digest);
}

#[test]
fn wrong_password_is_named_without_the_secret_and_writes_no_lock() {
    use base64::Engine;
    let registry = testenv("UMBRELLA_TEST_REGISTRY_B");
    let (repo, _) = fresh_example(&registry);
    let config = tempfile::tempdir().expect("temp dir");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:sup3r-wrong",
        testenv("UMBRELLA_TEST_REGISTRY_B_USER")
    ));
    std::fs::write(
        config.path().join("config.json"),
        serde_json::json!({"auths": {registry.clone(): {"auth": auth}}}).to_string(),
    )
    .expect("config.json");
    let certs = config.path().join("certs.d").join(&registry);
    std::fs::create_dir_all(&certs).expect("certs.d");
    std::fs::copy(testenv("UMBRELLA_TEST_CA"), certs.join("ca.crt")).expect("CA");
    let (code, _, text) = build(
        repo.path(),
        &[],
        &[("DOCKER_CONFIG", config.path().to_str().expect("utf-8"))],
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("registry {registry}: credentials were refused")),
        "{text}"
    );
    assert!(
        !text.contains("sup3r-wrong") && !text.contains(&auth),
        "{text}"
    );
    assert!(!repo.path().join("umbrella-state/images.lock.yaml").exists());
}

#[test]
fn a_failing_build_shows_its_log_lets_the_others_finish_and_writes_no_lock() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let (repo, _) = fresh_example(&registry);
    let dockerfile = repo.path().join("services/user-service/Dockerfile");
    append(&dockerfile, "RUN echo about to fail && exit 3");
    let (code, report, out) = build(repo.path(), &[], &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        outcomes(&report),
        vec![
            pair("order-service", "built"),
            pair("user-service", "failed")
        ]
    );
    let failed = report["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|i| i["image"] == "user-service")
        .expect("user-service");
    assert!(
        failed["error"]
            .as_str()
            .expect("error")
            .contains("returned a non-zero code: 3"),
        "{failed}"
    );
    let tail: Vec<&str> = failed["logTail"]
        .as_array()
        .expect("log tail")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(tail.iter().any(|l| l.contains("about to fail")), "{tail:?}");
    assert!(report["lock"].is_null());
    assert!(!repo.path().join("umbrella-state/images.lock.yaml").exists());
}

#[test]
fn bad_input_is_named_and_nothing_is_built() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let (repo, prefix) = fresh_example(&registry);
    std::fs::write(
        repo.path().join("sources.yaml"),
        format!(
            "apiVersion: kbld.k14s.io/v1alpha1\nkind: Config\nsources:\n- image: order-service\n  path: services/order-service\n  docker:\n    build:\n      rawOptions: [\"--squash\"]\n- image: missing\n  path: services/nope\n- image: nofile\n  path: services/user-service\n  docker:\n    build:\n      file: Dockerfile.missing\ndestinations:\n- image: order-service\n  newImage: {registry}/{prefix}/order-service\n- image: missing\n  newImage: {registry}/{prefix}/missing\n- image: nofile\n  newImage: {registry}/{prefix}/nofile\n"
        ),
    )
    .expect("write");
    let (code, _, text) = build(repo.path(), &[], &[]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(
            "source order-service: field `docker.build.rawOptions`: `--squash` is not supported"
        ),
        "{text}"
    );
    assert!(
        text.contains("source missing: field `path`: directory"),
        "{text}"
    );
    assert!(
        text.contains("source nofile: field `docker.build.file`"),
        "{text}"
    );
    assert!(text.contains("nothing was built"), "{text}");
    assert!(!repo.path().join("umbrella-state/images.lock.yaml").exists());

    let (code, _, text) = build_after_writing(
        repo.path(),
        "sources.yaml",
        "apiVersion: kbld.k14s.io/v1alpha1\nkind: Sources\nsources:\n- image: a\n  path: services/order-service\n  kubectlBuildkit: {build: {}}\n",
    );
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("sources.yaml:")
            && text.contains("builder `kubectlBuildkit` is not supported"),
        "{text}"
    );
}

#[tokio::test]
async fn every_supported_kbld_field_works() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let repo = example_repository();
    let prefix = unique("fields");
    let context = repo.path().join("services/multi");
    std::fs::create_dir_all(context.join("build")).expect("dir");
    std::fs::write(
        context.join("build/Dockerfile.multi"),
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE} AS base\nARG GREETING\nRUN echo \"$GREETING\" > /greeting\nFROM base AS runtime\nLABEL stage=runtime\nFROM base AS unused\nRUN exit 1\n",
    )
    .expect("Dockerfile");
    let base = testenv("UMBRELLA_TEST_BASE_IMAGE");
    std::fs::write(
        repo.path().join("sources.yaml"),
        format!(
            r#"#! every field umbrella supports, as kbld writes them
apiVersion: kbld.k14s.io/v1alpha1
kind: Config
minimumRequiredVersion: 0.30.0
sources:
- imageRepo: multi
  path: services/multi
  docker:
    build:
      file: build/Dockerfile.multi
      target: runtime
      pull: false
      noCache: true
      rawOptions: ["--build-arg", "BASE_IMAGE={base}", "--build-arg=GREETING=hello", "--platform", "linux/amd64", "--label", "team=shop"]
destinations:
- imageRepo: multi
  newImage: {registry}/{prefix}/multi
  tags: [latest, stable]
overrides:
- image: nginx
  newImage: nginx@sha256:{zeros}
  preresolved: true
keys: [sidecarImage]
searchRules:
- keyMatcher: {{name: sidecarImage}}
"#,
            zeros = "0".repeat(64)
        ),
    )
    .expect("write");
    let dir = repo.path().to_path_buf();
    let (code, report, text) = tokio::task::spawn_blocking(move || build(&dir, &[], &[]))
        .await
        .expect("build");
    assert_eq!(code, 0, "{text}");
    let digest = report["images"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let registry_client = Registry::connect(&registry, None).await.expect("connect");
    for tag in ["latest", "stable"] {
        let served = registry_client
            .manifest_digest(&format!("{prefix}/multi"), tag)
            .await
            .expect("extra tag pushed");
        assert_eq!(served.as_str(), digest, "tag {tag}");
    }
    let engine = umbrella::adapters::docker::Engine::connect()
        .await
        .expect("engine");
    let local = format!(
        "{registry}/{prefix}/multi:{}",
        report["images"][0]["tags"][0].as_str().expect("tag")
    );
    let inspect = engine
        .docker
        .inspect_image(&local)
        .await
        .expect("inspect the built image");
    let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(
        labels.get("team").map(String::as_str),
        Some("shop"),
        "--label"
    );
    assert_eq!(
        labels.get("stage").map(String::as_str),
        Some("runtime"),
        "target stage"
    );
    assert_eq!(inspect.architecture.as_deref(), Some("amd64"));
}

#[tokio::test]
async fn an_image_gone_from_the_engine_is_reused_from_the_registry() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let (repo, prefix) = fresh_example(&registry);
    let dir = repo.path().to_path_buf();
    let (code, first, text) = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || build(&dir, &["--only", "order-service"], &[])
    })
    .await
    .expect("build");
    assert_eq!(code, 0, "{text}");
    // Forget every local trace of the image, as a fresh Docker data root would have none.
    let engine = umbrella::adapters::docker::Engine::connect()
        .await
        .expect("engine");
    let local = format!(
        "{registry}/{prefix}/order-service:{}",
        first["images"][0]["tags"][0].as_str().expect("tag")
    );
    let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .force(true)
        .build();
    engine
        .docker
        .remove_image(&local, Some(options), None)
        .await
        .expect("remove the local image");

    let (code, second, text) =
        tokio::task::spawn_blocking(move || build(&dir, &["--only", "order-service"], &[]))
            .await
            .expect("build");
    assert_eq!(code, 0, "{text}");
    assert_eq!(outcomes(&second), vec![pair("order-service", "cached")]);
    assert_eq!(second["images"][0]["digest"], first["images"][0]["digest"]);
    assert!(
        engine.docker.inspect_image(&local).await.is_err(),
        "a cached image must not be rebuilt locally"
    );
}

#[test]
fn ctrl_c_stops_the_builds_and_writes_nothing() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let (repo, _) = fresh_example(&registry);
    let dockerfile = repo.path().join("services/order-service/Dockerfile");
    append(&dockerfile, "RUN echo slow-step-started && sleep 30");
    let mut child = Command::new(env!("CARGO_BIN_EXE_umbrella"))
        .args(["build", "--output", "json"])
        .current_dir(repo.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start umbrella build");
    let started = std::time::Instant::now();
    let stderr = child.stderr.take().expect("stderr");
    // Interrupt once the slow step is running, so there is a build to stop.
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.expect("stderr line");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("slow-step-started") {
            break;
        }
    }
    let rest =
        std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("wait");
    let seen = format!("{seen}{}", rest.join().expect("stderr reader"));
    assert_eq!(output.status.code(), Some(130), "{seen}");
    assert!(seen.contains("interrupted"), "{seen}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "the build was not stopped"
    );
    assert!(!repo.path().join("umbrella-state/images.lock.yaml").exists());
}

/// Builds `FROM base RUN echo nonce` locally as `tag` (a base image of the test's own).
async fn build_base(tag: &str, nonce: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {}\nRUN echo {nonce} > /base-version\n",
            testenv("UMBRELLA_TEST_BASE_IMAGE")
        ),
    )
    .expect("Dockerfile");
    let context =
        umbrella::stages::build::context::pack(dir.path(), "Dockerfile", None).expect("context");
    let engine = umbrella::adapters::docker::Engine::connect()
        .await
        .expect("engine");
    engine
        .build(context.tar, "Dockerfile", tag, &Default::default(), |_| {})
        .await
        .expect("build the base image");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_base_image_is_a_new_input() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let (repo, _) = fresh_example(&registry);
    let base = format!("umbrella.local/{}:1", unique("base"));
    build_base(&base, "one").await;
    let dockerfile = repo.path().join("services/order-service/Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).expect("read");
    std::fs::write(
        &dockerfile,
        text.replace(
            "ARG BASE_IMAGE=umbrella.local/busybox:1.35",
            &format!("ARG BASE_IMAGE={base}"),
        ),
    )
    .expect("write");
    let dir = repo.path().to_path_buf();
    let build_order = || {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || build(&dir, &["--only", "order-service"], &[]))
    };
    let (code, report, text) = build_order().await.expect("build");
    assert_eq!(code, 0, "{text}");
    assert_eq!(outcomes(&report), vec![pair("order-service", "built")]);
    let (_, report, _) = build_order().await.expect("build");
    assert_eq!(outcomes(&report), vec![pair("order-service", "cached")]);
    build_base(&base, "two").await;
    let (code, report, text) = build_order().await.expect("build");
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        outcomes(&report),
        vec![pair("order-service", "built")],
        "the same context on a new base image must be built again"
    );
}

#[test]
fn buildkit_builds_when_the_source_asks_for_it() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let (repo, _) = fresh_example(&registry);
    let sources = std::fs::read_to_string(repo.path().join("sources.yaml")).expect("read");
    let sources = sources.replacen(
        "    path: services/order-service\n",
        "    path: services/order-service\n    docker:\n      build:\n        buildkit: true\n",
        1,
    );
    std::fs::write(repo.path().join("sources.yaml"), sources).expect("write");
    let (code, report, text) = build(repo.path(), &["--only", "order-service"], &[]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(outcomes(&report), vec![pair("order-service", "built")]);
    assert!(text.contains("building with BuildKit"), "{text}");

    let dockerfile = repo.path().join("services/order-service/Dockerfile");
    append(&dockerfile, "RUN exit 7");
    let (code, report, text) = build(repo.path(), &["--only", "order-service"], &[]);
    assert_eq!(code, 1, "{text}");
    let error = report["images"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("exit code: 7") || error.contains("exit 7"),
        "{error}"
    );
}

#[test]
fn a_registry_that_resets_at_first_is_retried_and_the_retry_reported() {
    let proxy = common::proxy::FaultProxy::start(&testenv("UMBRELLA_TEST_REGISTRY_A"));
    proxy.refuse();
    let (repo, _) = fresh_example(&proxy.address());
    let (code, report, out) = std::thread::scope(|scope| {
        let building = scope.spawn(|| build(repo.path(), &[], &[]));
        while proxy.connections() == 0 && !building.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        proxy.resume();
        building.join().expect("the build")
    });
    assert_eq!(code, 0, "{out}");
    let retries = report["retries"].as_array().cloned().unwrap_or_default();
    assert!(
        retries.iter().any(|r| r["what"]
            .as_str()
            .unwrap_or_default()
            .contains(&proxy.address())),
        "{report}"
    );
}
