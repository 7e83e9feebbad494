//! `umbrella render`, `commit` and `ci` against real helm, the local registries and git.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use umbrella::adapters::registry::Registry;
use umbrella::formats::image_ref::Digest;
use umbrella::stages::render::state_dir::StateFiles;

use common::{commit_all, copy_tree, fresh_example, repo_root, testenv, umbrella, unique};

fn state(dir: &Path, env: &str) -> StateFiles {
    StateFiles::read(&dir.join("umbrella-state").join(env)).expect("read state")
}

/// The digest registry A serves for the environment's third-party image.
async fn third_party_digest() -> String {
    let registry = Registry::connect(&testenv("UMBRELLA_TEST_REGISTRY_A"), None)
        .await
        .expect("registry A");
    registry
        .manifest_digest("mirror/busybox", "1.35")
        .await
        .expect("the seeded third-party image")
        .to_string()
}

#[test]
fn ci_builds_renders_and_commits_the_example() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let (repo, prefix) = fresh_example(&registry);
    let source = commit_all(repo.path(), "sources");

    let (code, out, err) = umbrella(repo.path(), &["ci", "--env", "production"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let files = state(repo.path(), "production");
    let names: Vec<String> = files
        .files
        .keys()
        .map(|p| p.display().to_string())
        .collect();
    for expected in [
        "images.lock.yaml",
        "order-service/deployment-order-service.yaml",
        "order-service/service-order-service.yaml",
        "order-service/configmap-order-service.yaml",
        "order-service/serviceaccount-order-service.yaml",
        "user-service/deployment-user-service.yaml",
        "shop/configmap-shop-platform.yaml",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} missing from {names:?}"
        );
    }
    for (path, text) in &files.files {
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("image:"))
        {
            assert!(
                line.contains("@sha256:"),
                "{}: unpinned {line}",
                path.display()
            );
        }
    }
    let deployment = &files.files[Path::new("order-service/deployment-order-service.yaml")];
    assert!(
        deployment.contains(&format!("image: {registry}/{prefix}/order-service@sha256:")),
        "{deployment}"
    );
    assert!(
        deployment.contains("  namespace: production\n"),
        "{deployment}"
    );
    assert!(
        deployment.contains("umbrella.dev/images: |"),
        "{deployment}"
    );
    let lock = &files.files[Path::new("images.lock.yaml")];
    assert!(
        lock.contains("- image: 127.0.0.1:5000/mirror/busybox:1.35") && lock.contains("resolved:"),
        "{lock}"
    );
    assert!(
        lock.contains("- image: order-service") && lock.contains("path: services/order-service"),
        "{lock}"
    );

    let repository = git2::Repository::open(repo.path()).expect("open");
    let head = repository
        .head()
        .expect("head")
        .peel_to_commit()
        .expect("commit");
    let message = head.message().expect("message");
    assert!(
        message.starts_with(&format!("umbrella: render production at {}", &source[..12])),
        "{message}"
    );
    assert!(
        message.contains(&format!("Source-Commit: {source}"))
            && message.contains("Environment: production"),
        "{message}"
    );
    // Every pinned image: the two built and the third-party one (#13: history shows both).
    assert_eq!(message.matches("\nImage: ").count(), 3, "{message}");
    assert!(message.contains("/mirror/busybox@sha256:"), "{message}");
    assert_eq!(head.parent_id(0).expect("parent").to_string(), source);
    let changed: Vec<String> = {
        let diff = repository
            .diff_tree_to_tree(
                Some(&head.parent(0).expect("parent").tree().expect("tree")),
                Some(&head.tree().expect("tree")),
                None,
            )
            .expect("diff");
        diff.deltas()
            .map(|d| d.new_file().path().expect("path").display().to_string())
            .collect()
    };
    assert!(
        changed
            .iter()
            .all(|p| p.starts_with("umbrella-state/production/")),
        "{changed:?}"
    );

    // Same sources, same registry content: the same bytes, and nothing to commit.
    let (code, out, _) = umbrella(repo.path(), &["ci", "--env", "production"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to commit"), "{out}");
    assert_eq!(state(repo.path(), "production"), files);
}

#[test]
fn render_is_deterministic_and_check_gates_changes() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let (repo, _) = fresh_example(&registry);
    commit_all(repo.path(), "sources");
    let (code, _, err) = umbrella(repo.path(), &["build"], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = umbrella(repo.path(), &["render", "--env", "staging"], &[]);
    assert_eq!(code, 0, "{err}");
    let first = state(repo.path(), "staging");
    let (code, _, _) = umbrella(repo.path(), &["render", "--env", "staging"], &[]);
    assert_eq!(code, 0);
    assert_eq!(state(repo.path(), "staging"), first, "two renders differ");

    let (code, _, err) = umbrella(repo.path(), &["render", "--env", "staging", "--check"], &[]);
    assert_eq!(code, 0, "{err}");
    let values = repo.path().join("umbrella-chart/values-staging.yaml");
    let text = std::fs::read_to_string(&values).expect("read");
    std::fs::write(&values, text.replace("replicas: 1", "replicas: 4")).expect("write");
    let (code, out, err) = umbrella(repo.path(), &["render", "--env", "staging", "--check"], &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("--- a/order-service/deployment-order-service.yaml")
            && out.contains("+  replicas: 4"),
        "{out}"
    );
    assert_eq!(
        state(repo.path(), "staging"),
        first,
        "--check must not write"
    );
}

#[test]
fn an_unresolvable_image_or_a_plaintext_secret_writes_nothing() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let (repo, _) = fresh_example(&registry);
    let (code, _, err) = umbrella(repo.path(), &["build"], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = umbrella(repo.path(), &["render", "--env", "production"], &[]);
    assert_eq!(code, 0);
    let before = state(repo.path(), "production");

    let missing = format!("{registry}/does-not/exist:{}", unique("tag"));
    let values = repo.path().join("bad-values.yaml");
    std::fs::write(
        &values,
        format!("order-service:\n  logShipper:\n    image: {missing}\n"),
    )
    .expect("write");
    let (code, _, err) = umbrella(
        repo.path(),
        &[
            "render",
            "--env",
            "production",
            "--values",
            values.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&missing) && err.contains("not found"), "{err}");
    assert!(
        err.contains("used by app order-service, Deployment/order-service, field spec.template.spec.containers[1].image"),
        "{err}"
    );
    assert_eq!(
        state(repo.path(), "production"),
        before,
        "a failed render changed the state"
    );

    let secret = repo
        .path()
        .join("umbrella-chart/charts/user-service/templates/secret.yaml");
    std::fs::write(&secret, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db-password\nstringData:\n  password: hunter2\n").expect("write");
    // Without a .sops.yaml there is nowhere to encrypt it to: refused, and told how to add one.
    std::fs::remove_file(repo.path().join(".sops.yaml")).expect("remove .sops.yaml");
    let (code, _, err) = umbrella(repo.path(), &["render", "--env", "production"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("Secret/db-password (app user-service")
            && err.contains("in clear: there is no .sops.yaml")
            && err.contains("Secret/order-service-database (app order-service")
            && err.contains("creation_rules"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert_eq!(state(repo.path(), "production"), before);
    let (code, _, err) = umbrella(
        repo.path(),
        &["render", "--env", "production", "--allow-plaintext-secrets"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        state(repo.path(), "production")
            .files
            .contains_key(Path::new("user-service/secret-db-password.yaml"))
    );
}

/// Puts an OCI index into registry A that lists the seeded image for two platforms; returns
/// its tag and the digest of the index.
async fn push_multi_arch_index(image_digest: &str) -> (String, String) {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let manifest = reqwest::Client::new()
        .get(format!(
            "http://{registry}/v2/mirror/busybox/manifests/{image_digest}"
        ))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .expect("GET manifest");
    let media_type = manifest.headers()["content-type"]
        .to_str()
        .expect("type")
        .to_string();
    let size = manifest.bytes().await.expect("body").len();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": media_type, "digest": image_digest, "size": size, "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": media_type, "digest": image_digest, "size": size, "platform": {"architecture": "arm64", "os": "linux"}}
        ]
    })
    .to_string();
    let tag = unique("multi");
    let response = reqwest::Client::new()
        .put(format!(
            "http://{registry}/v2/mirror/busybox/manifests/{tag}"
        ))
        .header("Content-Type", "application/vnd.oci.image.index.v1+json")
        .body(index.clone())
        .send()
        .await
        .expect("PUT index");
    assert!(
        response.status().is_success(),
        "PUT index: {}",
        response.status()
    );
    use sha2::Digest;
    (
        tag,
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(index.as_bytes()))
        ),
    )
}

fn mix_repository(values: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_tree(&repo_root().join("tests/fixtures/mix"), dir.path());
    std::fs::write(dir.path().join("umbrella-chart/values.yaml"), values).expect("values");
    git2::Repository::init(dir.path()).expect("git init");
    dir
}

#[tokio::test]
async fn every_form_of_image_reference_and_kbld_search_rules() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let digest = third_party_digest().await;
    let (multi_tag, index_digest) = push_multi_arch_index(&digest).await;
    let by_tag = format!("{registry}/mirror/busybox:1.35");
    let values = format!(
        "app:\n  images:\n    byTag: {by_tag}\n    byDigest: {registry}/mirror/busybox@{digest}\n    tagAndDigest: {registry}/mirror/busybox:1.35@{digest}\n    multiArch: {registry}/mirror/busybox:{multi_tag}\n"
    );
    let repo = mix_repository(&values);
    let dir = repo.path().to_path_buf();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        umbrella(&dir, &["render", "--env", "dev", "-o", "json"], &[])
    })
    .await
    .expect("render");
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).expect("JSON report");
    let files = state(repo.path(), "dev");
    let deployment: Value = parse_one(&files.files[Path::new("app/deployment-web.yaml")]);
    let pod = &deployment["spec"]["template"]["spec"];
    let pinned = format!("{registry}/mirror/busybox@{digest}");
    assert_eq!(pod["initContainers"][0]["image"], pinned.as_str(), "by tag");
    assert_eq!(
        pod["containers"][0]["image"],
        pinned.as_str(),
        "by digest: left alone"
    );
    assert_eq!(
        pod["containers"][1]["image"],
        format!("{registry}/mirror/busybox:1.35@{digest}").as_str(),
        "tag@digest: left alone"
    );
    assert_eq!(
        pod["containers"][2]["image"],
        format!("{registry}/mirror/busybox@{index_digest}").as_str(),
        "multi-arch: the index digest"
    );
    let cron: Value = parse_one(&files.files[Path::new("app/cronjob-nightly.yaml")]);
    assert_eq!(
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"],
        pinned.as_str()
    );
    let config: Value = parse_one(&files.files[Path::new("app/configmap-fidelity.yaml")]);
    assert_eq!(
        config["metadata"]["annotations"]["sidecarImage"],
        pinned.as_str(),
        "keys"
    );
    assert_eq!(
        config["metadata"]["annotations"]["pinnedByHand"],
        by_tag.as_str(),
        "updateStrategy none"
    );
    assert_eq!(
        config["data"]["tool.json"],
        format!("{{\"tool\":\"{pinned}\",\"n\":1}}").as_str(),
        "embedded JSON"
    );
    assert_eq!(
        report["registryLookups"], 2,
        "one lookup per distinct tag: {report}"
    );
}

fn parse_one(text: &str) -> Value {
    let mut documents =
        umbrella::formats::manifest::parse_documents(text).expect("state file parses");
    assert_eq!(documents.len(), 1);
    documents.remove(0)
}

/// What kubectl reads from YAML files: the JSON it would send, one object per document.
fn kubectl_reads(files: &[PathBuf], namespace: &str) -> Vec<Value> {
    let mut command = Command::new("kubectl");
    command.args(["create", "--dry-run=client", "-o", "json", "-n", namespace]);
    for file in files {
        command.arg("-f").arg(file);
    }
    let output = command.output().expect("kubectl on PATH");
    assert!(
        output.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(|v| v.expect("kubectl JSON"))
        .collect()
}

fn by_name(objects: Vec<Value>) -> BTreeMap<String, Value> {
    objects
        .into_iter()
        .map(|mut o| {
            let key = format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            );
            // `pointer_mut`, not indexing: indexing a missing key would add it as null.
            if let Some(annotations) = o
                .pointer_mut("/metadata/annotations")
                .and_then(Value::as_object_mut)
            {
                annotations.remove(umbrella::stages::render::IMAGES_ANNOTATION);
                if annotations.is_empty() {
                    o["metadata"]
                        .as_object_mut()
                        .expect("metadata")
                        .remove("annotations");
                }
            }
            (key, o)
        })
        .collect()
}

/// Replaces every pinned image reference by the tag reference it came from.
fn unpin(value: &mut Value, pins: &BTreeMap<String, String>) {
    match value {
        Value::String(s) => {
            for (pinned, original) in pins {
                *s = s.replace(pinned.as_str(), original);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| unpin(v, pins)),
        Value::Object(map) => map.values_mut().for_each(|v| unpin(v, pins)),
        _ => {}
    }
}

#[tokio::test]
async fn kubectl_reads_the_state_as_it_reads_helm_output() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let digest = third_party_digest().await;
    let by_tag = format!("{registry}/mirror/busybox:1.35");
    let values = format!(
        "app:\n  images:\n    byTag: {by_tag}\n    byDigest: {registry}/mirror/busybox@{digest}\n    tagAndDigest: {registry}/mirror/busybox:1.35@{digest}\n    multiArch: {by_tag}\n"
    );
    let repo = mix_repository(&values);
    let dir = repo.path().to_path_buf();
    let (code, _, err) =
        tokio::task::spawn_blocking(move || umbrella(&dir, &["render", "--env", "dev"], &[]))
            .await
            .expect("render");
    assert_eq!(code, 0, "{err}");
    let chart = repo.path().join("umbrella-chart");
    let helm_out = umbrella::adapters::helm::run(&[
        "template",
        "mix",
        chart.to_str().expect("utf-8"),
        "--namespace",
        "dev",
    ])
    .await
    .expect("helm");
    let helm_file = repo.path().join("helm-output.yaml");
    std::fs::write(&helm_file, &helm_out).expect("write");

    let state_files: Vec<PathBuf> = state(repo.path(), "dev")
        .files
        .keys()
        .filter(|p| p.starts_with("app"))
        .map(|p| repo.path().join("umbrella-state/dev").join(p))
        .collect();
    let from_helm = by_name(kubectl_reads(&[helm_file], "dev"));
    let mut from_state = by_name(kubectl_reads(&state_files, "dev"));
    let pins = BTreeMap::from([(
        format!("{registry}/mirror/busybox@{digest}"),
        by_tag.clone(),
    )]);
    from_state.values_mut().for_each(|o| unpin(o, &pins));
    // Helm's `byDigest` was written by digest already: unpinning turned it into the tag.
    let mut from_helm = from_helm;
    from_helm.values_mut().for_each(|o| unpin(o, &pins));
    assert_eq!(
        from_state.keys().collect::<Vec<_>>(),
        from_helm.keys().collect::<Vec<_>>()
    );
    for (name, helm_object) in &from_helm {
        assert_eq!(
            &from_state[name], helm_object,
            "kubectl reads {name} differently"
        );
    }
    let config = &from_state["ConfigMap/fidelity"]["data"];
    assert_eq!(config["quotedYes"], "yes");
    assert_eq!(config["quotedOn"], "on");
    assert_eq!(config["octalString"], "0644");
    let deployment = &from_state["Deployment/web"]["spec"]["template"]["spec"];
    assert_eq!(deployment["volumes"][0]["configMap"]["defaultMode"], 420);
    assert_eq!(deployment["activeDeadlineSeconds"], 9007199254740993u64);
    // Key order is kept from helm's output (kubectl's JSON sorts keys, so look at the text).
    let text = &state(repo.path(), "dev").files[Path::new("app/deployment-web.yaml")];
    let order: Vec<usize> = ["apiVersion:", "kind:", "metadata:", "spec:"]
        .iter()
        .map(|k| text.find(k).expect("key"))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[tokio::test]
async fn two_hundred_objects_sharing_five_images_resolve_each_once() {
    let registry_host = testenv("UMBRELLA_TEST_REGISTRY_A");
    let digest = third_party_digest().await;
    let registry = Registry::connect(&registry_host, None)
        .await
        .expect("registry A");
    let base = unique("count");
    let tags: Vec<String> = (0..5).map(|i| format!("{base}-{i}")).collect();
    for tag in &tags {
        registry
            .put_tag(
                "mirror/busybox",
                &Digest::parse(&digest).expect("digest"),
                tag,
            )
            .await
            .expect("tag");
    }
    let repo = mix_repository("app:\n  images: {}\n");
    let templates = repo.path().join("umbrella-chart/charts/app/templates");
    std::fs::remove_dir_all(&templates).expect("clear templates");
    std::fs::create_dir_all(&templates).expect("templates");
    let list: Vec<String> = tags
        .iter()
        .map(|t| format!("\"{registry_host}/mirror/busybox:{t}\""))
        .collect();
    std::fs::write(
        templates.join("pods.yaml"),
        format!(
            "{{{{- $images := list {} }}}}\n{{{{- range $i := until 200 }}}}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p{{{{ $i }}}}\nspec:\n  containers:\n    - name: c\n      image: {{{{ index $images (mod $i 5) }}}}\n{{{{- end }}}}\n",
            list.join(" ")
        ),
    )
    .expect("template");
    let log_file = PathBuf::from(testenv("UMBRELLA_TEST_REGISTRY_A_LOG"));
    let dir = repo.path().to_path_buf();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        umbrella(&dir, &["render", "--env", "dev", "-o", "json"], &[])
    })
    .await
    .expect("render");
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).expect("report");
    assert_eq!(report["registryLookups"], 5);
    assert_eq!(state(repo.path(), "dev").files.len(), 201);
    let log = std::fs::read_to_string(log_file).expect("registry log");
    // One manifest request per distinct image (a GET: its bytes are hashed to the digest).
    let requests = log
        .lines()
        .filter(|l| {
            (l.contains("GET /v2/mirror/busybox/manifests/")
                || l.contains("HEAD /v2/mirror/busybox/manifests/"))
                && l.contains(&base)
        })
        .count();
    assert_eq!(
        requests, 5,
        "the registry saw {requests} manifest requests for 5 distinct images"
    );
}

#[test]
fn commit_refuses_what_would_not_be_a_clean_release_and_works_in_a_fresh_clone() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let (repo, _) = fresh_example(&registry);
    commit_all(repo.path(), "sources");
    let (code, _, err) = umbrella(repo.path(), &["build"], &[]);
    assert_eq!(code, 0, "{err}");

    // A fresh clone: no git identity in its configuration, HOME without one either.
    let clone = tempfile::tempdir().expect("temp dir");
    let home = tempfile::tempdir().expect("home");
    let status = Command::new("git")
        .args([
            "clone",
            "-q",
            repo.path().to_str().expect("utf-8"),
            clone.path().to_str().expect("utf-8"),
        ])
        .status()
        .expect("git clone");
    assert!(status.success());
    std::fs::copy(
        repo.path().join("umbrella-state/images.lock.yaml"),
        clone.path().join("umbrella-state/images.lock.yaml"),
    )
    .expect("lock");
    let env = [
        ("HOME", home.path().to_str().expect("utf-8")),
        ("XDG_CONFIG_HOME", home.path().to_str().expect("utf-8")),
    ];
    let (code, _, err) = umbrella(clone.path(), &["render", "--env", "staging"], &env);
    assert_eq!(code, 0, "{err}");

    std::fs::write(clone.path().join("stray.txt"), "x").expect("write");
    let (code, _, err) = umbrella(clone.path(), &["commit", "--env", "staging"], &env);
    assert_eq!(code, 1);
    assert!(err.contains("uncommitted changes (stray.txt)"), "{err}");
    let repository = git2::Repository::open(clone.path()).expect("open");
    let mut index = repository.index().expect("index");
    index.add_path(Path::new("stray.txt")).expect("stage");
    index.write().expect("write");
    let (code, _, err) = umbrella(
        clone.path(),
        &["commit", "--env", "staging", "--allow-dirty"],
        &env,
    );
    assert_eq!(code, 1);
    assert!(err.contains("other paths are staged (stray.txt)"), "{err}");
    index.remove_path(Path::new("stray.txt")).expect("unstage");
    index.write().expect("write");
    std::fs::remove_file(clone.path().join("stray.txt")).expect("remove");

    let (code, out, err) = umbrella(clone.path(), &["commit", "--env", "staging"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("committed"), "{out}");
    let head = repository
        .head()
        .expect("head")
        .peel_to_commit()
        .expect("commit");
    assert_eq!(head.author().name().ok(), Some("umbrella"));

    let (code, out, _) = umbrella(clone.path(), &["commit", "--env", "staging"], &env);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to commit"), "{out}");

    repository.set_head_detached(head.id()).expect("detach");
    std::fs::remove_dir_all(clone.path().join("umbrella-state/staging/shop"))
        .expect("remove an app");
    let (code, _, err) = umbrella(clone.path(), &["commit", "--env", "staging"], &env);
    assert_eq!(code, 1);
    assert!(err.contains("HEAD is detached"), "{err}");
    let (code, _, err) = umbrella(
        clone.path(),
        &[
            "commit",
            "--env",
            "staging",
            "--allow-detached",
            "--author",
            "Release Bot <bot@example.com>",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let head = repository
        .head()
        .expect("head")
        .peel_to_commit()
        .expect("commit");
    assert_eq!(head.author().email().ok(), Some("bot@example.com"));
    assert!(
        head.tree()
            .expect("tree")
            .get_path(Path::new("umbrella-state/staging/shop"))
            .is_err(),
        "the deletion was committed"
    );
}
