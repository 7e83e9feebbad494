//! What real charts do: look at `.Capabilities`, carry helm hooks, change immutable fields, and
//! meet hand edits. Each test drives the binary against the real environment.

mod common;

use std::path::Path;

use common::write_file;

/// A ConfigMap that shows what the chart saw of the cluster, and a value of the environment.
const CAPABILITIES_TEMPLATE: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: seen
data:
  kube: {{ .Capabilities.KubeVersion.Version | quote }}
  release: {{ .Release.Name | quote }}
  flavour: {{ .Values.flavour | default "plain" | quote }}
  pdb: {{ if .Capabilities.APIVersions.Has "policy/v1" }}"policy/v1"{{ else }}"policy/v1beta1"{{ end }}
  monitor: {{ .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" | quote }}
"#;

fn render(repo: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["render", "--env", "production"];
    args.extend(extra);
    let (code, out, err) = common::umbrella(repo, &args, &[]);
    (code, format!("{out}{err}"))
}

/// The data of the rendered ConfigMap `seen`, in namespace `namespace`.
fn seen(repo: &Path) -> yaml_serde::Value {
    let file = repo.join("umbrella-state/production/shop/configmap-seen.yaml");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
    yaml_serde::from_str(&text).expect("a ConfigMap")
}

fn field<'a>(object: &'a yaml_serde::Value, path: &[&str]) -> &'a str {
    let mut value = object;
    for key in path {
        value = &value[*key];
    }
    value
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} in {object:?}"))
}

async fn cluster_version() -> String {
    let info = common::group::client()
        .await
        .apiserver_version()
        .await
        .expect("version");
    info.git_version
}

#[tokio::test]
async fn charts_see_the_environments_cluster_its_settings_and_the_flags() {
    let repo = common::chart_repository(&[("seen.yaml", CAPABILITIES_TEMPLATE)]);
    let root = repo.path();
    let capabilities = root.join("umbrella-state/production/capabilities.yaml");

    // No cluster named: helm's own default, which the environment builds for Kubernetes 1.34.
    let (code, out) = render(root, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(field(&seen(root), &["data", "kube"]), "v1.34.0", "{out}");
    assert_eq!(field(&seen(root), &["data", "pdb"]), "policy/v1");
    assert!(
        !capabilities.exists(),
        "nothing to record without a cluster"
    );

    // umbrella.yaml names the environment's context, namespace, release and values files.
    write_file(root.join("values/prod.yaml"), "flavour: spicy\n");
    write_file(
        root.join("umbrella.yaml"),
        "environments:\n  production:\n    context: umbrella-test\n    namespace: shop-prod\n    release: storefront\n    values: [values/prod.yaml]\n",
    );
    let (code, out) = render(root, &[]);
    assert_eq!(code, 0, "{out}");
    let object = seen(root);
    assert_eq!(field(&object, &["data", "kube"]), cluster_version().await);
    assert_eq!(field(&object, &["data", "monitor"]), "false");
    assert_eq!(field(&object, &["data", "release"]), "storefront");
    assert_eq!(field(&object, &["data", "flavour"]), "spicy");
    assert_eq!(field(&object, &["metadata", "namespace"]), "shop-prod");
    assert!(out.contains("asked of kube context umbrella-test"), "{out}");
    let record =
        std::fs::read_to_string(&capabilities).expect("the cluster's capabilities recorded");
    assert!(
        record.contains("context: \"umbrella-test\"")
            && record.contains("  - apps/v1/Deployment\n"),
        "{record}"
    );

    // Without that cluster the render gives the same bytes, from the record.
    write_file(
        root.join("umbrella.yaml"),
        "environments:\n  production:\n    context: elsewhere\n    namespace: shop-prod\n    release: storefront\n    values: [values/prod.yaml]\n",
    );
    let (code, out) = render(root, &["--check"]);
    assert_eq!(code, 0, "the record renders the same bytes: {out}");
    let (code, out) = render(root, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("as capabilities.yaml recorded; the cluster did not answer"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&capabilities).expect("kept"),
        record
    );

    // The environment's settings go over the cluster's, the flags over both.
    write_file(
        root.join("umbrella.yaml"),
        "environments:\n  production:\n    kubeVersion: v1.33.2\n    apiVersions: [monitoring.coreos.com/v1]\n",
    );
    let (code, out) = render(root, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(field(&seen(root), &["data", "kube"]), "v1.33.2");
    assert_eq!(field(&seen(root), &["data", "monitor"]), "true");
    let (code, out) = render(
        root,
        &[
            "--kube-version",
            "v1.32.1",
            "--api-versions",
            "example.com/v1,other.io/v2/Thing",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(field(&seen(root), &["data", "kube"]), "v1.32.1");
}

#[test]
fn a_bad_environment_setting_is_named_and_nothing_is_written() {
    let repo = common::chart_repository(&[("seen.yaml", CAPABILITIES_TEMPLATE)]);
    let root = repo.path();
    write_file(
        root.join("umbrella.yaml"),
        "environments:\n  production:\n    kubeVersion: latest\n    apiVersions: [Monitoring/v1]\n    values: [missing.yaml]\n",
    );
    let (code, out) = render(root, &[]);
    assert_eq!(code, 2, "{out}");
    for named in [
        "umbrella.yaml",
        "environments.production.kubeVersion",
        "environments.production.apiVersions",
        "environments.production.values",
    ] {
        assert!(out.contains(named), "{named} in: {out}");
    }
    assert!(
        !root.join("umbrella-state").exists(),
        "nothing written: {out}"
    );
    let (code, out, err) = common::umbrella(
        root,
        &["render", "--env", "production", "--kube-version", "soon"],
        &[],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("--kube-version"), "{err}");
}
