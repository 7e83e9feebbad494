//! What real charts do: look at `.Capabilities`, carry helm hooks, change immutable fields, and
//! meet hand edits. Each test drives the binary against the real environment.

mod common;

use std::path::Path;

use common::group::Group;
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
  thing: {{ .Capabilities.APIVersions.Has "other.io/v2/Thing" | quote }}
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
    assert_eq!(field(&seen(root), &["data", "thing"]), "false");
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
    assert_eq!(field(&seen(root), &["data", "thing"]), "true");
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

/// A Job that runs as a helm hook (`events`), with more lines under its annotations, its
/// spec and its pod's spec.
struct Extra<'a> {
    annotations: &'a str,
    spec: &'a str,
    pod: &'a str,
}

const NO_EXTRA: Extra<'static> = Extra {
    annotations: "",
    spec: "",
    pod: "",
};

fn hook_job(group: &Group, name: &str, events: &str, extra: Extra) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  namespace: {ns}
  annotations:
    helm.sh/hook: {events}
{annotations}spec:
{spec}  template:
    spec:
{pod}      restartPolicy: Never
      containers:
      - name: main
        image: {image}
"#,
        ns = group.env,
        image = common::group::image(),
        annotations = extra.annotations,
        spec = extra.spec,
        pod = extra.pod,
    )
}

fn data_config_map(group: &Group, name: &str, value: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {}\n  annotations:\n    note: x\n{annotations}data:\n  v: \"{value}\"\n",
        group.env
    )
}

/// The objects of a deploy's JSON report as `op Kind/name`, in the order they were settled.
fn settled(report: &serde_json::Value) -> Vec<String> {
    report["objects"]
        .as_array()
        .map(|objects| {
            objects
                .iter()
                .map(|o| {
                    let object = o["object"].as_str().unwrap_or_default();
                    let short = object.split(" in ").next().unwrap_or(object);
                    format!("{} {short}", o["op"].as_str().unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn position(lines: &[String], wanted: &str) -> usize {
    lines
        .iter()
        .position(|l| l == wanted)
        .unwrap_or_else(|| panic!("{wanted} in {lines:#?}"))
}

/// kubectl in `namespace`: its output, when it succeeded.
fn kubectl_in(namespace: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new("kubectl")
        .args(["--context", "umbrella-test", "-n", namespace])
        .args(args)
        .output()
        .expect("kubectl");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn live_value(group: &Group, name: &str) -> Option<String> {
    kubectl_in(
        &group.env,
        &["get", "configmap", name, "-o", "jsonpath={.data.v}"],
    )
}

fn job_exists(group: &Group, name: &str) -> bool {
    kubectl_in(&group.env, &["get", "job", name]).is_some()
}

#[test]
fn hooks_run_in_their_phases_and_are_neither_drift_nor_run_again() {
    let group = Group::new("hooks");
    group.write(
        "web",
        "configmap.yaml",
        &data_config_map(&group, "web", "1", ""),
    );
    group.write(
        "web",
        "migrate.yaml",
        &hook_job(
            &group,
            "migrate",
            "pre-install,pre-upgrade",
            Extra {
                annotations: "    helm.sh/hook-weight: \"-5\"\n",
                ..NO_EXTRA
            },
        ),
    );
    group.write(
        "web",
        "announce.yaml",
        &hook_job(
            &group,
            "announce",
            "post-install,post-upgrade",
            Extra {
                annotations: "    helm.sh/hook-delete-policy: hook-succeeded\n",
                ..NO_EXTRA
            },
        ),
    );
    group.write(
        "web",
        "undo.yaml",
        &data_config_map(&group, "undone", "yes", "    helm.sh/hook: pre-rollback\n"),
    );
    group.write(
        "web",
        "redo.yaml",
        &data_config_map(&group, "redone", "yes", "    helm.sh/hook: post-rollback\n"),
    );
    let first = common::commit_all(group.repo.path(), "v1");

    // Install: the pre-install Job completes before the app's objects, the post-install one
    // after them; the pre-rollback hook does not run.
    let (code, report, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    let lines = settled(&report);
    assert!(
        position(&lines, "create Job/migrate") < position(&lines, "create ConfigMap/web")
            && position(&lines, "create ConfigMap/web") < position(&lines, "create Job/announce"),
        "{lines:#?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("undone") || l.contains("redone")),
        "{lines:#?}"
    );
    assert!(
        !job_exists(&group, "announce"),
        "hook-succeeded removed it (it has no TTL)"
    );

    // Self-deleting hook Jobs are neither missing nor drift.
    let (code, out, err) = group.run(&["status", "app-group"], &[]);
    assert_eq!(code, 0, "status right after the deploy: {out}{err}");
    let (code, out, err) = group.run(&["diff", "app-group"], &["--exit-code"]);
    assert_eq!(code, 0, "diff right after the deploy: {out}{err}");

    // An app that did not change runs no hook again.
    let (code, report, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !settled(&report).iter().any(|l| l.contains("Job/")),
        "{report}"
    );

    // A change: diff names the hooks that will run; the deploy replaces the previous Job
    // (before-hook-creation) and runs the upgrade hooks.
    group.write(
        "web",
        "configmap.yaml",
        &data_config_map(&group, "web", "2", ""),
    );
    common::commit_all(group.repo.path(), "v2");
    let (code, out, err) = group.run(&["diff", "app-group"], &["--exit-code"]);
    assert_eq!(code, 2, "changes: {out}{err}");
    assert!(
        out.contains("Job/migrate") && out.contains("(pre-upgrade) would run"),
        "{out}"
    );
    let (code, report, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    let lines = settled(&report);
    assert!(
        position(&lines, "delete Job/migrate") < position(&lines, "create Job/migrate")
            && position(&lines, "create Job/migrate") < position(&lines, "update ConfigMap/web")
            && position(&lines, "update ConfigMap/web") < position(&lines, "create Job/announce"),
        "{lines:#?}"
    );
    assert_eq!(live_value(&group, "undone"), None);

    // A rollback runs the rollback hooks of the state it deploys, not the upgrade hooks.
    let (code, out, err) = group.run(&["rollback"], &["--to", &first, "--yes", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let lines = settled(&serde_json::from_str(&out).expect("json"));
    assert!(
        position(&lines, "create ConfigMap/undone") < position(&lines, "update ConfigMap/web")
            && position(&lines, "update ConfigMap/web")
                < position(&lines, "create ConfigMap/redone"),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("Job/")), "{lines:#?}");
    assert_eq!(live_value(&group, "web").as_deref(), Some("1"));

    // A pre-upgrade hook that fails stops the deploy before the app's objects change, and
    // hook-failed deletes it.
    group.write(
        "web",
        "configmap.yaml",
        &data_config_map(&group, "web", "3", ""),
    );
    group.write(
        "web",
        "gate.yaml",
        &hook_job(
            &group,
            "gate",
            "pre-upgrade",
            Extra {
                annotations: "    helm.sh/hook-delete-policy: hook-failed\n",
                spec: "  backoffLimit: 0\n  activeDeadlineSeconds: 2\n",
                pod: "      nodeSelector:\n        no-such-node: here\n",
            },
        ),
    );
    common::commit_all(group.repo.path(), "v3");
    let (code, _, err) = group.deploy(&[]);
    assert_ne!(code, 0, "the failing hook fails the deploy: {err}");
    assert!(err.contains("Job/gate"), "the hook is named: {err}");
    assert_eq!(
        live_value(&group, "web").as_deref(),
        Some("1"),
        "the app's objects untouched"
    );
    assert!(!job_exists(&group, "gate"), "hook-failed deleted it");
}

#[test]
fn a_job_that_completed_and_was_deleted_before_it_was_watched_counts_as_completed() {
    let group = Group::new("ttl");
    // Many objects in the same wave: the Job completes and goes while they are applied.
    for i in 0..150 {
        group.write(
            "web",
            &format!("service-{i}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\n  namespace: {}\nspec:\n  selector:\n    app: none\n  ports:\n  - port: 80\n",
                group.env
            ),
        );
    }
    let job = hook_job(
        &group,
        "once",
        "none",
        Extra {
            spec: "  ttlSecondsAfterFinished: 0\n",
            ..NO_EXTRA
        },
    );
    let job = job.replace("  annotations:\n    helm.sh/hook: none\n", "");
    group.write("web", "job.yaml", &job);
    common::commit_all(group.repo.path(), "v1");
    let (code, report, err) = group.deploy(&["--wait-timeout", "90s"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        settled(&report).contains(&"create Job/once".to_string()),
        "{report}"
    );
    assert!(!job_exists(&group, "once"), "its TTL removed it");
}

#[test]
fn status_does_not_wait_for_what_deploy_does_not_wait_for() {
    let group = Group::new("nowait");
    group.write("web", "lb.yaml", &group.load_balancer(false));
    common::commit_all(group.repo.path(), "v1");
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = group.run(&["status", "app-group"], &[]);
    assert_eq!(
        code, 0,
        "a LoadBalancer without an address, not waited for: {out}{err}"
    );
}

/// A Job (not a hook) whose pod template carries `version`, with more annotations.
fn plain_job(group: &Group, version: &str, annotations: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  namespace: {ns}\n  annotations:\n    note: x\n{annotations}spec:\n  template:\n    metadata:\n      labels:\n        version: \"{version}\"\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: main\n        image: {image}\n",
        ns = group.env,
        image = common::group::image()
    )
}

/// `diff` answers (exit 0: no --exit-code) and says each of `wanted`.
fn diff_says(group: &Group, wanted: &[&str]) {
    let (code, out, err) = group.run(&["diff", "app-group"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    for text in wanted {
        assert!(out.contains(text), "{text} in: {out}");
    }
}

fn uid(group: &Group, kind: &str, name: &str) -> String {
    kubectl_in(
        &group.env,
        &["get", kind, name, "-o", "jsonpath={.metadata.uid}"],
    )
    .expect("it exists")
}

fn op_of(report: &serde_json::Value, object: &str) -> String {
    let lines = settled(report);
    lines
        .iter()
        .find(|l| l.ends_with(object))
        .unwrap_or_else(|| panic!("{object} in {lines:#?}"))
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn an_immutable_change_names_the_way_forward_and_the_strategies_replace() {
    let group = Group::new("replace");
    group.write("web", "job.yaml", &plain_job(&group, "1", ""));
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    let first = uid(&group, "job", "migrate");

    group.write("web", "job.yaml", &plain_job(&group, "2", ""));
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("Job/migrate")
            && err.contains("field is immutable")
            && err.contains("kapp.k14s.io/update-strategy: fallback-on-replace"),
        "{err}"
    );
    assert_eq!(uid(&group, "job", "migrate"), first, "nothing was applied");

    let fallback = "    kapp.k14s.io/update-strategy: fallback-on-replace\n";
    group.write("web", "job.yaml", &plain_job(&group, "2", fallback));
    diff_says(&group, &["replace ", "deletes it and creates it again"]);
    let (code, report, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(op_of(&report, "Job/migrate"), "replace");
    let second = uid(&group, "job", "migrate");
    assert_ne!(second, first, "a new Job");

    // always-replace with a nonce: a Job that runs again on every deploy.
    let always = "    kapp.k14s.io/update-strategy: always-replace\n    kapp.k14s.io/nonce: \"\"\n";
    group.write("web", "job.yaml", &plain_job(&group, "2", always));
    let (code, report, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(op_of(&report, "Job/migrate"), "replace");
    let third = uid(&group, "job", "migrate");
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    assert_ne!(uid(&group, "job", "migrate"), third, "replaced again");
    let nonce = kubectl_in(
        &group.env,
        &[
            "get",
            "job",
            "migrate",
            "-o",
            "jsonpath={.metadata.annotations.kapp\\.k14s\\.io/nonce}",
        ],
    );
    assert!(nonce.is_some_and(|n| !n.is_empty()), "the nonce is filled");
}

#[test]
fn hand_edits_are_taken_back_and_a_controllers_fields_are_not() {
    let group = Group::new("drift");
    group.write("web", "cm.yaml", &data_config_map(&group, "web", "1", ""));
    common::commit_all(group.repo.path(), "v1");
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");

    kubectl_in(
        &group.env,
        &[
            "patch",
            "configmap",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"v":"9"}}"#,
        ],
    )
    .expect("kubectl patch");
    diff_says(&group, &["deploy takes these fields back", "kubectl-patch"]);
    let (code, report, err) = group.deploy(&[]);
    assert_eq!(code, 0, "a plain deploy repairs hand-made drift: {err}");
    assert_eq!(live_value(&group, "web").as_deref(), Some("1"));
    assert!(report.to_string().contains("drift repaired"), "{report}");
    let (code, out, err) = group.run(&["status", "app-group"], &[]);
    assert_eq!(code, 0, "{out}{err}");

    // A controller's fields are its own: refused without --force-conflicts.
    let patch = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: {}\ndata:\n  v: \"7\"\n",
        group.env
    );
    let file = group.repo.path().join("controller.yaml");
    write_file(&file, patch);
    let file = file.display().to_string();
    kubectl_in(
        &group.env,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "scaler-controller",
            "-f",
            &file,
        ],
    )
    .expect("a controller's apply");
    diff_says(
        &group,
        &[
            "needs --force-conflicts to take these fields from",
            "scaler-controller",
        ],
    );
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("scaler-controller") && err.contains("--force-conflicts"),
        "{err}"
    );
    assert_eq!(live_value(&group, "web").as_deref(), Some("7"));
    let (code, _, err) = group.deploy(&["--force-conflicts"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(live_value(&group, "web").as_deref(), Some("1"));
}

/// The real-world example of `tests/fixtures/real-world` in a repository of its own, its
/// environment named for this run; deleted from the cluster when dropped.
struct RealWorld {
    repo: tempfile::TempDir,
    env: String,
}

impl RealWorld {
    fn new() -> Self {
        let repo = tempfile::tempdir().expect("temp dir");
        common::copy_tree(
            &common::repo_root().join("tests/fixtures/real-world"),
            repo.path(),
        );
        let env = common::unique("rw");
        // Cluster-scoped names (the release's ClusterRoles and webhook, the IngressClass) are
        // this run's own.
        write_file(
            repo.path().join("umbrella.yaml"),
            format!(
                "environments:\n  {env}:\n    context: umbrella-test\n    namespace: {env}\n    release: {env}\n    values: [umbrella-chart/values-production.yaml, umbrella-chart/values-{env}.yaml]\n"
            ),
        );
        write_file(
            repo.path()
                .join(format!("umbrella-chart/values-{env}.yaml")),
            format!(
                "ingress-nginx:\n  controller:\n    ingressClassResource:\n      name: {env}\n      controllerValue: k8s.io/{env}\n"
            ),
        );
        git2::Repository::init(repo.path()).expect("git init");
        common::commit_all(repo.path(), "the real-world example");
        RealWorld { repo, env }
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        common::umbrella(self.repo.path(), args, &[])
    }

    fn state(&self) -> std::path::PathBuf {
        self.repo.path().join("umbrella-state").join(&self.env)
    }

    fn replicas(&self) -> Option<String> {
        let name = format!("{}-ingress-nginx-controller", self.env);
        kubectl_in(
            &self.env,
            &[
                "get",
                "deployment",
                &name,
                "-o",
                "jsonpath={.spec.replicas}",
            ],
        )
    }
}

impl Drop for RealWorld {
    fn drop(&mut self) {
        let _ = self.run(&["delete", "app-group", &self.env, "--yes"]);
    }
}

#[test]
fn published_charts_go_through_the_whole_flow() {
    let example = RealWorld::new();
    let env = example.env.as_str();

    let (code, out, err) = example.run(&["ci", "--env", env]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("asked of kube context umbrella-test"), "{out}");
    let state = example.state();
    assert!(state.join("capabilities.yaml").is_file());
    assert!(
        state
            .join(
                "ingress-nginx/poddisruptionbudget-{env}-ingress-nginx-controller.yaml"
                    .replace("{env}", env)
            )
            .is_file()
    );
    // The chart renders its ServiceMonitor only where the cluster serves monitoring.coreos.com.
    let exporter: Vec<String> = std::fs::read_dir(state.join("redis-exporter"))
        .expect("the alias is the app")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !exporter.iter().any(|f| f.starts_with("servicemonitor")),
        "{exporter:?}"
    );
    let (code, out, err) = example.run(&["render", "--env", env, "--check"]);
    assert_eq!(code, 0, "{out}{err}");

    // The admission webhook's hook Jobs (ttlSecondsAfterFinished: 0) around the controller.
    let (code, out, err) = example.run(&["deploy", "app-group", env, "--yes", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let lines = settled(&serde_json::from_str(&out).expect("json"));
    let create = format!("create Job/{env}-ingress-nginx-admission-create");
    let controller = format!("create Deployment/{env}-ingress-nginx-controller");
    let patch = format!("create Job/{env}-ingress-nginx-admission-patch");
    assert!(
        position(&lines, &create) < position(&lines, &controller)
            && position(&lines, &controller) < position(&lines, &patch),
        "{lines:#?}"
    );
    let (code, out, err) = example.run(&["status", "app-group", env]);
    assert_eq!(code, 0, "status right after the deploy: {out}{err}");
    let (code, out, err) = example.run(&["diff", "app-group", env, "--exit-code"]);
    assert_eq!(code, 0, "diff right after the deploy: {out}{err}");

    // A change, released and deployed; then rolled back.
    write_file(
        example
            .repo
            .path()
            .join("umbrella-chart/values-production.yaml"),
        "ingress-nginx:\n  controller:\n    replicaCount: 3\n",
    );
    common::commit_all(example.repo.path(), "three controllers");
    let (code, out, err) = example.run(&["ci", "--env", env]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = example.run(&["deploy", "app-group", env, "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(example.replicas().as_deref(), Some("3"));
    let (code, out, err) = example.run(&["rollback", env, "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(example.replicas().as_deref(), Some("2"));

    let (code, out, err) = example.run(&["delete", "app-group", env, "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(example.replicas(), None, "deleted");
}

#[test]
fn a_render_writes_nothing_outside_the_state_when_dependencies_are_built() {
    let repo = common::chart_repository(&[]);
    let root = repo.path();
    let chart = root.join("umbrella-chart");
    let subchart = |dir: &Path, name: &str| {
        write_file(
            dir.join("Chart.yaml"),
            format!("apiVersion: v2\nname: {name}\nversion: 0.1.0\n"),
        );
        write_file(
            dir.join("templates/cm.yaml"),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n"),
        );
    };
    // A local subchart whose version is not the one declared; then one beside the chart, which
    // helm must build into charts/.
    subchart(&chart.join("charts/local"), "local");
    subchart(&root.join("libs/beside"), "beside");
    let dependencies = "apiVersion: v2\nname: shop\nversion: 0.1.0\ndependencies:\n- name: local\n  version: 0.2.0\n";
    write_file(chart.join("Chart.yaml"), dependencies);
    common::commit_all(root, "a local subchart");
    let (code, out) = render(root, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !chart.join("Chart.lock").exists(),
        "no Chart.lock in the source tree"
    );
    let beside = "- name: beside\n  version: 0.1.0\n  repository: file://../libs/beside\n";
    write_file(
        chart.join("Chart.yaml"),
        format!("{}{beside}", dependencies.replace("0.2.0", "0.1.0")),
    );
    common::commit_all(root, "and one beside");
    let (code, out) = render(root, &[]);
    assert_eq!(code, 0, "{out}");
    let state = root.join("umbrella-state/production");
    assert!(state.join("local/configmap-local.yaml").is_file(), "{out}");
    assert!(
        state.join("beside/configmap-beside.yaml").is_file(),
        "{out}"
    );
    assert!(
        !chart.join("Chart.lock").exists(),
        "no Chart.lock in the source tree"
    );
    let archives: Vec<_> = std::fs::read_dir(chart.join("charts"))
        .expect("charts")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(archives, ["local"], "nothing added to charts/");
    let (code, out, err) = common::umbrella(root, &["commit", "--env", "production"], &[]);
    assert_eq!(code, 0, "the source tree is clean: {out}{err}");
}

#[test]
fn delete_runs_the_delete_hooks_around_the_deletion() {
    let group = Group::new("byehooks");
    group.write("web", "cm.yaml", &data_config_map(&group, "web", "1", ""));
    group.write(
        "web",
        "farewell.yaml",
        &data_config_map(&group, "farewell", "1", "    helm.sh/hook: pre-delete\n"),
    );
    // After the deletion the group's namespace is gone: the post-delete hook lives elsewhere.
    let after = format!("{}-after", group.env);
    group.write(
        "web",
        "after.yaml",
        &data_config_map(&group, &after, "1", "    helm.sh/hook: post-delete\n")
            .replace(&format!("namespace: {}", group.env), "namespace: default"),
    );
    common::commit_all(group.repo.path(), "v1");
    let (code, report, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !settled(&report)
            .iter()
            .any(|l| l.contains("farewell") || l.contains("after"))
    );

    let (code, out, err) = group.run(&["delete", "app-group"], &["--yes", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let lines = settled(&serde_json::from_str(&out).expect("json"));
    assert!(
        position(&lines, "create ConfigMap/farewell") < position(&lines, "delete ConfigMap/web")
            && position(&lines, "delete ConfigMap/web")
                < position(&lines, &format!("create ConfigMap/{after}")),
        "{lines:#?}"
    );
    assert!(
        kubectl_in("default", &["get", "configmap", &after]).is_some(),
        "helm leaves hooks"
    );
    common::group::kubectl_quietly(&["-n", "default", "delete", "configmap", &after]);
}

#[test]
fn what_a_chart_keeps_is_let_go_not_deleted() {
    let group = Group::new("keep");
    let keep = "    helm.sh/resource-policy: keep\n";
    group.write(
        "web",
        "data.yaml",
        &data_config_map(&group, "data", "1", keep),
    );
    group.write(
        "web",
        "other.yaml",
        &data_config_map(&group, "other", "1", ""),
    );
    common::commit_all(group.repo.path(), "v1");
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");

    group.remove("web", Some("data.yaml"));
    common::commit_all(group.repo.path(), "v2");
    let (code, report, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(op_of(&report, "ConfigMap/data"), "orphan");
    assert_eq!(live_value(&group, "data").as_deref(), Some("1"), "kept");
    assert_eq!(group.managed_config_maps(), ["other"], "no longer managed");
}
