//! An app group of the test cluster: a git repository whose state has one environment, named
//! after the test, in its own namespace; removed from the cluster when dropped.

use std::process::{Command, Stdio};

use serde_json::Value;
use umbrella::adapters::cluster::Cluster;

use super::{testenv, umbrella, unique};

/// A repository whose state has one environment (named after the test) in its own namespace.
pub struct Group {
    pub repo: tempfile::TempDir,
    pub env: String,
}

impl Group {
    pub fn new(prefix: &str) -> Self {
        Group::named(&unique(prefix))
    }

    /// A group of environment `env` exactly (a DNS label).
    pub fn named(env: &str) -> Self {
        let repo = tempfile::tempdir().expect("temp dir");
        git2::Repository::init(repo.path()).expect("git init");
        let group = Group {
            repo,
            env: env.to_string(),
        };
        group.write(
            "base",
            "namespace.yaml",
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n",
                group.env
            ),
        );
        group
    }

    pub fn app_dir(&self, app: &str) -> std::path::PathBuf {
        self.repo
            .path()
            .join("umbrella-state")
            .join(&self.env)
            .join(app)
    }

    pub fn write(&self, app: &str, file: &str, yaml: &str) {
        let dir = self.app_dir(app);
        std::fs::create_dir_all(&dir).expect("app dir");
        std::fs::write(dir.join(file), yaml).expect("write object");
    }

    pub fn remove(&self, app: &str, file: Option<&str>) {
        match file {
            Some(file) => {
                std::fs::remove_file(self.app_dir(app).join(file)).expect("remove object")
            }
            None => std::fs::remove_dir_all(self.app_dir(app)).expect("remove app"),
        }
    }

    pub fn deploy(&self, extra: &[&str]) -> (i32, Value, String) {
        let mut args = vec!["--yes", "-o", "json"];
        args.extend(extra);
        let (code, out, err) = self.run(&["deploy", "app-group"], &args);
        (code, serde_json::from_str(&out).unwrap_or(Value::Null), err)
    }

    /// Whether the group's deploy lock (its Lease) is on the cluster.
    pub fn lock_held(&self) -> bool {
        let lease = format!("umbrella-lock-{}", self.env);
        std::process::Command::new("kubectl")
            .args(["--context", "umbrella-test", "-n", "umbrella-system"])
            .args(["get", "lease", lease.as_str()])
            .output()
            .expect("kubectl")
            .status
            .success()
    }

    /// Runs `umbrella <verb> [app-group] ENV --context ... <extra>` in the repository.
    pub fn run(&self, verb: &[&str], extra: &[&str]) -> (i32, String, String) {
        let mut args = verb.to_vec();
        args.extend([self.env.as_str(), "--context", "umbrella-test"]);
        args.extend(extra);
        umbrella(self.repo.path(), &args, &[])
    }

    /// Starts `deploy app-group` and returns once its stderr shows `marker`; the rest of its
    /// stderr is collected by [`Running::finish`].
    pub fn start(&self, extra: &[&str], marker: &str) -> Running {
        self.start_with(extra, &[], marker)
    }

    /// [`Group::start`] with extra environment variables (e.g. another `KUBECONFIG`).
    pub fn start_with(&self, extra: &[&str], env: &[(&str, &str)], marker: &str) -> Running {
        let mut child = super::umbrella_command()
            .args([
                "deploy",
                "app-group",
                &self.env,
                "--yes",
                "--context",
                "umbrella-test",
            ])
            .args(extra)
            .envs(env.iter().copied())
            .current_dir(self.repo.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start deploy");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        let mut seen = String::new();
        for line in lines.by_ref().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(marker) {
                break;
            }
        }
        let rest = std::thread::spawn(move || {
            lines
                .map_while(Result::ok)
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        });
        Running {
            child,
            seen,
            rest: Some(rest),
        }
    }

    /// `deploy app-group` on a thread: its exit code, stdout and stderr when joined.
    pub fn deploy_in_background(
        &self,
        extra: &[&str],
    ) -> std::thread::JoinHandle<(i32, String, String)> {
        let env = self.env.clone();
        let repo = self.repo.path().to_path_buf();
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        std::thread::spawn(move || {
            let mut args = vec![
                "deploy",
                "app-group",
                &env,
                "--context",
                "umbrella-test",
                "--yes",
            ];
            args.extend(extra.iter().map(String::as_str));
            umbrella(&repo, &args, &[])
        })
    }

    /// A Service whose wait never ends (nothing gives a LoadBalancer an address here), or is
    /// not waited for.
    pub fn load_balancer(&self, waited: bool) -> String {
        let annotation = if waited {
            ""
        } else {
            "  annotations:\n    kapp.k14s.io/disable-wait: \"true\"\n"
        };
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: lb\n  namespace: {}\n{annotation}spec:\n  type: LoadBalancer\n  selector:\n    app: none\n  ports:\n  - port: 80\n",
            self.env
        )
    }

    /// The names of the ConfigMaps umbrella manages in the group's namespace, sorted.
    pub fn managed_config_maps(&self) -> Vec<String> {
        let output = Command::new("kubectl")
            .args([
                "--context",
                "umbrella-test",
                "-n",
                &self.env,
                "get",
                "configmaps",
            ])
            .args(["-l", "app.kubernetes.io/managed-by=umbrella", "-o", "name"])
            .output()
            .expect("kubectl");
        let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.trim_start_matches("configmap/").to_string())
            .collect();
        names.sort();
        names
    }

    pub fn config_map(&self, name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {}\ndata:\n  k: v\n",
            self.env
        )
    }

    pub fn deployment(&self, name: &str, image: &str, pod_labels: &str) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n{pod_labels}    spec:\n      containers:\n      - name: main\n        image: {image}\n",
            ns = self.env
        )
    }
}

/// A deploy running in the background.
pub struct Running {
    pub child: std::process::Child,
    /// Its stderr up to the marker.
    pub seen: String,
    rest: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    /// Waits for it to exit: its exit code and all of its stderr.
    pub fn finish(mut self) -> (i32, String) {
        let status = self.child.wait().expect("wait for deploy");
        let rest = self
            .rest
            .take()
            .map(|r| r.join().expect("stderr"))
            .unwrap_or_default();
        (status.code().unwrap_or(-1), format!("{}{rest}", self.seen))
    }

    /// Its exit code, if it has exited by now.
    pub fn exited(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .expect("poll deploy")
            .map(|s| s.code().unwrap_or(-1))
    }

    /// Kills it and waits for it to go.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(rest) = self.rest.take() {
            let _ = rest.join();
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // Leave the shared cluster clean whatever the test's outcome.
        kubectl_quietly(&["delete", "namespace", &self.env, "--wait=false"]);
        kubectl_quietly(&[
            "-n",
            "umbrella-system",
            "delete",
            "configmap",
            "-l",
            &format!("umbrella.dev/group={}", self.env),
        ]);
    }
}

/// Runs kubectl on the test cluster, its output and outcome ignored (cleanups, churn).
pub fn kubectl_quietly(args: &[&str]) {
    let _ = Command::new("kubectl")
        .args(["--context", "umbrella-test"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub async fn client() -> kube::Client {
    Cluster::connect(Some(&testenv("UMBRELLA_TEST_KUBE_CONTEXT")))
        .await
        .expect("cluster")
        .client
}

/// A CRD of kind `kind` (plural `<kind lowercased>s`) in API group `group`, of `scope`
/// (`Namespaced` or `Cluster`), any field allowed.
pub fn crd(group: &str, kind: &str, scope: &str) -> String {
    let singular = kind.to_lowercase();
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {singular}s.{group}\nspec:\n  group: {group}\n  scope: {scope}\n  names: {{plural: {singular}s, singular: {singular}, kind: {kind}}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n"
    )
}

/// The Widgets (of [`crd`]) of API group `group` in `namespace`.
pub async fn widgets(group: &str, namespace: &str) -> kube::Api<kube::api::DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk(group, "v1", "Widget");
    let resource = kube::discovery::ApiResource::from_gvk(&gvk);
    kube::Api::namespaced_with(client().await, namespace, &resource)
}

pub fn image() -> String {
    testenv("UMBRELLA_TEST_THIRD_PARTY_IMAGE")
}
