//! The safety guarantees, each against the real local environment: one deploy of a group at a
//! time (even when a deploy's API connection stalls), nothing written outside
//! `umbrella-state/ENV`, and nothing deleted that the state still wants.

mod common;

use std::time::{Duration, Instant};

use common::group::Group;
use common::latency::SlowProxy;
use common::proxy::FaultProxy;
use common::{api_server, kubeconfig_via};

#[test]
fn a_deploy_that_cannot_renew_its_lock_stops_by_the_clock_and_the_next_one_takes_over_cleanly() {
    let group = Group::new("fence");
    for name in ["keep", "old-1", "old-2"] {
        group.write("app", &format!("{name}.yaml"), &group.config_map(name));
    }
    group.write("app", "lb.yaml", &group.load_balancer(true));
    // Deploy A talks to the API server through a proxy, and waits on the load balancer.
    let proxy = FaultProxy::start(&api_server());
    let scratch = tempfile::tempdir().expect("temp dir");
    let kubeconfig = kubeconfig_via(&proxy, scratch.path());
    let kubeconfig = kubeconfig.to_str().expect("utf-8");
    let mut a = group.start_with(
        &["--wait-timeout", "120s"],
        &[("KUBECONFIG", kubeconfig)],
        "waiting for a load balancer address",
    );
    // A's connection stalls: its renewals hang, and nothing it sent is lost, only held.
    // (A's wait would last 120 s: it must stop because it lost the lock.)
    proxy.stall();
    let stalled = Instant::now();
    // B, with a state that prunes what A wanted, asks for the lock 4s into the stall.
    std::thread::sleep(Duration::from_secs(4));
    group.remove("app", Some("old-1.yaml"));
    group.remove("app", Some("old-2.yaml"));
    group.write("app", "new.yaml", &group.config_map("new"));
    group.write("app", "lb.yaml", &group.load_balancer(false));
    let b_started = Instant::now();
    let b = group.deploy_in_background(&["--lock-timeout", "60s", "-o", "json"]);
    // A must give up by the clock, although the API server never answers it.
    let a_exit = loop {
        if let Some(code) = a.exited() {
            break code;
        }
        assert!(
            stalled.elapsed() < Duration::from_secs(30),
            "deploy A still runs {}s into the stall",
            stalled.elapsed().as_secs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let a_stopped = stalled.elapsed();
    let (_, a_err) = a.finish();
    assert_eq!(a_exit, 1, "{a_err}");
    assert!(a_err.contains("lost the deploy lock"), "{a_err}");
    // B took the lock over only after seeing it unrenewed for the lease duration: after A
    // had stopped writing.
    let (b_code, b_out, b_err) = b.join().expect("deploy B");
    assert_eq!(b_code, 0, "{b_out}\n{b_err}");
    let b_took = b_started.elapsed();
    assert!(
        a_stopped < Duration::from_secs(22) && b_took >= Duration::from_secs(30),
        "A stopped {a_stopped:?} into the stall; B needed {b_took:?}"
    );
    // Now A's held bytes reach the API server: they change nothing.
    proxy.resume();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(group.managed_config_maps(), ["keep", "new"]);
    let (code, _, err) = group.run(&["diff", "app-group"], &["--exit-code"]);
    assert_eq!(code, 0, "the cluster is B's state: {err}");
}

fn render(repo: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["render"];
    args.extend(extra);
    common::umbrella(repo, &args, &[])
}

#[test]
fn a_chart_or_a_flag_cannot_write_outside_the_state() {
    let outside = tempfile::tempdir().expect("temp dir");
    let escape = |what: &str| {
        let repo = common::chart_repository(&[("bad.yaml", what)]);
        let (code, out, err) = render(repo.path(), &["--env", "dev"]);
        (repo, code, format!("{out}{err}"))
    };
    let target = outside.path().join("x");
    let by_name = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ../../../../../../../..{}\n",
        target.display()
    );
    let (repo, code, text) = escape(&by_name);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("templates/bad.yaml")
            && text.contains("field metadata.name")
            && text.contains("ConfigMap/"),
        "the file, the object and the field are named: {text}"
    );
    assert!(!target.with_extension("yaml").exists(), "written outside");
    assert!(
        !repo.path().join("umbrella-state").exists(),
        "a partial state"
    );
    let by_kind = "apiVersion: v1\nkind: ../../../../.github/workflows/x\nmetadata:\n  name: z\n";
    let (repo, code, text) = escape(by_kind);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("field kind"), "{text}");
    assert!(
        !repo.path().join(".github").exists(),
        "written outside the state"
    );
    // A flag is input too.
    let repo = common::chart_repository(&[(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fine\n",
    )]);
    let (code, _, err) = render(repo.path(), &["--env", "../x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("environment") && err.contains("../x"), "{err}");
    let (code, _, err) = render(repo.path(), &["--env", "Rel_5_19"]);
    assert_eq!(code, 2, "{err}");
    assert!(!repo.path().join("x").exists() && !repo.path().join("umbrella-state").exists());
    // What a killed render left beside the state goes at the next one.
    let leftover = repo.path().join("umbrella-state/.dev.new-killed");
    common::write_file(leftover.join("app/cm.yaml"), "half written\n");
    let (code, _, err) = render(repo.path(), &["--env", "dev"]);
    assert_eq!(code, 0, "{err}");
    assert!(!leftover.exists(), "a killed render's directory stays");
    assert!(
        repo.path()
            .join("umbrella-state/dev/shop/configmap-fine.yaml")
            .is_file()
    );
}

/// What `dir` holds, by name.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_state_reached_through_a_symbolic_link_is_never_written_or_read() {
    let config_map = (
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fine\n",
    );
    let outside = tempfile::tempdir().expect("temp dir");
    let refused = |repo: &std::path::Path, link: &str| {
        for check in [&[][..], &["--check"][..]] {
            let mut args = vec!["--env", "dev"];
            args.extend(check);
            let (code, out, err) = render(repo, &args);
            assert_eq!(code, 2, "{args:?}: {out}{err}");
            assert!(
                err.contains(&format!("{link}: a symbolic link")),
                "{args:?}: {err}"
            );
        }
        assert!(
            names_in(outside.path()).is_empty(),
            "written through {link}"
        );
    };
    // `umbrella-state` leads elsewhere (a pull request can add such a link).
    let repo = common::chart_repository(&[config_map]);
    let state = repo.path().join("umbrella-state");
    std::os::unix::fs::symlink(outside.path(), &state).expect("symlink");
    refused(repo.path(), "umbrella-state");
    // `umbrella-state/dev` does.
    std::fs::remove_file(&state).expect("unlink");
    std::fs::create_dir(&state).expect("state dir");
    std::os::unix::fs::symlink(outside.path(), state.join("dev")).expect("symlink");
    refused(repo.path(), "umbrella-state/dev");
    assert_eq!(names_in(&state), ["dev"], "something was left beside it");
    // An app directory of the state does.
    std::fs::remove_file(state.join("dev")).expect("unlink");
    let (code, _, err) = render(repo.path(), &["--env", "dev"]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_dir_all(state.join("dev/shop")).expect("remove app");
    std::os::unix::fs::symlink(outside.path(), state.join("dev/shop")).expect("symlink");
    refused(repo.path(), "umbrella-state/dev/shop");
    // Deploy and diff do not read a state through a link either.
    let group = Group::new("envlink");
    group.write("web", "cm.yaml", &group.config_map("linked"));
    let env_dir = group.repo.path().join("umbrella-state").join(&group.env);
    let elsewhere = group.repo.path().join("elsewhere");
    std::fs::rename(&env_dir, &elsewhere).expect("move the state");
    std::os::unix::fs::symlink(&elsewhere, &env_dir).expect("symlink");
    for (verb, extra, exit) in [
        (["deploy", "app-group"], &["--yes"][..], 2),
        (["diff", "app-group"], &[][..], 1),
    ] {
        let (code, out, err) = group.run(&verb, extra);
        assert_eq!(code, exit, "{verb:?}: {out}{err}");
        assert!(
            err.contains(&format!("umbrella-state/{}: a symbolic link", group.env)),
            "{verb:?}: {err}"
        );
    }
    assert!(
        !has_config_map(&group.env, "linked"),
        "deployed through a link"
    );
}

#[test]
fn helm_errors_and_a_missing_values_file_are_bad_input() {
    let repo = common::chart_repository(&[("cm.yaml", "{{ .Values.nope.deeper }}\n")]);
    let (code, _, err) = render(repo.path(), &["--env", "dev"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nil pointer") || err.contains("nope"), "{err}");
    let repo = common::chart_repository(&[(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
    )]);
    let (code, _, err) = render(repo.path(), &["--env", "dev", "-f", "missing-values.yaml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing-values.yaml"), "{err}");
}

/// Whether the group's namespace holds the ConfigMap `name`.
fn has_config_map(namespace: &str, name: &str) -> bool {
    std::process::Command::new("kubectl")
        .args([
            "--context",
            "umbrella-test",
            "-n",
            namespace,
            "get",
            "configmap",
            name,
        ])
        .output()
        .expect("kubectl")
        .status
        .success()
}

fn config_map_in(namespace: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\ndata:\n  k: v\n"
    )
}

#[test]
fn two_environments_whose_app_names_meet_keep_their_inventories_apart() {
    // Environment `E` with app `x-web` and environment `E-x` with app `web` are both named
    // `E-x-web`.
    let a = Group::new("col");
    let b = Group::named(&format!("{}-x", a.env));
    a.write("x-web", "cm.yaml", &a.config_map("a-object"));
    a.write("x-web", "old.yaml", &a.config_map("a-old"));
    b.write("web", "cm.yaml", &b.config_map("b-object"));
    for group in [&a, &b] {
        let (code, _, err) = group.deploy(&[]);
        assert_eq!(code, 0, "{err}");
    }
    // E's next deploy prunes what its own inventory lists, whatever E-x did meanwhile.
    a.remove("x-web", Some("old.yaml"));
    let (code, report, err) = a.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !has_config_map(&a.env, "a-old"),
        "an object of E was orphaned: {report}"
    );
    let (code, out, err) = b.run(&["delete", "app-group"], &["--yes", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !has_config_map(&b.env, "b-object"),
        "delete missed its own object: {out}"
    );
    assert!(
        has_config_map(&a.env, "a-object"),
        "delete took the other environment's"
    );
    let (code, _, err) = a.run(&["diff", "app-group"], &["--exit-code"]);
    assert_eq!(code, 0, "environment {} must be untouched: {err}", a.env);
}

#[test]
fn an_inventory_of_the_old_form_is_read_and_replaced() {
    let group = Group::new("legacy");
    group.write("web", "cm.yaml", &group.config_map("kept"));
    group.write("web", "old.yaml", &group.config_map("old"));
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    // Make the inventory look as the previous version wrote it.
    let env = &group.env;
    let new_name = format!("umbrella.{env}.web");
    let legacy_name = format!("umbrella-app-{env}-web");
    let data =
        kubectl_json(&["-n", "umbrella-system", "get", "configmap", &new_name])["data"].clone();
    let legacy = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": legacy_name, "namespace": "umbrella-system",
            "labels": {"umbrella.dev/inventory": "true", "umbrella.dev/group": env, "umbrella.dev/app": format!("{env}-web")}},
        "data": {"app": data["app"], "objects": data["objects"], "commit": data["commit"], "updated": data["updated"]}});
    kubectl_stdin(&["apply", "-f", "-"], &legacy.to_string());
    common::group::kubectl_quietly(&["-n", "umbrella-system", "delete", "configmap", &new_name]);
    // The next deploy prunes by the old inventory and writes the new one in its place.
    group.remove("web", Some("old.yaml"));
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !has_config_map(env, "old"),
        "the old inventory's object was not pruned"
    );
    assert!(has_config_map(env, "kept"));
    assert!(has_config_map("umbrella-system", &new_name));
    assert!(!has_config_map("umbrella-system", &legacy_name));
}

fn kubectl_json(args: &[&str]) -> serde_json::Value {
    let output = std::process::Command::new("kubectl")
        .args(["--context", "umbrella-test"])
        .args(args)
        .args(["-o", "json"])
        .output()
        .expect("kubectl");
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

fn kubectl_stdin(args: &[&str], input: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .args(["--context", "umbrella-test"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    assert!(child.wait().expect("kubectl").success(), "kubectl {args:?}");
}

/// A group deployed from one repository, and a second repository with its own state for the
/// same environment.
fn two_repositories(name: &str) -> (Group, Group) {
    let first = Group::new(name);
    first.write("web", "cm.yaml", &first.config_map("first"));
    common::commit_all(first.repo.path(), "first repository");
    let (code, _, err) = first.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    let second = Group::named(&first.env);
    second.write("api", "cm.yaml", &second.config_map("second"));
    common::commit_all(second.repo.path(), "second repository");
    (first, second)
}

#[test]
fn another_repository_deploying_the_same_environment_is_refused() {
    let (first, second) = two_repositories("tworepo");
    for (verb, extra) in [
        (["deploy", "app-group"], &["--yes"][..]),
        (["diff", "app-group"], &[][..]),
    ] {
        let (code, out, err) = second.run(&verb, extra);
        assert_ne!(code, 0, "{verb:?}: {out}");
        assert!(
            err.contains("was deployed from") && err.contains(&format!("{}-web", first.env)),
            "{verb:?}: {err}"
        );
    }
    assert!(
        has_config_map(&first.env, "first"),
        "the first repository's app was pruned"
    );
    assert!(!has_config_map(&first.env, "second"));
    std::mem::forget(second); // shares the first group's namespace, which it cleans up
}

#[test]
fn another_repository_cannot_delete_the_environment_the_first_deployed() {
    let (first, second) = two_repositories("tworepodel");
    let (code, out, err) = second.run(&["delete", "app-group"], &["--yes"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("was deployed from") && err.contains(&format!("{}-web", first.env)),
        "{err}"
    );
    assert!(
        has_config_map(&first.env, "first"),
        "the second repository deleted the first's app"
    );
    // Nor can a repository that has no state for the environment at all.
    let stateless = Group::named(&first.env);
    std::fs::remove_dir_all(stateless.repo.path().join("umbrella-state")).expect("no state");
    std::fs::write(stateless.repo.path().join("README.md"), "other\n").expect("write");
    common::commit_all(stateless.repo.path(), "a repository without state");
    let (code, out, err) = stateless.run(&["delete", "app-group"], &["--yes"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(has_config_map(&first.env, "first"));
    std::mem::forget(stateless);
    // The first repository's own delete goes on.
    let (code, out, err) = first.run(&["delete", "app-group"], &["--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!has_config_map(&first.env, "first"));
    std::mem::forget(second); // shares the first group's namespace, which it cleans up
}

#[test]
fn a_symlinked_app_directory_is_refused_never_pruned() {
    let group = Group::new("symlink");
    group.write("t", "cm.yaml", &group.config_map("t-object"));
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    let copy = group.repo.path().join("elsewhere");
    std::fs::rename(group.app_dir("t"), &copy).expect("move the app");
    std::os::unix::fs::symlink(&copy, group.app_dir("t")).expect("symlink");
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/t:") && err.contains("symbolic link"),
        "{err}"
    );
    assert!(
        has_config_map(&group.env, "t-object"),
        "deleted through a symlink"
    );
}

#[test]
fn an_empty_state_or_one_that_drops_every_app_deletes_nothing_without_allow_empty() {
    let group = Group::new("empty");
    group.write("web", "cm.yaml", &group.config_map("web-object"));
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    // Every app renamed: the deployed ones would all go.
    let renamed = group.repo.path().join("umbrella-state").join(&group.env);
    std::fs::rename(group.app_dir("web"), renamed.join("web2")).expect("rename");
    std::fs::rename(group.app_dir("base"), renamed.join("base2")).expect("rename");
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("delete every app") && err.contains("--allow-empty"),
        "{err}"
    );
    // Nothing at all in the state.
    std::fs::remove_dir_all(&renamed).expect("empty the state");
    std::fs::create_dir_all(&renamed).expect("an empty state");
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("has no objects") && err.contains("--allow-empty"),
        "{err}"
    );
    assert!(
        has_config_map(&group.env, "web-object"),
        "an empty state deleted objects"
    );
    let (code, report, err) = group.deploy(&["--allow-empty"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        report["deletedApps"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
}

#[test]
fn a_namespace_the_state_still_needs_is_never_pruned_and_orphan_lets_it_go() {
    let group = Group::new("nsapp");
    let env = group.env.clone();
    group.write("web", "cm.yaml", &group.config_map("web-object"));
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    // The app holding the Namespace goes; the web app's ConfigMap lives in it.
    group.remove("base", None);
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "Namespace/{env} (app {env}-base) would be deleted"
        )) && err.contains(&format!("ConfigMap/web-object in {env} (app {env}-web)"))
            && err.contains("delete-strategy: orphan"),
        "{err}"
    );
    assert!(has_config_map(&env, "web-object"));
    // Annotated, deployed, then removed: let go, not deleted.
    let namespace = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {env}\n  annotations:\n    kapp.k14s.io/delete-strategy: orphan\n"
    );
    group.write("base", "namespace.yaml", &namespace);
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    group.remove("base", None);
    let (code, report, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(report.to_string().contains("\"orphan\""), "{report}");
    let live = kubectl_json(&["get", "namespace", &env]);
    assert!(live["metadata"]["deletionTimestamp"].is_null(), "{live}");
    assert!(
        live["metadata"]["labels"]["umbrella.dev/app"].is_null(),
        "still managed: {live}"
    );
    assert!(has_config_map(&env, "web-object"));
}

/// Deletes a CRD when dropped: cluster-wide, it outlives the group's namespace.
struct CrdCleanup(String);

impl Drop for CrdCleanup {
    fn drop(&mut self) {
        common::group::kubectl_quietly(&["delete", "crd", &self.0, "--wait=false"]);
    }
}

#[test]
fn a_crd_the_state_still_needs_is_never_pruned_and_orphan_lets_it_go() {
    let group = Group::new("crdapp");
    let env = group.env.clone();
    let crd_group = format!("{env}.example.com");
    let crd_name = format!("widgets.{crd_group}");
    let _cleanup = CrdCleanup(crd_name.clone());
    let crd = common::group::crd(&crd_group, "Widget", "Namespaced");
    group.write("defs", "crd.yaml", &crd);
    let widget = format!(
        "apiVersion: {crd_group}/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: {env}\nspec:\n  size: 3\n"
    );
    group.write("web", "widget.yaml", &widget);
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    let live = |what: &str, namespaced: bool| {
        let mut args = vec!["get", what];
        if namespaced {
            args.extend(["-n", env.as_str()]);
        }
        kubectl_json(&args)
    };
    // The app holding the CRD goes; the web app's Widget is of its kind.
    group.remove("defs", None);
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "CustomResourceDefinition/{crd_name} (app {env}-defs) would be deleted"
        )) && err.contains(&format!("Widget/w in {env} (app {env}-web)"))
            && err.contains("delete-strategy: orphan"),
        "{err}"
    );
    let widget_ref = format!("{crd_name}/w");
    for (what, namespaced) in [
        (format!("crd/{crd_name}"), false),
        (widget_ref.clone(), true),
    ] {
        let object = live(&what, namespaced);
        assert!(
            object["metadata"]["deletionTimestamp"].is_null(),
            "{object}"
        );
    }
    // Annotated, deployed, then removed: let go, not deleted.
    let annotated = crd.replace(
        &format!("metadata:\n  name: {crd_name}\n"),
        &format!(
            "metadata:\n  name: {crd_name}\n  annotations:\n    kapp.k14s.io/delete-strategy: orphan\n"
        ),
    );
    assert_ne!(annotated, crd);
    group.write("defs", "crd.yaml", &annotated);
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    group.remove("defs", None);
    let (code, report, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(report.to_string().contains("\"orphan\""), "{report}");
    let kept = live(&format!("crd/{crd_name}"), false);
    assert!(kept["metadata"]["deletionTimestamp"].is_null(), "{kept}");
    assert!(
        kept["metadata"]["labels"]["umbrella.dev/app"].is_null(),
        "still managed: {kept}"
    );
    let widget = live(&widget_ref, true);
    assert!(
        widget["metadata"]["deletionTimestamp"].is_null(),
        "{widget}"
    );
}

#[test]
fn the_lock_is_released_after_each_deploy_and_a_dead_holders_lock_says_when_it_frees() {
    let group = Group::new("release");
    group.write("web", "cm.yaml", &group.config_map("a"));
    for round in 0..3 {
        group.write("web", "cm.yaml", &group.config_map(&format!("a{round}")));
        let (code, _, err) = group.deploy(&[]);
        assert_eq!(code, 0, "round {round}: {err}");
        assert!(!group.lock_held(), "round {round}: the lock stayed behind");
    }
    // A deploy killed while it holds the lock leaves it; the next one says what to do.
    group.write("web", "lb.yaml", &group.load_balancer(true));
    group
        .start(&[], "waiting for a load balancer address")
        .kill();
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("holds the lock")
            && err.contains("by its clock")
            && err.contains("if it is gone")
            && err.contains("takes it over"),
        "{err}"
    );
}

#[test]
fn a_deploy_whose_api_connection_is_slow_at_its_end_still_releases_its_lock() {
    let group = Group::new("slowend");
    group.write("web", "cm.yaml", &group.config_map("first"));
    // Every request of deploy A takes 1.6 s there and back: when its work ends, a renewal of
    // its lock is still on the way, or its release waits that long for an answer.
    let proxy = SlowProxy::start(&api_server(), Duration::from_millis(800));
    let scratch = tempfile::tempdir().expect("temp dir");
    let kubeconfig = proxy.kubeconfig(scratch.path());
    let kubeconfig = kubeconfig.to_str().expect("utf-8");
    let env = group.env.as_str();
    let args = [
        "deploy",
        "app-group",
        env,
        "--yes",
        "--context",
        "umbrella-test",
    ];
    let started = Instant::now();
    let (code, _, err) = common::umbrella(group.repo.path(), &args, &[("KUBECONFIG", kubeconfig)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !group.lock_held(),
        "deploy A left its lock behind ({:?}): {err}",
        started.elapsed()
    );
    // The next plain deploy (no --lock-timeout) finds the lock free.
    group.write("web", "cm.yaml", &group.config_map("second"));
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(group.managed_config_maps(), ["second"]);
}

#[test]
fn an_alias_bomb_in_the_state_is_refused_at_once() {
    let group = Group::new("bomb");
    let mut bomb = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\n  namespace: {}\ndata:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n",
        group.env
    );
    for level in 1..10u8 {
        let previous = (b'a' + level - 1) as char;
        let name = (b'a' + level) as char;
        let refs = vec![format!("*{previous}"); 10].join(", ");
        bomb.push_str(&format!("  {name}: &{name} [{refs}]\n"));
    }
    group.write("web", "bomb.yaml", &bomb);
    for (verb, extra) in [
        (["diff", "app-group"], &[][..]),
        (["deploy", "app-group"], &["--yes"][..]),
    ] {
        let (code, _, err) = group.run(&verb, extra);
        assert_ne!(code, 0, "{verb:?}: {err}");
        assert!(
            err.contains("bomb.yaml") && err.contains("aliases"),
            "{verb:?}: {err}"
        );
    }
}

#[test]
fn secret_values_never_reach_the_output() {
    // A Secret the API server refuses, repeating its value in the error.
    let group = Group::new("leak");
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: pull\n  namespace: {}\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: not-json-s3cr3t-value\n",
        group.env
    );
    group.write("web", "secret.yaml", &secret);
    let (code, _, err) = group.deploy(&[]);
    assert_ne!(code, 0, "{err}");
    let (_, diff_out, diff_err) = group.run(&["diff", "app-group"], &["-o", "json"]);
    for output in [&err, &diff_out, &diff_err] {
        assert!(
            !output.contains("s3cr3t"),
            "a secret value was printed:\n{output}"
        );
    }
    assert!(err.contains("Secret/pull"), "{err}");
    // render --check shows that a value changed, never the value.
    let repo = common::chart_repository(&[(
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {{ .Values.password }}\n",
    )]);
    let values = repo.path().join("umbrella-chart/values.yaml");
    std::fs::write(&values, "password: first-s3cr3t\n").expect("values");
    let (code, _, err) = render(repo.path(), &["--env", "dev", "--allow-plaintext-secrets"]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(&values, "password: second-s3cr3t\n").expect("values");
    let (code, out, err) = render(
        repo.path(),
        &["--env", "dev", "--allow-plaintext-secrets", "--check"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("masked") && !out.contains("s3cr3t"), "{out}");
}

/// A Secret-like kind `VaultSecret` whose `spec.encryptedData` values must look sealed: the
/// API server repeats a value that does not (unlike a Secret's, which it redacts itself).
fn vault_secret_kind(group: &str) -> CrdCleanup {
    let crd = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: vaultsecrets.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{plural: vaultsecrets, singular: vaultsecret, kind: VaultSecret}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec:\n            type: object\n            properties:\n              encryptedData:\n                type: object\n                additionalProperties: {{type: string, pattern: '^Ag[A-Za-z0-9+/=]+$'}}\n"
    );
    kubectl_stdin(&["apply", "-f", "-"], &crd);
    let name = format!("vaultsecrets.{group}");
    let established = std::process::Command::new("kubectl")
        .args(["--context", "umbrella-test", "wait", "--timeout=30s"])
        .args(["--for=condition=Established", &format!("crd/{name}")])
        .output()
        .expect("kubectl");
    assert!(established.status.success(), "CRD {name} not established");
    CrdCleanup(name)
}

#[test]
fn a_secret_like_custom_resource_the_server_refuses_never_echoes_its_value() {
    let group = Group::new("leakcr");
    let api_group = format!("{}.umbrella.test", group.env);
    let _kind = vault_secret_kind(&api_group);
    let vault_secret = |name: &str, data: &str| {
        format!(
            "apiVersion: {api_group}/v1\nkind: VaultSecret\nmetadata:\n  name: {name}\n  namespace: {}\nspec:\n  encryptedData:\n{data}",
            group.env
        )
    };
    // A value that breaks the pattern, and values that are not strings at all (a PIN, a list):
    // the API server repeats each.
    let plain = vault_secret("db", "    password: \"plain s3cr3t, not sealed\"\n");
    group.write("web", "vault.yaml", &plain);
    let typed = vault_secret("pins", "    pin: 73317331\n    keys: [\"listed-s3cr3t\"]\n");
    group.write("web", "pins.yaml", &typed);
    let (deploy_code, report, deploy_err) = group.deploy(&[]);
    let (diff_code, diff_out, diff_err) = group.run(&["diff", "app-group"], &["-o", "json"]);
    let report = report.to_string();
    for output in [&report, &deploy_err, &diff_out, &diff_err] {
        assert!(
            !output.contains("s3cr3t") && !output.contains("73317331"),
            "a secret value was printed:\n{output}"
        );
    }
    // Still refused, and the object is named.
    assert_ne!(deploy_code, 0, "{deploy_err}");
    assert!(
        deploy_err.contains("VaultSecret/db") && deploy_err.contains("VaultSecret/pins"),
        "both were sent and refused: {deploy_err}"
    );
    assert_ne!(diff_code, 0, "{diff_out}{diff_err}");
    assert!(
        format!("{diff_out}{diff_err}").contains("VaultSecret/db"),
        "{diff_out}{diff_err}"
    );
}

#[test]
fn bad_names_missing_namespaces_and_bad_secret_data_are_refused_before_any_write() {
    let group = Group::new("input");
    let env = group.env.clone();
    group.write("web", "cm.yaml", &group.config_map("fine"));
    let cases = [
        (
            "my app",
            "cm.yaml".to_string(),
            group.config_map("x"),
            "app directory `my app`".to_string(),
        ),
        (
            "web",
            "bad.yaml".to_string(),
            config_map_in(&env, "../Bad_Name"),
            "field metadata.name".to_string(),
        ),
        (
            "web",
            "homeless.yaml".to_string(),
            config_map_in("no-such-namespace", "c"),
            "namespace no-such-namespace neither exists".to_string(),
        ),
        (
            "web",
            "secret.yaml".to_string(),
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: {env}\ndata:\n  password: not base64!\n"
            ),
            "field data.password: not base64".to_string(),
        ),
    ];
    for (app, file, text, expected) in cases {
        group.write(app, &file, &text);
        let (code, _, err) = group.deploy(&[]);
        assert_eq!(code, 2, "{expected}: {err}");
        assert!(
            err.contains(&expected) && err.contains("nothing was applied"),
            "{expected}: {err}"
        );
        assert!(!err.contains("not base64!"), "{err}");
        group.remove(app, Some(&file));
        if app == "my app" {
            group.remove(app, None);
        }
    }
    let namespaces = std::process::Command::new("kubectl")
        .args(["--context", "umbrella-test", "get", "namespace", &env])
        .output()
        .expect("kubectl");
    assert!(!namespaces.status.success(), "something was applied");
}

#[test]
fn a_deploy_that_waited_for_the_lock_plans_what_it_finds_then() {
    let group = Group::new("waited");
    group.write("web", "cm.yaml", &group.config_map("settings"));
    // A holds the lock; its applies are held on the way (its API connection stalls).
    let proxy = FaultProxy::start(&api_server());
    let scratch = tempfile::tempdir().expect("temp dir");
    let kubeconfig = kubeconfig_via(&proxy, scratch.path());
    let kubeconfig = kubeconfig.to_str().expect("utf-8");
    let a = group.start_with(&[], &[("KUBECONFIG", kubeconfig)], "applying");
    proxy.stall();
    // B, with the same state, asks for the lock meanwhile, and waits.
    let b = group.deploy_in_background(&["--lock-timeout", "60s", "-o", "json"]);
    std::thread::sleep(Duration::from_secs(3));
    proxy.resume();
    let (a_code, a_err) = a.finish();
    assert_eq!(a_code, 0, "{a_err}");
    let (code, out, err) = b.join().expect("deploy B");
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    let settings = report["objects"]
        .as_array()
        .and_then(|objects| {
            objects.iter().find(|o| {
                o["object"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("ConfigMap/settings"))
            })
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        settings["op"], "unchanged",
        "B planned before A had applied: {report}"
    );
}
