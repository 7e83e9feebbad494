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
        let repo = tempfile::tempdir().expect("temp dir");
        git2::Repository::init(repo.path()).expect("git init");
        let env = unique(prefix);
        let group = Group { repo, env };
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

    /// Runs `umbrella <verb> [app-group] ENV --context ... <extra>` in the repository.
    pub fn run(&self, verb: &[&str], extra: &[&str]) -> (i32, String, String) {
        let mut args = verb.to_vec();
        args.extend([self.env.as_str(), "--context", "umbrella-test"]);
        args.extend(extra);
        umbrella(self.repo.path(), &args, &[])
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

pub fn image() -> String {
    testenv("UMBRELLA_TEST_THIRD_PARTY_IMAGE")
}
