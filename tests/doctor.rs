//! `umbrella doctor` against the real environment: all ok when everything runs, and a precise
//! FAIL line (with exit 1) for each kind of breakage.

mod common;

use std::path::Path;
use std::process::Output;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use umbrella::adapters::cluster::Cluster;

use common::{example_repository, repo_root, testenv, unique};

fn doctor(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let output: Output = common::umbrella_command()
        .arg("doctor")
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .expect("run umbrella");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().expect("exit code"), text)
}

fn line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(name)))
        .unwrap_or_else(|| panic!("no `{name}` line in:\n{text}"))
}

#[test]
fn all_ok_against_the_environment() {
    let context = testenv("UMBRELLA_TEST_KUBE_CONTEXT");
    let (code, text) = doctor(&repo_root(), &["--context", &context], &[]);
    assert_eq!(code, 0, "{text}");
    for name in [
        "repository",
        "sources.yaml",
        "umbrella-chart",
        "docker",
        "helm",
        "registry 127.0.0.1:5000",
        "cluster",
        "permissions in default",
        "secrets",
        "image-policies.yaml",
    ] {
        assert!(line(&text, name).starts_with("ok  "), "{text}");
    }
    assert!(line(&text, "cluster").contains("Kubernetes v1."), "{text}");
    assert!(
        line(&text, "secrets").contains("they open: secrets-production.yaml"),
        "{text}"
    );
    assert!(
        line(&text, "image-policies.yaml").contains("2 policies, 2 markers"),
        "{text}"
    );
}

#[test]
fn a_secret_values_file_no_key_opens_and_a_marker_naming_no_policy_fail() {
    let repo = example_repository();
    let values = repo.path().join("umbrella-chart/values-staging.yaml");
    let text = std::fs::read_to_string(&values).expect("read")
        + "x: 1 # {\"$imagepolicy\": \"nope:tag\"}\n";
    std::fs::write(&values, text).expect("write");
    let (code, text) = doctor(
        repo.path(),
        &[],
        &[("SOPS_AGE_KEY_FILE", "/nonexistent/umbrella-tests/keys.txt")],
    );
    assert_eq!(code, 1, "{text}");
    let secrets = line(&text, "secrets");
    assert!(
        secrets.starts_with("FAIL")
            && secrets.contains("secrets-production.yaml")
            && secrets.contains("age1"),
        "{text}"
    );
    let policies = line(&text, "image-policies.yaml");
    assert!(
        policies.starts_with("FAIL")
            && policies.contains("values-staging.yaml:12: no policy 'nope'"),
        "{text}"
    );
}

#[test]
fn json_output_holds_every_check() {
    let (code, text) = doctor(&repo_root(), &["--output", "json"], &[]);
    assert_eq!(code, 0, "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).expect("JSON report");
    assert_eq!(report["ok"], true);
    let names: Vec<&str> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert!(
        names.contains(&"docker")
            && names.contains(&"registry 127.0.0.1:5000")
            && names.contains(&"cluster"),
        "{names:?}"
    );
}

#[test]
fn malformed_sources_yaml_is_located() {
    let repo = example_repository();
    std::fs::write(
        repo.path().join("sources.yaml"),
        "apiVersion: kbld.k14s.io/v1alpha1\nkind: Sources\nsources:\n- image: a\n  path: x\n  docker:\n    biuld: {}\n",
    )
    .expect("write");
    let (code, text) = doctor(repo.path(), &[], &[]);
    assert_eq!(code, 1, "{text}");
    let failure = line(&text, "sources.yaml");
    assert!(failure.starts_with("FAIL"), "{text}");
    assert!(failure.contains("sources.yaml:7:"), "{failure}");
    assert!(failure.contains("biuld"), "{failure}");
}

#[test]
fn malformed_chart_yaml_is_located() {
    let repo = example_repository();
    std::fs::write(
        repo.path().join("umbrella-chart/Chart.yaml"),
        "apiVersion: v2\nname: shop\n  version: 0.1.0\n",
    )
    .expect("write");
    let (code, text) = doctor(repo.path(), &[], &[]);
    assert_eq!(code, 1, "{text}");
    let failure = line(&text, "umbrella-chart");
    assert!(
        failure.starts_with("FAIL") && failure.contains("Chart.yaml:3:"),
        "{failure}"
    );
}

#[test]
fn environment_settings_are_checked_and_apps_named_by_alias() {
    let repo = example_repository();
    std::fs::write(
        repo.path().join("umbrella.yaml"),
        "environments:\n  production:\n    kubeVersion: soon\n",
    )
    .expect("write");
    let (code, text) = doctor(repo.path(), &[], &[]);
    assert_eq!(code, 1, "{text}");
    let failure = line(&text, "umbrella.yaml");
    assert!(
        failure.starts_with("FAIL") && failure.contains("environments.production.kubeVersion"),
        "{failure}"
    );

    let real_world = tempfile::tempdir().expect("temp dir");
    common::copy_tree(
        &repo_root().join("tests/fixtures/real-world"),
        real_world.path(),
    );
    git2::Repository::init(real_world.path()).expect("git init");
    let (_, text) = doctor(real_world.path(), &[], &[]);
    assert!(
        line(&text, "umbrella-chart").contains("apps: ingress-nginx, redis-exporter"),
        "{text}"
    );
    assert!(
        line(&text, "umbrella.yaml").contains("production (context umbrella-test)"),
        "{text}"
    );
}

#[test]
fn outside_a_git_repository_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, text) = doctor(dir.path(), &[], &[]);
    assert_eq!(code, 1);
    assert!(line(&text, "repository").starts_with("FAIL"), "{text}");
}

#[test]
fn unreachable_docker_engine_fails_with_hint() {
    let (code, text) = doctor(
        &repo_root(),
        &[],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(code, 1, "{text}");
    assert!(line(&text, "docker").starts_with("FAIL"), "{text}");
    assert!(text.contains("hint: start the Docker engine"), "{text}");
}

#[test]
fn unknown_context_fails() {
    let (code, text) = doctor(&repo_root(), &["--context", "no-such-context"], &[]);
    assert_eq!(code, 1, "{text}");
    assert!(line(&text, "cluster").starts_with("FAIL"), "{text}");
}

/// A repository whose images go to registry B, and a Docker config holding B's CA and `auth`.
fn registry_b_setup(auth: Option<&str>) -> (tempfile::TempDir, tempfile::TempDir) {
    let registry_b = testenv("UMBRELLA_TEST_REGISTRY_B");
    let repo = example_repository();
    let sources = std::fs::read_to_string(repo.path().join("sources.yaml")).expect("read");
    std::fs::write(
        repo.path().join("sources.yaml"),
        sources.replace("127.0.0.1:5000", &registry_b),
    )
    .expect("write");
    let config = tempfile::tempdir().expect("temp dir");
    let certs = config.path().join("certs.d").join(&registry_b);
    std::fs::create_dir_all(&certs).expect("certs.d");
    std::fs::copy(testenv("UMBRELLA_TEST_CA"), certs.join("ca.crt")).expect("CA");
    let auths = match auth {
        Some(auth) => serde_json::json!({ registry_b.clone(): { "auth": auth } }),
        None => serde_json::json!({}),
    };
    std::fs::write(
        config.path().join("config.json"),
        serde_json::json!({ "auths": auths }).to_string(),
    )
    .expect("config.json");
    (repo, config)
}

/// Runs the doctor with a Docker config holding `auth` (or nothing) for registry B.
fn doctor_with_docker_config(auth: Option<&str>) -> (i32, String) {
    let (repo, config) = registry_b_setup(auth);
    doctor(
        repo.path(),
        &[],
        &[("DOCKER_CONFIG", config.path().to_str().expect("utf-8"))],
    )
}

#[test]
fn registry_credentials_accepted_missing_and_refused() {
    let registry_b = testenv("UMBRELLA_TEST_REGISTRY_B");
    let name = format!("registry {registry_b}");
    let user = testenv("UMBRELLA_TEST_REGISTRY_B_USER");

    // The environment's own Docker config has the right password.
    let (repo, _) = registry_b_setup(None);
    let (_, text) = doctor(repo.path(), &[], &[]);
    assert!(
        line(&text, &name).starts_with("ok") && line(&text, &name).contains("credentials accepted"),
        "{text}"
    );

    let (code, text) = doctor_with_docker_config(None);
    assert_eq!(code, 1, "{text}");
    assert!(
        line(&text, &name).contains("credentials were missing"),
        "{text}"
    );
    assert!(
        text.contains(&format!("hint: docker login {registry_b}")),
        "{text}"
    );

    let wrong = base64_basic(&user, "wrong-secret-xyz");
    let (code, text) = doctor_with_docker_config(Some(&wrong));
    assert_eq!(code, 1, "{text}");
    assert!(
        line(&text, &name).contains("credentials were refused"),
        "{text}"
    );
    assert!(
        !text.contains("wrong-secret-xyz") && !text.contains(&wrong),
        "a secret was printed:\n{text}"
    );
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// A kubeconfig for a service account of `namespace`, authenticated by a short-lived token.
async fn service_account_kubeconfig(
    cluster: &Cluster,
    namespace: &str,
    dir: &Path,
) -> std::path::PathBuf {
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), namespace);
    let account: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "limited"}})).expect("sa");
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("create service account");
    let request: TokenRequest = serde_json::from_value(
        serde_json::json!({"spec": {"audiences": [], "expirationSeconds": 600}}),
    )
    .expect("token request");
    let token = accounts
        .create_token_request("limited", &PostParams::default(), &request)
        .await
        .expect("token request")
        .status
        .expect("token status")
        .token;
    let admin: serde_json::Value = {
        let text = std::fs::read_to_string(testenv("KUBECONFIG")).expect("kubeconfig");
        yaml_serde::from_str(&text).expect("kubeconfig YAML")
    };
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "limited", "user": {"token": token}}],
        "contexts": [{"name": "limited", "context": {"cluster": admin["clusters"][0]["name"], "user": "limited", "namespace": namespace}}],
        "current-context": "limited",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, kubeconfig.to_string()).expect("write kubeconfig");
    path
}

#[tokio::test]
async fn permissions_come_from_the_api_server() {
    let cluster = Cluster::connect(Some(&testenv("UMBRELLA_TEST_KUBE_CONTEXT")))
        .await
        .expect("cluster");
    let namespace = unique("doctor");
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))
            .expect("namespace");
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = service_account_kubeconfig(&cluster, &namespace, dir.path()).await;
    let kubeconfig = kubeconfig.to_str().expect("utf-8").to_string();
    let permissions = format!("permissions in {namespace}");

    let run = |kubeconfig: String| {
        tokio::task::spawn_blocking(move || {
            doctor(&repo_root(), &[], &[("KUBECONFIG", &kubeconfig)])
        })
    };
    let (code, text) = run(kubeconfig.clone()).await.expect("doctor");
    assert_eq!(code, 1, "{text}");
    let denied = line(&text, &permissions);
    assert!(
        denied.starts_with("FAIL")
            && denied.contains("create configmaps")
            && denied.contains("delete deployments.apps"),
        "{text}"
    );

    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "deployer"},
        "rules": [{"apiGroups": ["", "apps", "batch"], "resources": ["*"], "verbs": ["create", "patch", "delete"]}]
    }))
    .expect("role");
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "deployer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
        "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": namespace}]
    }))
    .expect("binding");
    Api::<Role>::namespaced(cluster.client.clone(), &namespace)
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    Api::<RoleBinding>::namespaced(cluster.client.clone(), &namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    let (code, text) = run(kubeconfig).await.expect("doctor");
    assert_eq!(code, 0, "{text}");
    assert!(line(&text, &permissions).starts_with("ok"), "{text}");
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .expect("delete namespace");
}
