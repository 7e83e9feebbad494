//! `umbrella deploy app-group` on the local control plane: real API server, real controllers,
//! kwok nodes.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::Api;
use serde_json::Value;

use common::group::{Group, client, crd, image, widgets};
use common::proxy::FaultProxy;
use common::token_registry::{TokenRegistry, seed_plain};
use common::{api_server, kubeconfig_via, testenv, umbrella, unique};

fn ops(report: &Value) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = report["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("no objects in {report}"))
        .iter()
        .map(|o| {
            (
                o["object"].as_str().unwrap_or_default().to_string(),
                format!(
                    "{}:{}",
                    o["op"].as_str().unwrap_or_default(),
                    o["result"].as_str().unwrap_or_default()
                ),
            )
        })
        .collect();
    list.sort();
    list
}

/// Every object of a deploy's report is `unchanged`, but `changed`, which is updated.
fn only_updated(found: &[(String, String)], changed: &str) {
    for (object, op) in found {
        let expected = if object == changed {
            "update:ok"
        } else {
            "unchanged:ok"
        };
        assert_eq!(op, expected, "{object}: {found:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_redeploy_update_prune_and_delete_an_app() {
    let group = Group::new("grp");
    let env = group.env.clone();
    group.write("web", "configmap.yaml", &group.config_map("settings"));
    group.write(
        "web",
        "deployment.yaml",
        &group.deployment("web", &image(), ""),
    );
    group.write("web", "limits.yaml", &group.config_map("limits"));
    group.write("extra", "configmap.yaml", &group.config_map("extra"));
    common::commit_all(group.repo.path(), "state v1");
    let g = &group;
    let (code, report, err) = tokio::task::block_in_place(|| g.deploy(&[]));
    assert_eq!(code, 0, "{err}");
    assert!(
        ops(&report).iter().all(|(_, op)| op == "create:ok"),
        "{report}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client().await, &env);
    let web = deployments.get("web").await.expect("deployment");
    assert_eq!(
        web.status.and_then(|s| s.available_replicas),
        Some(2),
        "deploy returned before the rollout"
    );
    assert_eq!(
        web.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("umbrella.dev/app"))
            .map(String::as_str),
        Some(format!("{env}-web").as_str())
    );

    let (code, report, err) = tokio::task::block_in_place(|| g.deploy(&[]));
    assert_eq!(code, 0, "{err}");
    assert!(
        ops(&report).iter().all(|(_, op)| op == "unchanged:ok"),
        "a redeploy changed something: {report}"
    );

    // A new image: kwok runs no containers, so the tag need not exist; the rollout is real.
    let new_image = image().replace(":1.35", ":1.36");
    group.write(
        "web",
        "deployment.yaml",
        &group.deployment("web", &new_image, ""),
    );
    let v2 = common::commit_all(group.repo.path(), "state v2");
    let (code, report, err) = tokio::task::block_in_place(|| g.deploy(&[]));
    assert_eq!(code, 0, "{err}");
    // The app's state commit is new, but only the Deployment changed: its siblings are
    // unchanged, as `diff` shows them (#13), not updated for the state-commit annotation.
    let changed = format!("Deployment/web in {env}");
    let found = ops(&report);
    assert_eq!(found.len(), 5, "{found:?}");
    only_updated(&found, &changed);
    let web = deployments.get("web").await.expect("deployment");
    assert_eq!(
        web.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("umbrella.dev/state-commit")),
        Some(&v2),
        "the Deployment was applied as of the new state commit"
    );
    let status = web.status.expect("status");
    assert_eq!(status.updated_replicas, Some(2));
    assert_eq!(status.replicas, Some(2), "old pods were waited away");
    let spec_image = web
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].image.clone());
    assert_eq!(spec_image.flatten(), Some(new_image));
    assert_eq!(
        status.observed_generation, web.metadata.generation,
        "the new generation was waited for"
    );

    group.remove("web", Some("configmap.yaml"));
    group.remove("extra", None);
    let (code, report, err) = tokio::task::block_in_place(|| g.deploy(&[]));
    assert_eq!(code, 0, "{err}");
    let ops = ops(&report);
    assert!(
        ops.contains(&(
            format!("ConfigMap/settings in {env}"),
            "delete:ok".to_string()
        )),
        "{ops:?}"
    );
    assert!(
        ops.contains(&(format!("ConfigMap/extra in {env}"), "delete:ok".to_string())),
        "{ops:?}"
    );
    assert_eq!(
        report["deletedApps"],
        serde_json::json!([format!("{env}-extra")])
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(client().await, &env);
    assert!(
        config_maps
            .get_opt("settings")
            .await
            .expect("get")
            .is_none(),
        "pruned object still there"
    );
    assert!(
        config_maps.get_opt("extra").await.expect("get").is_none(),
        "deleted app's object still there"
    );
    assert!(
        deployments.get_opt("web").await.expect("get").is_some(),
        "the deployed app must survive"
    );
    let inventories: Api<ConfigMap> = Api::namespaced(client().await, "umbrella-system");
    assert!(
        inventories
            .get_opt(&format!("umbrella.{env}.extra"))
            .await
            .expect("get")
            .is_none()
    );
    let inventory = inventories
        .get(&format!("umbrella.{env}.web"))
        .await
        .expect("inventory of web");
    let objects = &inventory.data.expect("data")["objects"];
    assert!(
        objects.contains("\"Deployment\"") && !objects.contains("settings"),
        "{objects}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_before_a_deployment_and_a_crd_before_its_resources() {
    let group = Group::new("order");
    let env = group.env.clone();
    let crd_group = format!("{env}.example.com");
    group.write("app", "crd.yaml", &crd(&crd_group, "Widget", "Namespaced"));
    group.write("app", "widget.yaml", &format!("apiVersion: {crd_group}/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: {env}\nspec:\n  size: 3\n"));
    group.write(
        "app",
        "job.yaml",
        &format!("apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  namespace: {env}\n  annotations:\n    kapp.k14s.io/change-group: shop.example/db-migrations\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: m\n        image: {}\n", image()),
    );
    let deployment = group.deployment("api", &image(), "").replace(
        &format!("  namespace: {env}\n"),
        &format!("  namespace: {env}\n  annotations:\n    kapp.k14s.io/change-rule: upsert after upserting shop.example/db-migrations\n"),
    );
    group.write("app", "deployment.yaml", &deployment);
    let (code, report, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}\n{report}");
    let client = client().await;
    let job = Api::<Job>::namespaced(client.clone(), &env)
        .get("migrate")
        .await
        .expect("job");
    let completed = job
        .status
        .and_then(|s| s.completion_time)
        .expect("the Job completed");
    let created = Api::<Deployment>::namespaced(client.clone(), &env)
        .get("api")
        .await
        .expect("deployment")
        .metadata
        .creation_timestamp
        .expect("created");
    assert!(
        created.0 >= completed.0,
        "the Deployment was created before the Job completed"
    );
    let widget = widgets(&crd_group, &env).await;
    assert!(
        widget.get_opt("w").await.expect("get").is_some(),
        "the custom resource was applied after its CRD"
    );

    // Pruning runs the order backwards: the custom resource goes before its CRD.
    group.remove("app", Some("crd.yaml"));
    group.remove("app", Some("widget.yaml"));
    let (code, report, err) = tokio::task::block_in_place(|| group.deploy(&[]));
    assert_eq!(code, 0, "{err}");
    let deleted: Vec<&str> = report["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter(|o| o["op"] == "delete")
        .filter_map(|o| o["object"].as_str())
        .collect();
    let position = |prefix: &str| {
        deleted
            .iter()
            .position(|o| o.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} not deleted: {deleted:?}"))
    };
    assert!(
        position("Widget/w") < position("CustomResourceDefinition/"),
        "{deleted:?}"
    );
}

/// The waits of a deploy share their watches: a dozen Deployments of one namespace cost three
/// (the Deployments, the pods, the Warning events), not three each. Over HTTP/1.1 each watch
/// holds a connection of its own, so the connections opened tell.
#[test]
fn the_waits_of_one_namespace_share_their_watches() {
    let group = Group::new("shared");
    for i in 0..12 {
        let name = format!("web-{i}");
        // Available 3 s after their pods are ready: the waits overlap.
        let deployment = group
            .deployment(&name, &image(), "")
            .replace("  replicas: 2\n", "  replicas: 2\n  minReadySeconds: 3\n");
        group.write("app", &format!("{name}.yaml"), &deployment);
    }
    let proxy = FaultProxy::start(&api_server());
    let scratch = tempfile::tempdir().expect("temp dir");
    let kubeconfig = kubeconfig_via(&proxy, scratch.path());
    let kubeconfig = kubeconfig.to_str().expect("utf-8");
    let (code, err) = group
        .start_with(&["--concurrency", "2"], &[("KUBECONFIG", kubeconfig)], "")
        .finish();
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("Deployment/web-11") && err.contains("ready"),
        "{err}"
    );
    // Waits with watches of their own opened at least 36 connections.
    let connections = proxy.connections();
    assert!(connections < 20, "{connections} connections: {err}");
}

#[test]
fn a_failing_pod_fails_the_deploy_fast_with_its_reason() {
    let group = Group::new("fail");
    // kwok makes these pods Running, then fails their container a second or two later; the
    // Deployment only counts them available after minReadySeconds, so the failure comes first.
    let labels = "        pod-container-running-failed.stage.kwok.x-k8s.io: \"true\"\n";
    let deployment = group
        .deployment("crashy", &image(), labels)
        .replace("  replicas: 2\n", "  replicas: 2\n  minReadySeconds: 20\n");
    group.write("app", "deployment.yaml", &deployment);
    let started = Instant::now();
    let (code, report, err) = group.deploy(&["--wait-timeout", "5m"]);
    assert_eq!(code, 1, "{err}\n{report}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}: not fast",
        started.elapsed()
    );
    assert!(
        err.contains("Deployment/crashy")
            && err.contains("container main")
            && err.contains("containerFailed"),
        "{err}"
    );
    let failed = report["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["result"] == "failed")
        .expect("a failed object in the report");
    assert!(
        failed["object"]
            .as_str()
            .expect("object")
            .contains("crashy")
    );
}

#[test]
fn an_object_that_never_gets_ready_times_out_by_name() {
    let group = Group::new("slow");
    let deployment = group.deployment("nowhere", &image(), "").replace(
        "    spec:\n      containers:",
        "    spec:\n      nodeSelector:\n        no-such-node: \"true\"\n      containers:",
    );
    group.write("app", "deployment.yaml", &deployment);
    let (code, report, err) = group.deploy(&["--wait-timeout", "3s"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("timed out") && err.contains("Deployment/nowhere"),
        "{err}"
    );
    assert!(
        report["durationMs"].as_u64().is_some_and(|ms| ms >= 3000),
        "the summary must say how long it ran: {report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_and_unknown_kinds_apply_nothing() {
    let group = Group::new("bad");
    let env = group.env.clone();
    group.write("a", "configmap.yaml", &group.config_map("same"));
    group.write("b", "configmap.yaml", &group.config_map("same"));
    group.write("b", "thing.yaml", &format!("apiVersion: nowhere.example.com/v1\nkind: Thing\nmetadata:\n  name: t\n  namespace: {env}\n"));
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("ConfigMap/same in {env} is defined twice")),
        "{err}"
    );
    assert!(err.contains("nothing was applied"), "{err}");
    group.remove("a", None);
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("Thing/t") && err.contains("the cluster does not know this kind"),
        "{err}"
    );
    let namespaces: Api<Namespace> = Api::all(client().await);
    assert!(
        namespaces.get_opt(&env).await.expect("get").is_none(),
        "something was applied"
    );
}

#[test]
fn a_killed_deploy_converges_when_run_again() {
    let group = Group::new("kill");
    for i in 0..6 {
        group.write(
            "app",
            &format!("cm-{i}.yaml"),
            &group.config_map(&format!("cm-{i}")),
        );
    }
    group.write(
        "app",
        "deployment.yaml",
        &group.deployment("slow", &image(), ""),
    );
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    // Remove some objects and add others, then kill the deploy while it runs.
    group.remove("app", Some("cm-0.yaml"));
    group.remove("app", Some("cm-1.yaml"));
    group.write("app", "cm-new.yaml", &group.config_map("cm-new"));
    group.write(
        "app",
        "deployment.yaml",
        &group.deployment("slow", &image(), "        rev: two\n"),
    );
    group.start(&[], "applying").kill();
    // The lock of the killed run expires; the next run takes it over and converges.
    let (code, report, err) = group.deploy(&["--lock-timeout", "60s"]);
    assert_eq!(code, 0, "{err}");
    let ops = ops(&report);
    for gone in ["cm-0", "cm-1"] {
        assert!(
            ops.iter()
                .any(|(o, op)| o.starts_with(&format!("ConfigMap/{gone} ")) && op == "delete:ok")
                || !ops.iter().any(|(o, _)| o.contains(gone)),
            "{ops:?}"
        );
    }
    let (_, again, _) = group.deploy(&[]);
    assert!(
        self::ops(&again).iter().all(|(_, op)| op == "unchanged:ok"),
        "{again}"
    );
    let names = group.managed_config_maps().join(" ");
    assert!(
        !names.contains("cm-0") && !names.contains("cm-1") && names.contains("cm-new"),
        "orphans left: {names}"
    );
}

#[test]
fn a_second_deploy_of_the_same_group_is_refused_while_the_first_runs() {
    let group = Group::new("lock");
    // The first deploy waits on a Deployment whose pods cannot be scheduled: it holds the lock.
    let waiting = group.deployment("held", &image(), "").replace(
        "    spec:\n      containers:",
        "    spec:\n      nodeSelector:\n        no-such-node: \"true\"\n      containers:",
    );
    group.write("app", "deployment.yaml", &waiting);
    let first = group.start(&["--wait-timeout", "60s"], "waiting");
    let (code, _, err) = group.deploy(&[]);
    first.kill();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("holds the lock")
            && err.contains("Lease umbrella-system/umbrella-lock-")
            && err.contains("holder"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_group_is_built_rendered_committed_and_deployed() {
    let registry = testenv("UMBRELLA_TEST_REGISTRY_A");
    let (repo, prefix) = common::fresh_example(&registry);
    common::commit_all(repo.path(), "sources");
    // An environment of its own: the example's namespace is the environment's name.
    let env = unique("example");
    let dir = repo.path().to_path_buf();
    let run = |args: Vec<String>| {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            umbrella(
                &dir,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
                &[],
            )
        })
    };
    let (code, _, err) = run(vec!["ci".into(), "--env".into(), env.clone()])
        .await
        .expect("ci");
    assert_eq!(code, 0, "{err}");
    let deploy = vec![
        "deploy".into(),
        "app-group".into(),
        env.clone(),
        "--yes".into(),
        "-o".into(),
        "json".into(),
    ];
    let (code, out, err) = run(deploy.clone()).await.expect("deploy");
    let cleanup = Group {
        repo: tempfile::tempdir().expect("temp dir"),
        env: env.clone(),
    };
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).expect("report");
    let apps: std::collections::BTreeSet<&str> = report["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter_map(|o| o["app"].as_str())
        .collect();
    assert_eq!(
        apps,
        [
            format!("{env}-order-service"),
            format!("{env}-shop"),
            format!("{env}-user-service")
        ]
        .iter()
        .map(String::as_str)
        .collect()
    );
    let deployments: Api<Deployment> = Api::namespaced(client().await, &env);
    for name in ["order-service", "user-service"] {
        let deployment = deployments.get(name).await.expect("deployment");
        assert_eq!(
            deployment.status.and_then(|s| s.available_replicas),
            Some(2),
            "{name}"
        );
        let commit = deployment
            .metadata
            .annotations
            .unwrap_or_default()
            .remove("umbrella.dev/state-commit")
            .unwrap_or_default();
        assert_eq!(commit.len(), 40, "the state commit annotation: {commit}");
    }
    let (code, out, _) = run(deploy.clone()).await.expect("redeploy");
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).expect("report");
    assert!(
        ops(&report).iter().all(|(_, op)| op == "unchanged:ok"),
        "{report}"
    );

    // A new release that changes only the third-party image of the log shipper (#13): history
    // shows that image under it, and the deploy updates the one object that uses it.
    let shipper = format!("{prefix}/log-shipper");
    let seeded = (registry.clone(), shipper.clone());
    tokio::task::spawn_blocking(move || seed_plain(&seeded.0, &seeded.1, &["1.36".into()]))
        .await
        .expect("seed the new third-party image");
    let values = repo.path().join("umbrella-chart/values.yaml");
    let text = std::fs::read_to_string(&values).expect("values.yaml");
    let old_shipper = "127.0.0.1:5000/mirror/busybox:1.35";
    assert!(text.contains(old_shipper), "{text}");
    let text = text.replace(old_shipper, &format!("{registry}/{shipper}:1.36"));
    std::fs::write(&values, text).expect("write values.yaml");
    common::commit_all(repo.path(), "log shipper 1.36");
    let (code, _, err) = run(vec!["ci".into(), "--env".into(), env.clone()])
        .await
        .expect("ci");
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(deploy).await.expect("deploy the new release");
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).expect("report");
    let found = ops(&report);
    let changed = format!("Deployment/order-service in {env}");
    assert!(found.iter().any(|(o, _)| *o == changed), "{found:?}");
    only_updated(&found, &changed);

    let (code, out, err) = run(vec!["history".into(), env.clone()])
        .await
        .expect("history");
    assert_eq!(code, 0, "{err}");
    // Each release's line, then the images it changed.
    let mut releases: Vec<(String, Vec<String>)> = Vec::new();
    for line in out.lines() {
        match line.trim().strip_prefix("image ") {
            Some(image) => releases
                .last_mut()
                .unwrap_or_else(|| panic!("an image before any release: {out}"))
                .1
                .push(image.to_string()),
            None if line.contains("umbrella: render") => {
                releases.push((line.to_string(), Vec::new()))
            }
            None => {}
        }
    }
    assert_eq!(releases.len(), 2, "{out}");
    let new_shipper = format!("{registry}/{shipper}@{}", TokenRegistry::seeded_digest());
    assert!(
        releases[0].0.starts_with('*'),
        "the new release is live: {out}"
    );
    assert_eq!(releases[0].1, [new_shipper], "{out}");
    let first: Vec<&str> = releases[1].1.iter().map(String::as_str).collect();
    assert_eq!(
        first.len(),
        3,
        "two built images and the log shipper: {out}"
    );
    assert!(
        first
            .iter()
            .any(|i| i.starts_with("127.0.0.1:5000/mirror/busybox@sha256:")),
        "{out}"
    );
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_earlier_revision_deploys_from_git_without_touching_the_work_tree() {
    let group = Group::new("rev");
    let env = group.env.clone();
    group.write("app", "a.yaml", &group.config_map("a"));
    common::commit_all(group.repo.path(), "state v1");
    let (code, _, err) = tokio::task::block_in_place(|| group.deploy(&[]));
    assert_eq!(code, 0, "{err}");
    group.write("app", "b.yaml", &group.config_map("b"));
    common::commit_all(group.repo.path(), "state v2");
    let (code, _, err) = tokio::task::block_in_place(|| group.deploy(&[]));
    assert_eq!(code, 0, "{err}");

    let (code, report, err) =
        tokio::task::block_in_place(|| group.deploy(&["--revision", "HEAD~1"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        ops(&report).contains(&(format!("ConfigMap/b in {env}"), "delete:ok".to_string())),
        "{report}"
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(client().await, &env);
    assert!(config_maps.get_opt("b").await.expect("get").is_none());
    let a = config_maps.get("a").await.expect("a");
    let v1 = git2::Repository::open(group.repo.path())
        .expect("repo")
        .revparse_single("HEAD~1")
        .expect("rev")
        .id()
        .to_string();
    assert_eq!(
        a.metadata
            .annotations
            .unwrap_or_default()
            .get("umbrella.dev/state-commit"),
        Some(&v1)
    );
    assert!(
        group.app_dir("app").join("b.yaml").exists(),
        "the work tree was changed"
    );

    let (code, _, err) =
        tokio::task::block_in_place(|| group.deploy(&["--revision", "no-such-rev"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("revision `no-such-rev`"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn history_marks_the_live_commit_and_rollback_deploys_the_one_before() {
    let group = Group::new("hist");
    let env = group.env.clone();
    group.write("app", "a.yaml", &group.config_map("a"));
    let v1 = common::commit_all(group.repo.path(), "state v1");
    assert_eq!(tokio::task::block_in_place(|| group.deploy(&[])).0, 0);
    group.write("app", "b.yaml", &group.config_map("b"));
    let v2 = common::commit_all(group.repo.path(), "state v2");
    assert_eq!(tokio::task::block_in_place(|| group.deploy(&[])).0, 0);
    let history = |group: &Group| {
        let (code, out, err) = group.run(&["history"], &["-o", "json"]);
        assert_eq!(code, 0, "{err}");
        let entries: Vec<Value> = serde_json::from_str(&out).expect("history JSON");
        entries
            .iter()
            .map(|e| {
                (
                    e["sha"].as_str().unwrap_or_default().to_string(),
                    e["live"] == true,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tokio::task::block_in_place(|| history(&group)),
        vec![(v2.clone(), true), (v1.clone(), false)]
    );

    let (code, out, err) = tokio::task::block_in_place(|| group.run(&["rollback"], &["--yes"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains(&format!("as of {v1}")), "{err}");
    let config_maps: Api<ConfigMap> = Api::namespaced(client().await, &env);
    assert!(
        config_maps.get_opt("b").await.expect("get").is_none(),
        "rollback did not remove b"
    );
    assert_eq!(
        tokio::task::block_in_place(|| history(&group)),
        vec![(v2, false), (v1, true)]
    );

    let (code, _, err) = tokio::task::block_in_place(|| group.run(&["rollback"], &["--yes"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no state commit"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_removes_everything_and_leaves_no_inventory() {
    let group = Group::new("del");
    let env = group.env.clone();
    group.write("app", "a.yaml", &group.config_map("a"));
    group.write(
        "app",
        "deployment.yaml",
        &group.deployment("web", &image(), ""),
    );
    assert_eq!(tokio::task::block_in_place(|| group.deploy(&[])).0, 0);
    let (code, out, err) = tokio::task::block_in_place(|| {
        group.run(&["delete", "app-group"], &["--yes", "-o", "json"])
    });
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).expect("report");
    assert!(
        ops(&report).iter().all(|(_, op)| op == "delete:ok"),
        "{report}"
    );
    let client = client().await;
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt(&env)
            .await
            .expect("get")
            .is_none_or(|n| n.metadata.deletion_timestamp.is_some())
    );
    assert!(
        Api::<Deployment>::namespaced(client.clone(), &env)
            .get_opt("web")
            .await
            .expect("get")
            .is_none()
    );
    let inventories: Api<ConfigMap> = Api::namespaced(client, "umbrella-system");
    let left = inventories
        .list(&kube::api::ListParams::default().labels(&format!("umbrella.dev/group={env}")))
        .await
        .expect("list");
    assert!(
        left.items.is_empty(),
        "inventories left: {:?}",
        left.items
            .iter()
            .map(|i| i.metadata.name.clone())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_an_earlier_wave_took_away_is_applied_again_though_the_preflight_found_it_unchanged() {
    // A CRD replaced on every deploy takes its custom resources with it: the preflight, before
    // the replacement, finds the Widget unchanged; its wave must see that it is gone.
    let group = Group::new("relist");
    let env = group.env.clone();
    let crd_group = format!("{env}.example.com");
    let replaced = crd(&crd_group, "Widget", "Namespaced").replace(
        "metadata:\n",
        "metadata:\n  annotations:\n    kapp.k14s.io/update-strategy: always-replace\n",
    );
    group.write("app", "crd.yaml", &replaced);
    group.write(
        "app",
        "widget.yaml",
        &format!("apiVersion: {crd_group}/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: {env}\nspec:\n  size: 3\n"),
    );
    let (code, _, err) = tokio::task::block_in_place(|| group.deploy(&[]));
    assert_eq!(code, 0, "{err}");

    let (code, report, err) = tokio::task::block_in_place(|| group.deploy(&[]));
    assert_eq!(code, 0, "{err}");
    let ops = ops(&report);
    assert!(
        ops.contains(&(format!("Widget/w in {env}"), "create:ok".to_string())),
        "{ops:?}"
    );
    let widget = widgets(&crd_group, &env).await;
    assert!(
        widget.get_opt("w").await.expect("get").is_some(),
        "the custom resource is gone with its replaced CRD"
    );
}
