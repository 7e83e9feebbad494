//! The Kubernetes side of the environment is real: the scheduler places a Deployment's pods on
//! the kwok nodes, the controllers report them available, and a Job completes.

mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::await_condition;
use umbrella::adapters::cluster::Cluster;

use common::{testenv, unique};

const READY_WITHIN: Duration = Duration::from_secs(90);

async fn cluster() -> Cluster {
    Cluster::connect(Some(&testenv("UMBRELLA_TEST_KUBE_CONTEXT")))
        .await
        .expect("the kubeconfig of the environment")
}

async fn create_namespace(cluster: &Cluster) -> String {
    let name = unique("envcheck");
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
    Api::<Namespace>::all(cluster.client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create namespace");
    name
}

async fn delete_namespace(cluster: &Cluster, name: &str) {
    Api::<Namespace>::all(cluster.client.clone())
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete namespace");
}

fn deployment(image: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]}
            }
        }
    }))
    .expect("deployment")
}

fn job(image: &str) -> Job {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "once"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "once", "image": image, "command": ["true"]}]
                }
            }
        }
    }))
    .expect("job")
}

#[tokio::test]
async fn deployment_pods_run_on_kwok_nodes_through_the_real_controllers() {
    let cluster = cluster().await;
    let version = cluster.server_version().await.expect("server version");
    assert!(version.starts_with("v1."), "API server version {version}");
    let namespace = create_namespace(&cluster).await;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &namespace);
    deployments
        .create(
            &PostParams::default(),
            &deployment(&testenv("UMBRELLA_TEST_THIRD_PARTY_IMAGE")),
        )
        .await
        .expect("create deployment");

    let available = await_condition(deployments.clone(), "web", |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| s.available_replicas)
            == Some(3)
    });
    tokio::time::timeout(READY_WITHIN, available)
        .await
        .expect("the Deployment did not report 3 available replicas in time")
        .expect("watch the Deployment");

    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &namespace)
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list pods");
    assert_eq!(pods.items.len(), 3);
    for pod in &pods.items {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        assert!(node.starts_with("kwok-node-"), "pod scheduled on {node:?}");
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        assert_eq!(phase.as_deref(), Some("Running"));
    }
    delete_namespace(&cluster, &namespace).await;
}

#[tokio::test]
async fn job_reaches_complete() {
    let cluster = cluster().await;
    let namespace = create_namespace(&cluster).await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &namespace);
    jobs.create(
        &PostParams::default(),
        &job(&testenv("UMBRELLA_TEST_THIRD_PARTY_IMAGE")),
    )
    .await
    .expect("create job");
    let complete = await_condition(jobs, "once", |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            })
    });
    tokio::time::timeout(READY_WITHIN, complete)
        .await
        .expect("the Job did not complete in time")
        .expect("watch the Job");
    delete_namespace(&cluster, &namespace).await;
}
