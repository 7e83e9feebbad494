//! `umbrella diff` and `umbrella status` against the local control plane, drift made with
//! kubectl and repaired by deploy, and rollback by revision against rollback by checkout.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::Value;

use common::group::{Group, client, crd, image, kubectl_quietly, widgets};

fn diff(group: &Group, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["--exit-code", "-o", "json"];
    args.extend(extra);
    let (code, out, err) = group.run(&["diff", "app-group"], &args);
    let report = serde_json::from_str(&out).unwrap_or_else(|_| panic!("diff JSON: {out}\n{err}"));
    (code, report, err)
}

fn status(group: &Group, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["-o", "json"];
    args.extend(extra);
    let (code, out, err) = group.run(&["status", "app-group"], &args);
    let report = serde_json::from_str(&out).unwrap_or_else(|_| panic!("status JSON: {out}\n{err}"));
    (code, report, err)
}

/// The object of a status report whose name starts with `name`.
fn status_object(report: &Value, name: &str) -> Value {
    report["apps"]
        .as_array()
        .unwrap_or_else(|| panic!("no apps in {report}"))
        .iter()
        .flat_map(|a| a["objects"].as_array().expect("objects"))
        .find(|o| o["object"].as_str().is_some_and(|n| n.starts_with(name)))
        .unwrap_or_else(|| panic!("no {name} in {report}"))
        .clone()
}

/// The diff's objects by name: (op, lines added or removed).
fn changes(report: &Value) -> BTreeMap<String, (String, Vec<String>)> {
    report["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("no objects in {report}"))
        .iter()
        .map(|o| {
            let lines = o["diff"]
                .as_str()
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    (l.starts_with('+') || l.starts_with('-'))
                        && !l.starts_with("+++")
                        && !l.starts_with("---")
                })
                .map(str::to_string)
                .collect();
            (
                o["object"].as_str().unwrap_or_default().to_string(),
                (o["op"].as_str().unwrap_or_default().to_string(), lines),
            )
        })
        .collect()
}

fn kubectl(args: &[&str]) {
    let status = Command::new("kubectl")
        .args(["--context", "umbrella-test"])
        .args(args)
        .status()
        .expect("run kubectl");
    assert!(status.success(), "kubectl {args:?}");
}

fn config_map_with(group: &Group, name: &str, value: &str) -> String {
    group
        .config_map(name)
        .replace("  k: v\n", &format!("  k: {value}\n  other: same\n"))
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_shows_exactly_the_edited_field_what_is_pruned_and_writes_nothing() {
    let group = Group::new("diff");
    let env = group.env.clone();
    group.write("app", "a.yaml", &config_map_with(&group, "a", "v1"));
    group.write("app", "gone.yaml", &group.config_map("gone"));
    group.write("old", "o.yaml", &group.config_map("o"));
    group.write("app", "web.yaml", &group.deployment("web", &image(), ""));
    common::commit_all(group.repo.path(), "state v1");
    let (code, _, err) = tokio::task::block_in_place(|| group.deploy(&[]));
    assert_eq!(code, 0, "{err}");
    let (code, report, err) = tokio::task::block_in_place(|| diff(&group, &[]));
    assert_eq!(
        code, 0,
        "no changes right after the deploy: {err}\n{report}"
    );

    group.write("app", "a.yaml", &config_map_with(&group, "a", "v2"));
    group.write("app", "new.yaml", &group.config_map("new"));
    group.remove("app", Some("gone.yaml"));
    group.remove("old", None);
    let config_maps: Api<ConfigMap> = Api::namespaced(client().await, &env);
    let before = config_maps
        .get("a")
        .await
        .expect("a")
        .metadata
        .resource_version;

    let (code, report, err) = tokio::task::block_in_place(|| diff(&group, &[]));
    assert_eq!(code, 2, "{err}\n{report}");
    let changes = changes(&report);
    assert_eq!(
        changes[&format!("ConfigMap/a in {env}")],
        (
            "update".to_string(),
            vec!["-  k: v1".to_string(), "+  k: v2".to_string()]
        )
    );
    assert_eq!(changes[&format!("ConfigMap/new in {env}")].0, "create");
    assert_eq!(changes[&format!("ConfigMap/gone in {env}")].0, "delete");
    assert_eq!(changes[&format!("ConfigMap/o in {env}")].0, "delete");
    assert_eq!(changes[&format!("Deployment/web in {env}")].0, "unchanged");
    assert_eq!(changes[&format!("Namespace/{env}")].0, "unchanged");
    assert_eq!(
        report["deletedApps"],
        serde_json::json!([format!("{env}-old")])
    );

    let after = config_maps.get("a").await.expect("a");
    assert_eq!(
        after.metadata.resource_version, before,
        "diff wrote to the cluster"
    );
    assert_eq!(after.data.unwrap_or_default()["k"], "v1");
    assert!(config_maps.get_opt("new").await.expect("get").is_none());
    assert!(config_maps.get_opt("gone").await.expect("get").is_some());

    let (code, out, err) =
        tokio::task::block_in_place(|| group.run(&["diff", "app-group"], &["--color", "never"]));
    assert_eq!(code, 0, "without --exit-code changes exit 0: {err}");
    assert!(
        out.contains(&format!("update {env}-app ConfigMap/a in {env}"))
            && out.contains("a deploy of")
            && out.contains(&format!("app {env}-old deleted")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_masks_secret_data() {
    let group = Group::new("mask");
    let env = group.env.clone();
    let secret = |password: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: {env}\nstringData:\n  password: {password}\n  user: admin\n"
        )
    };
    group.write("app", "secret.yaml", &secret("hunter2-first"));
    let (code, _, err) = tokio::task::block_in_place(|| group.deploy(&[]));
    assert_eq!(code, 0, "{err}");
    group.write("app", "secret.yaml", &secret("hunter2-second"));
    // kubectl's client-side apply copy would hold the value too: it must not leak either.
    kubectl(&[
        "-n",
        &env,
        "annotate",
        "secret",
        "s",
        "kubectl.kubernetes.io/last-applied-configuration={\"stringData\":{\"password\":\"hunter2-first\"}}",
    ]);

    for output in ["json", "text"] {
        let (code, out, err) = tokio::task::block_in_place(|| {
            group.run(
                &["diff", "app-group"],
                &["--exit-code", "-o", output, "--color", "never"],
            )
        });
        assert_eq!(code, 2, "{out}\n{err}");
        for plain in ["hunter2-first", "hunter2-second", "admin"] {
            let encoded = base64_of(plain);
            assert!(
                !out.contains(plain) && !out.contains(&encoded),
                "{plain} leaks in {output}:\n{out}"
            );
        }
        assert!(out.contains("masked"), "{out}");
    }
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_made_with_kubectl_is_detected_and_repaired_by_deploy() {
    let group = Group::new("drift");
    let env = group.env.clone();
    group.write("app", "a.yaml", &config_map_with(&group, "a", "v1"));
    group.write("app", "b.yaml", &group.config_map("b"));
    group.write("app", "web.yaml", &group.deployment("web", &image(), ""));
    common::commit_all(group.repo.path(), "state");
    let (code, _, err) = tokio::task::block_in_place(|| group.deploy(&[]));
    assert_eq!(code, 0, "{err}");
    let (code, report, err) = tokio::task::block_in_place(|| status(&group, &[]));
    assert_eq!(code, 0, "in sync and healthy: {err}\n{report}");

    kubectl(&[
        "-n",
        &env,
        "patch",
        "configmap",
        "a",
        "-p",
        r#"{"data":{"k":"edited"}}"#,
    ]);
    kubectl(&["-n", &env, "scale", "deployment", "web", "--replicas=3"]);
    kubectl(&["-n", &env, "delete", "configmap", "b"]);

    let (code, report, err) = tokio::task::block_in_place(|| diff(&group, &[]));
    assert_eq!(code, 2, "{err}\n{report}");
    let found = changes(&report);
    assert_eq!(
        found[&format!("ConfigMap/a in {env}")].1,
        ["-  k: edited", "+  k: v1"]
    );
    assert_eq!(
        found[&format!("Deployment/web in {env}")].1,
        ["-  replicas: 3", "+  replicas: 2"]
    );
    assert_eq!(found[&format!("ConfigMap/b in {env}")].0, "create");

    let (code, report, err) = tokio::task::block_in_place(|| status(&group, &[]));
    assert_eq!(code, 2, "{err}\n{report}");
    let app = &report["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["app"] == format!("{env}-app"))
        .expect("the app")
        .clone();
    assert_eq!(app["inSync"], false, "{report}");
    let missing = app["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["object"] == format!("ConfigMap/b in {env}"))
        .expect("b");
    assert_eq!(missing["health"], "missing");
    assert_eq!(missing["drifted"], true);

    // The edited fields now belong to kubectl, a person's tool: a plain deploy takes them
    // back and says so (#13; a controller's fields need --force-conflicts, see real_charts).
    let (code, report, err) = tokio::task::block_in_place(|| group.deploy(&[]));
    assert_eq!(code, 0, "{err}");
    assert!(
        report.to_string().contains("drift repaired")
            && report.to_string().contains("kubectl-patch"),
        "{report}"
    );
    let (code, report, err) = tokio::task::block_in_place(|| diff(&group, &[]));
    assert_eq!(code, 0, "{err}\n{report}");
    let (code, report, err) = tokio::task::block_in_place(|| status(&group, &[]));
    assert_eq!(code, 0, "{err}\n{report}");
    let config_maps: Api<ConfigMap> = Api::namespaced(client().await, &env);
    assert_eq!(
        config_maps
            .get("a")
            .await
            .expect("a")
            .data
            .unwrap_or_default()["k"],
        "v1"
    );
}

#[test]
fn status_shows_the_progress_of_what_deploy_does_not_wait_for_without_failing() {
    let group = Group::new("health");
    // Never schedulable, and not waited for: deployed, in sync, and not healthy.
    let deployment = group
        .deployment("stuck", &image(), "")
        .replace(
            "  namespace:",
            "  annotations:\n    kapp.k14s.io/disable-wait: \"true\"\n  namespace:",
        )
        .replace(
            "    spec:\n      containers:",
            "    spec:\n      nodeSelector:\n        no-such-node: \"true\"\n      containers:",
        );
    group.write("app", "deployment.yaml", &deployment);
    common::commit_all(group.repo.path(), "state");
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");

    // Still progressing, as it is; but deploy does not wait for it, so neither does the
    // verdict (#13): only a failure of it would count.
    let (code, report, err) = status(&group, &[]);
    assert_eq!(code, 0, "{err}\n{report}");
    let stuck = status_object(&report, "Deployment/stuck");
    assert_eq!(stuck["health"], "progressing", "{report}");
    assert_eq!(stuck["waited"], false, "{report}");
    assert_eq!(stuck["drifted"], false, "{report}");

    for fail_on in ["drift", "unhealthy", "never"] {
        let (code, report, err) = status(&group, &["--fail-on", fail_on]);
        assert_eq!(code, 0, "--fail-on {fail_on}: {err}\n{report}");
    }

    let (_, text, _) = group.run(&["status", "app-group"], &["--color", "never"]);
    assert!(
        text.contains("in sync") && text.contains("progressing (not waited for"),
        "{text}"
    );
}

#[test]
fn status_names_an_app_deployed_from_another_repository() {
    let group = Group::new("elsewhere");
    let env = group.env.clone();
    group.write("app", "a.yaml", &group.config_map("a"));
    let first = common::commit_all(group.repo.path(), "state");
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");

    // The same files in another repository (its own first commit, no origin): the live
    // commits are not in it, and status says so rather than failing to find them (#13).
    let other = tempfile::tempdir().expect("temp dir");
    common::copy_tree(
        &group.repo.path().join("umbrella-state"),
        &other.path().join("umbrella-state"),
    );
    git2::Repository::init(other.path()).expect("git init");
    let theirs = common::commit_all(other.path(), "the same state, elsewhere");
    assert_ne!(theirs, first);
    let run = |extra: &[&str]| {
        let mut args = vec!["status", "app-group", &env, "--context", "umbrella-test"];
        args.extend(extra);
        common::umbrella(other.path(), &args, &[])
    };

    let (code, out, err) = run(&["-o", "json"]);
    let report: Value =
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("status JSON: {out}\n{err}"));
    assert_eq!(code, 2, "not known to be in sync: {err}\n{report}");
    let apps = report["apps"].as_array().expect("apps");
    assert_eq!(apps.len(), 2, "{report}");
    let origin = format!(
        "deployed from another repository (the repository whose first commit is {})",
        &first[..12]
    );
    for app in apps {
        let note = app["note"].as_str().unwrap_or_default();
        assert!(note.contains(&origin), "{}: {note}", app["app"]);
        assert!(!note.contains("revspec"), "{note}");
        assert_eq!(app["inSync"], Value::Null, "{report}");
        assert_eq!(app["commit"], first.as_str(), "{report}");
    }
    // Health is still told, from the live objects.
    assert_eq!(status_object(&report, "ConfigMap/a")["health"], "healthy");

    let (_, text, err) = run(&["--color", "never"]);
    assert!(
        text.contains(&format!("{env}-app: drift cannot be told: {origin}"))
            && !text.contains("revspec")
            && !err.contains("revspec"),
        "{text}\n{err}"
    );
}

/// Every ConfigMap of the namespace: name, data, labels and annotations.
async fn live_config_maps(env: &str) -> BTreeMap<String, Value> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client().await, env);
    config_maps
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|c| c.metadata.name.as_deref() != Some("kube-root-ca.crt"))
        .map(|c| {
            (
                c.metadata.name.clone().unwrap_or_default(),
                serde_json::json!({
                    "data": c.data,
                    "labels": c.metadata.labels,
                    "annotations": c.metadata.annotations,
                }),
            )
        })
        .collect()
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .status()
        .expect("run git");
    assert!(status.success(), "git {args:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_by_revision_and_by_checkout_give_the_same_live_objects() {
    let group = Group::new("same");
    let env = group.env.clone();
    group.write("app", "a.yaml", &config_map_with(&group, "a", "v1"));
    group.write("app", "c.yaml", &group.config_map("c"));
    let v1 = common::commit_all(group.repo.path(), "state v1");
    group.write("app", "a.yaml", &config_map_with(&group, "a", "v2"));
    group.write("app", "b.yaml", &group.config_map("b"));
    common::commit_all(group.repo.path(), "state v2");
    let deploy = |extra: &[&str]| {
        let (code, _, err) = tokio::task::block_in_place(|| group.deploy(extra));
        assert_eq!(code, 0, "{err}");
    };

    deploy(&[]);
    // What the rollback will do, first.
    let (code, report, err) = tokio::task::block_in_place(|| diff(&group, &["--revision", &v1]));
    assert_eq!(code, 2, "{err}\n{report}");
    let planned = changes(&report);
    assert_eq!(
        planned[&format!("ConfigMap/a in {env}")].1,
        ["-  k: v2", "+  k: v1"]
    );
    assert_eq!(planned[&format!("ConfigMap/b in {env}")].0, "delete");
    deploy(&["--revision", &v1]);
    let by_revision = live_config_maps(&env).await;
    assert_eq!(by_revision["a"]["data"]["k"], "v1");
    assert!(!by_revision.contains_key("b"), "{by_revision:?}");

    deploy(&[]);
    assert_eq!(live_config_maps(&env).await["a"]["data"]["k"], "v2");
    // --no-overlay: files added after v1 (b.yaml) are removed too, as in v1.
    let state = format!("umbrella-state/{env}");
    git(
        group.repo.path(),
        &["checkout", "--no-overlay", &v1, "--", &state],
    );
    deploy(&[]);
    let by_checkout = live_config_maps(&env).await;
    assert_eq!(by_checkout, by_revision);
    assert_eq!(
        by_checkout["a"]["annotations"]["umbrella.dev/state-commit"],
        v1.as_str()
    );

    // The plain checkout keeps b.yaml, added after v1: no commit holds that state, and the
    // deploy says why.
    git(group.repo.path(), &["checkout", "HEAD", "--", &state]);
    git(group.repo.path(), &["checkout", &v1, "--", &state]);
    let (code, _, err) = tokio::task::block_in_place(|| group.deploy(&[]));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("no commit holds the state of {env}-app"))
            && err.contains("--no-overlay"),
        "{err}"
    );
}

#[test]
fn status_names_the_pod_failure_of_a_crashing_workload() {
    let group = Group::new("crash");
    // kwok runs these pods, then fails their container; not waited for, so the deploy passes.
    let labels = "        pod-container-running-failed.stage.kwok.x-k8s.io: \"true\"\n";
    let deployment = group
        .deployment("crashy", &image(), labels)
        .replace(
            "  namespace:",
            "  annotations:\n    kapp.k14s.io/disable-wait: \"true\"\n  namespace:",
        )
        .replace("  replicas: 2\n", "  replicas: 2\n  minReadySeconds: 300\n");
    group.write("app", "deployment.yaml", &deployment);
    common::commit_all(group.repo.path(), "state");
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let crashy = loop {
        let (_, report, _) = status(&group, &[]);
        let crashy = status_object(&report, "Deployment/crashy");
        if crashy["health"] == "failed" || std::time::Instant::now() > deadline {
            break crashy;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    };
    assert_eq!(crashy["health"], "failed", "{crashy}");
    let message = crashy["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("container main") && message.contains("containerFailed"),
        "{message}"
    );
    // A failure counts, waited for or not; --fail-on chooses what counts.
    for (fail_on, expected) in [("drift", 0), ("unhealthy", 2), ("never", 0)] {
        let (code, report, err) = status(&group, &["--fail-on", fail_on]);
        assert_eq!(code, expected, "--fail-on {fail_on}: {err}\n{report}");
    }
    let (_, text, _) = group.run(&["status", "app-group"], &["--color", "never"]);
    assert!(
        text.contains("UNHEALTHY") && text.contains("in sync"),
        "{text}"
    );
}

#[test]
fn diff_names_an_object_another_app_owns_as_deploy_would() {
    let group = Group::new("owner");
    let env = group.env.clone();
    group.write("first", "c.yaml", &group.config_map("c"));
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    group.remove("first", None);
    group.write("second", "c.yaml", &group.config_map("c"));

    let (code, report, err) = diff(&group, &[]);
    assert_eq!(code, 1, "{err}\n{report}");
    let object = report["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["object"] == format!("ConfigMap/c in {env}"))
        .expect("c")
        .clone();
    let error = object["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("owned by app {env}-first")) && error.contains("--adopt"),
        "{object}"
    );
    let (code, report, err) = diff(&group, &["--adopt"]);
    assert_eq!(code, 2, "{err}\n{report}");
    assert_eq!(
        changes(&report)[&format!("ConfigMap/c in {env}")].1,
        [
            format!("-    umbrella.dev/app: {env}-first"),
            format!("+    umbrella.dev/app: {env}-second")
        ]
    );
}

/// A kubeconfig for a service account of the group's namespace that may only read (the
/// `view` role in that namespace and in the inventory namespace).
fn read_only_kubeconfig(group: &Group, dir: &std::path::Path) -> std::path::PathBuf {
    let env = &group.env;
    kubectl(&["-n", env, "create", "serviceaccount", "viewer"]);
    for namespace in [env.as_str(), "umbrella-system"] {
        kubectl(&[
            "-n",
            namespace,
            "create",
            "rolebinding",
            &format!("{env}-viewer"),
            "--clusterrole=view",
            &format!("--serviceaccount={env}:viewer"),
        ]);
    }
    let token = Command::new("kubectl")
        .args([
            "--context",
            "umbrella-test",
            "-n",
            env,
            "create",
            "token",
            "viewer",
        ])
        .output()
        .expect("kubectl create token");
    assert!(token.status.success());
    let current = Command::new("kubectl")
        .args([
            "config",
            "view",
            "--raw",
            "--minify",
            "--context",
            "umbrella-test",
            "-o",
            "json",
        ])
        .output()
        .expect("kubectl config view");
    let current: Value = serde_json::from_slice(&current.stdout).expect("kubeconfig JSON");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": current["clusters"][0]["cluster"]}],
        "users": [{"name": "viewer", "user": {"token": String::from_utf8_lossy(&token.stdout).trim()}}],
        "contexts": [{"name": "viewer", "context": {"cluster": "test", "user": "viewer"}}],
        "current-context": "viewer",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, config.to_string()).expect("write kubeconfig");
    path
}

#[test]
fn status_and_diff_exit_1_when_the_identity_may_not_dry_run() {
    let group = Group::new("viewer");
    let env = group.env.clone();
    group.write("app", "c.yaml", &group.config_map("c"));
    common::commit_all(group.repo.path(), "state");
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().expect("temp dir");
    let _binding = InventoryBinding(format!("{env}-viewer"));
    let kubeconfig = read_only_kubeconfig(&group, dir.path());
    let kubeconfig = kubeconfig.to_str().expect("path");
    let run = |verb: &str| {
        common::umbrella(
            group.repo.path(),
            &[verb, "app-group", &env, "--context", "viewer", "-o", "json"],
            &[("KUBECONFIG", kubeconfig)],
        )
    };

    let (code, out, err) = run("status");
    assert_eq!(code, 1, "not DRIFTED: incomplete\n{out}\n{err}");
    assert!(err.contains("could not be read or compared"), "{err}");
    let report: Value = serde_json::from_str(&out).expect("status JSON");
    let object = status_object(&report, "ConfigMap/c");
    assert!(
        object["error"]
            .as_str()
            .is_some_and(|e| e.contains("forbidden")),
        "{object}"
    );
    assert_eq!(object["drifted"], false, "{object}");
    assert_eq!(object["health"], "healthy", "{object}");

    let (code, out, err) = run("diff");
    assert_eq!(code, 1, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).expect("diff JSON");
    assert!(
        report["objects"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("forbidden")),
        "{report}"
    );
}

/// Deletes the viewer's role binding in the shared inventory namespace when the test ends.
struct InventoryBinding(String);

impl Drop for InventoryBinding {
    fn drop(&mut self) {
        kubectl_quietly(&["-n", "umbrella-system", "delete", "rolebinding", &self.0]);
    }
}

#[test]
fn a_cluster_scoped_custom_resource_rendered_with_a_namespace_is_in_sync() {
    // The CRD comes from elsewhere (another chart, an operator's install): render cannot know
    // its kind is cluster-scoped and gives the object the environment's namespace.
    let group = Group::new("scope");
    let env = group.env.clone();
    let crd_group = format!("{env}.umbrella.test");
    let crd = crd(&crd_group, "Issuer", "Cluster");
    let crd_file = group.repo.path().join("crd.yaml");
    std::fs::write(&crd_file, crd).expect("write CRD");
    kubectl(&["apply", "-f", crd_file.to_str().expect("path")]);
    kubectl(&[
        "wait",
        "--for=condition=Established",
        &format!("crd/issuers.{crd_group}"),
    ]);
    group.write(
        "app",
        "issuer.yaml",
        &format!(
            "apiVersion: {crd_group}/v1\nkind: Issuer\nmetadata:\n  name: {env}\n  namespace: {env}\nspec:\n  acme: true\n"
        ),
    );
    common::commit_all(group.repo.path(), "state");
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    let (code, report, err) = diff(&group, &[]);
    assert_eq!(code, 0, "{err}\n{report}");
    let (code, report, err) = status(&group, &[]);
    assert_eq!(code, 0, "{err}\n{report}");
    let (code, _, err) = group.run(&["delete", "app-group"], &["--yes"]);
    assert_eq!(code, 0, "{err}");
    kubectl(&["delete", &format!("crd/issuers.{crd_group}")]);
}

#[test]
fn diff_and_status_survive_crds_coming_and_going_meanwhile() {
    // Operators install and remove CRDs at any time: a group can disappear between discovery's
    // listing of groups and its read of them.
    let group = Group::new("churn");
    group.write("app", "c.yaml", &group.config_map("c"));
    common::commit_all(group.repo.path(), "state");
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    let crd_group = format!("{}.umbrella.test", group.env);
    let crd = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: blips.{crd_group}\nspec:\n  group: {crd_group}\n  scope: Namespaced\n  names: {{plural: blips, singular: blip, kind: Blip}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {{type: object}}\n"
    );
    let crd_path = group.repo.path().join("blip-crd.yaml");
    std::fs::write(&crd_path, crd).expect("write CRD");
    let crd_file = crd_path.to_string_lossy().into_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        let file = crd_file.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for verb in [&["apply", "-f"][..], &["delete", "--wait=false", "-f"][..]] {
                    let mut args = verb.to_vec();
                    args.push(&file);
                    kubectl_quietly(&args);
                }
            }
        })
    };
    let failures: Vec<String> = (0..15)
        .flat_map(|_| [diff(&group, &[]), status(&group, &[])])
        .filter(|(code, _, _)| *code != 0)
        .map(|(_, _, err)| err)
        .collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().expect("churn thread");
    kubectl_quietly(&["delete", "--ignore-not-found", "-f", &crd_file]);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The API server's count of requests about one object of API group `group`, by verb (`GET`,
/// `APPLY`, `PATCH`, ...), dry runs as `<verb> dry run`. Lists, and the namespace controller's
/// collection deletes in namespaces other tests delete, are left out.
fn requests_to(group: &str) -> BTreeMap<String, u64> {
    let out = Command::new("kubectl")
        .args(["--context", "umbrella-test", "get", "--raw", "/metrics"])
        .output()
        .expect("run kubectl");
    assert!(out.status.success(), "kubectl get --raw /metrics");
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        Some(line[start..].split('"').next()?.to_string())
    };
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.starts_with("apiserver_request_total{")
            || label(line, "group").as_deref() != Some(group)
            || label(line, "scope").as_deref() != Some("resource")
        {
            continue;
        }
        let verb = label(line, "verb").expect("verb");
        let verb = match label(line, "dry_run").as_deref() {
            Some("") | None => verb,
            Some(_) => format!("{verb} dry run"),
        };
        let value: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("count");
        *counts.entry(verb).or_default() += value;
    }
    counts
}

/// How many more requests of each verb `after` counts than `before`.
fn grown(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(verb, n)| (verb.clone(), n - before.get(verb).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_group_is_read_with_lists_and_drift_is_still_repaired() {
    let group = Group::new("lists");
    let env = group.env.clone();
    // Custom resources of the test's own API group: the API server counts its requests apart.
    let crd_group = format!("{env}.example.com");
    group.write("app", "crd.yaml", &crd(&crd_group, "Widget", "Namespaced"));
    let widget = |name: &str| {
        format!(
            "apiVersion: {crd_group}/v1\nkind: Widget\nmetadata:\n  name: {name}\n  namespace: {env}\nspec:\n  size: 3\n  color: blue\n  ports:\n  - name: http\n    port: 80\n"
        )
    };
    for name in ["w1", "w2", "w3", "w4", "w5"] {
        group.write("app", &format!("{name}.yaml"), &widget(name));
    }
    common::commit_all(group.repo.path(), "state");
    let (code, _, err) = tokio::task::block_in_place(|| group.deploy(&[]));
    assert_eq!(code, 0, "{err}");

    let before = requests_to(&crd_group);
    let (code, report, err) = tokio::task::block_in_place(|| group.deploy(&[]));
    assert_eq!(code, 0, "{err}");
    let ops: Vec<&Value> = report["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .collect();
    assert!(ops.iter().all(|o| o["op"] == "unchanged"), "{report}");
    let (code, report, err) = tokio::task::block_in_place(|| diff(&group, &[]));
    assert_eq!(code, 0, "{err}\n{report}");
    let (code, report, err) = tokio::task::block_in_place(|| status(&group, &[]));
    assert_eq!(code, 0, "{err}\n{report}");
    let used = grown(&before, &requests_to(&crd_group));
    assert!(
        used.is_empty(),
        "deploy, diff and status of an unchanged group read no object one by one: {used:?}"
    );

    // Drift of every kind: a value changed and a field removed by hand, umbrella's labels
    // taken off (the LIST no longer finds it), an object deleted.
    let kubectl_widget = |args: &[&str]| {
        let mut all = vec!["-n", env.as_str()];
        all.extend(args);
        kubectl(&all);
    };
    let resource = format!("widgets.{crd_group}");
    kubectl_widget(&[
        "patch",
        &resource,
        "w2",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"size":9}}"#,
    ]);
    kubectl_widget(&[
        "patch",
        &resource,
        "w3",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/color"}]"#,
    ]);
    kubectl_widget(&[
        "label",
        &resource,
        "w1",
        "umbrella.dev/group-",
        "umbrella.dev/app-",
    ]);
    kubectl_widget(&["delete", &resource, "w4"]);
    let before = requests_to(&crd_group);
    let (code, report, err) = tokio::task::block_in_place(|| diff(&group, &[]));
    assert_eq!(code, 2, "{err}\n{report}");
    let found = changes(&report);
    let object = |name: &str| format!("Widget/{name} in {env}");
    assert_eq!(found[&object("w2")].1, ["-  size: 9", "+  size: 3"]);
    assert_eq!(found[&object("w3")].1, ["+  color: blue"]);
    assert_eq!(found[&object("w4")].0, "create");
    assert_eq!(found[&object("w5")].0, "unchanged");
    let (code, report, err) = tokio::task::block_in_place(|| group.deploy(&[]));
    assert_eq!(code, 0, "{err}");
    let op = |name: &str| {
        report["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .find(|o| o["object"] == object(name))
            .map(|o| o["op"].as_str().unwrap_or_default().to_string())
    };
    let ops: Vec<_> = ["w1", "w2", "w3", "w4", "w5"]
        .map(|w| op(w).unwrap_or_default())
        .into();
    assert_eq!(
        ops,
        ["update", "update", "update", "create", "unchanged"],
        "{report}"
    );
    let used = grown(&before, &requests_to(&crd_group));
    // Diff reads and dry-runs each drifted widget (w2 twice: the first dry run meets
    // kubectl's field). Deploy does the same, except that what the LIST did not find is
    // dry-run first: w4's answer is a create's, so nothing more; w1's is not, so it is read
    // and dry-run again. w5 is never read, dry-run or applied.
    assert_eq!(used.get("APPLY").copied(), Some(4), "{used:?}");
    assert_eq!(used.get("APPLY dry run").copied(), Some(5 + 6), "{used:?}");
    assert_eq!(used.get("GET").copied(), Some(4 + 3), "{used:?}");

    let (code, report, err) = tokio::task::block_in_place(|| diff(&group, &[]));
    assert_eq!(code, 0, "repaired: {err}\n{report}");
    let live = widgets(&crd_group, &env).await;
    let w1 = live.get("w1").await.expect("w1");
    assert_eq!(
        w1.metadata
            .labels
            .unwrap_or_default()
            .get("umbrella.dev/group"),
        Some(&env)
    );
    assert_eq!(live.get("w2").await.expect("w2").data["spec"]["size"], 3);
    assert_eq!(
        live.get("w3").await.expect("w3").data["spec"]["color"],
        "blue"
    );
    assert!(live.get_opt("w4").await.expect("get").is_some());
}
