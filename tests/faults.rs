//! Faults, injected with small proxies in front of the real API server and registry: deploys,
//! prunes and renders ride out passing failures, deadlines hold by the clock, and what a
//! registry answers is checked before it is written.

mod common;

use std::time::{Duration, Instant};

use common::group::{Group, image};
use common::http_faults::{Fault, HttpFaults};
use common::proxy::FaultProxy;
use common::{api_server, kubeconfig_via, testenv};

/// A repository whose chart renders one Pod using `image`.
fn chart_with_image(image: &str) -> tempfile::TempDir {
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: {image}\n"
    );
    common::chart_repository(&[("pod.yaml", &pod)])
}

/// Renders through a registry proxy whose faults `arrange` sets up.
fn render_through(
    arrange: impl FnOnce(&HttpFaults),
) -> (i32, String, tempfile::TempDir, HttpFaults) {
    let faults = HttpFaults::start(&testenv("UMBRELLA_TEST_REGISTRY_A"));
    arrange(&faults);
    let (code, out, err, repo) = render_from(&faults.address(), &[]);
    (code, format!("{out}{err}"), repo, faults)
}

/// Renders a chart whose one image is on the registry `host`; returns the exit code, stdout,
/// stderr and the repository.
fn render_from(host: &str, extra: &[&str]) -> (i32, String, String, tempfile::TempDir) {
    let repo = chart_with_image(&format!("{host}/mirror/busybox:1.35"));
    let args = [&["render", "--env", "dev"], extra].concat();
    let (code, out, err) = common::umbrella(repo.path(), &args, &[]);
    (code, out, err, repo)
}

/// The retries a render's JSON report lists, as (what, delayMs).
fn retries(report: &str) -> Vec<(String, u64)> {
    let report: serde_json::Value = serde_json::from_str(report).expect("a JSON report");
    report["retries"]
        .as_array()
        .map(|notes| {
            notes
                .iter()
                .map(|n| {
                    let what = n["what"].as_str().expect("what").to_string();
                    (what, n["delayMs"].as_u64().expect("delayMs"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_registry_that_resets_or_is_busy_is_retried() {
    let manifests = "/v2/mirror/busybox/manifests/";
    let (code, text, repo, faults) = render_through(|faults| {
        faults.fault("GET", "/v2/", 1, Fault::Reset);
        faults.fault("GET", manifests, 1, Fault::CutShort);
        faults.fault("GET", manifests, 1, Fault::Reset);
        faults.fault(
            "GET",
            manifests,
            1,
            Fault::Answer(429, vec![("Retry-After", "1")]),
        );
        faults.fault("GET", manifests, 1, Fault::Answer(503, vec![]));
    });
    assert_eq!(code, 0, "{text}");
    let manifest_requests = faults
        .seen()
        .iter()
        .filter(|l| l.contains(manifests))
        .count();
    assert_eq!(manifest_requests, 5, "{:?}", faults.seen());
    assert!(
        repo.path()
            .join("umbrella-state/dev/shop/pod-p.yaml")
            .is_file()
    );
}

#[test]
fn a_registry_asking_to_retry_after_a_while_is_waited_for_that_long() {
    // One 429 asking for 3 s: the backoff alone would wait at most 0.25 s.
    let faults = HttpFaults::start(&testenv("UMBRELLA_TEST_REGISTRY_A"));
    faults.fault(
        "GET",
        "/v2/mirror/busybox/manifests/",
        1,
        Fault::Answer(429, vec![("Retry-After", "3")]),
    );
    let started = Instant::now();
    let (code, out, err, _repo) = render_from(&faults.address(), &["-o", "json"]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        took >= Duration::from_secs(3),
        "Retry-After: 3 was not waited for: {took:?}"
    );
    let manifest = format!(
        "registry {}: GET /v2/mirror/busybox/manifests/1.35",
        faults.address()
    );
    assert_eq!(retries(&out), [(manifest, 3000)], "{out}");
}

/// A render of one image on `registry`, whose every connection goes through a TCP proxy put
/// in the state `fault` leaves it in; the exit code, the output and how long it took.
fn render_behind(fault: impl FnOnce(&FaultProxy)) -> (i32, String, Duration, String) {
    let proxy = FaultProxy::start(&testenv("UMBRELLA_TEST_REGISTRY_A"));
    fault(&proxy);
    let started = Instant::now();
    let (code, out, err, repo) = render_from(&proxy.address(), &[]);
    let took = started.elapsed();
    proxy.resume();
    assert!(
        !repo.path().join("umbrella-state").exists(),
        "something was written: {out}{err}"
    );
    (code, format!("{out}{err}"), took, proxy.address())
}

#[test]
fn a_plain_http_registry_that_resets_every_connection_fails_within_one_budget_named() {
    // Registry A speaks plain HTTP on loopback, where both schemes are tried: the retry budget
    // (30 s) is spent once, on both, and the failure is plain HTTP's.
    let (code, text, took, host) = render_behind(|proxy| proxy.refuse());
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "registry {host}: cannot connect: /v2/ over http: "
        )) && text.contains("reset"),
        "{text}"
    );
    assert!(!text.contains("over https"), "{text}");
    assert!(took < Duration::from_secs(45), "took {took:?}: {text}");
}

#[test]
fn a_stalled_registry_fails_named_by_a_timeout_and_writes_nothing() {
    // Connections are accepted and nothing ever comes back.
    let (code, text, took, host) = render_behind(|proxy| proxy.stall());
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "registry {host}: cannot connect: /v2/ over http: timed out"
        )),
        "{text}"
    );
    assert!(took < Duration::from_secs(75), "took {took:?}: {text}");
}

#[test]
fn registry_failures_that_stay_are_named_by_their_cause_and_write_nothing() {
    let cases: [(Fault, &str, &str); 3] = [
        (Fault::Answer(503, vec![]), "/v2/", "HTTP 503"),
        (
            Fault::Answer(403, vec![]),
            "/manifests/",
            "access denied (HTTP 403)",
        ),
        (
            Fault::Answer(429, vec![("Retry-After", "1")]),
            "/manifests/",
            "too many requests (HTTP 429)",
        ),
    ];
    for (fault, path, expected) in cases {
        let (code, text, repo, _faults) = render_through(|faults| {
            faults.fault("GET", path, usize::MAX, fault.clone());
        });
        assert_eq!(code, 1, "{expected}: {text}");
        assert!(
            text.contains(expected) && !text.contains("TLS"),
            "{expected}: {text}"
        );
        assert!(
            text.contains("registry 127.0.0.1:"),
            "the registry is named: {text}"
        );
        assert!(
            !repo.path().join("umbrella-state").exists(),
            "{expected}: something was written"
        );
    }
}

#[test]
fn a_malformed_digest_or_a_manifest_that_does_not_hash_to_it_is_never_written() {
    let manifests = "/v2/mirror/busybox/manifests/";
    let bad = "sha256:zz../../not-a-digest";
    let (code, text, repo, _faults) = render_through(|faults| {
        faults.fault(
            "*",
            manifests,
            usize::MAX,
            Fault::Header("Docker-Content-Digest", bad),
        );
    });
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("malformed digest") && text.contains(bad),
        "{text}"
    );
    assert!(!repo.path().join("umbrella-state").exists());
    let (code, text, repo, _faults) = render_through(|faults| {
        faults.fault("GET", manifests, usize::MAX, Fault::Body);
    });
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("do not hash"), "{text}");
    assert!(!repo.path().join("umbrella-state").exists());
}

/// A group of many ConfigMaps, so an apply or a prune takes a moment.
fn many_config_maps(group: &Group, prefix: &str, count: usize) {
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        group.write("app", &format!("{name}.yaml"), &group.config_map(&name));
    }
}

/// Deploys `group` through `proxy`, which cuts the API server off (connections reset and new
/// ones refused) for `outage` once the deploy's output shows `marker`.
fn deploy_through_outage(group: &Group, marker: &str, outage: Duration) -> (i32, String) {
    let proxy = FaultProxy::start(&api_server());
    let scratch = tempfile::tempdir().expect("temp dir");
    let kubeconfig = kubeconfig_via(&proxy, scratch.path());
    let kubeconfig = kubeconfig.to_str().expect("utf-8");
    let running = group.start_with(&["-o", "json"], &[("KUBECONFIG", kubeconfig)], marker);
    proxy.refuse();
    proxy.reset();
    std::thread::sleep(outage);
    proxy.resume();
    running.finish()
}

/// Whether the live output shows a retry of a call whose description starts with `what`.
fn retried(output: &str, what: &str) -> bool {
    output
        .lines()
        .any(|l| l.contains(what) && l.contains("retrying in"))
}

#[test]
fn apply_and_prune_ride_out_an_api_server_outage() {
    let group = Group::new("outage");
    many_config_maps(&group, "first", 120);
    let (code, err) = deploy_through_outage(&group, "applying", Duration::from_secs(10));
    assert_eq!(code, 0, "the apply must ride the outage out: {err}");
    assert!(retried(&err, "applying "), "applies retried: {err}");
    for i in 0..120 {
        group.remove("app", Some(&format!("first-{i}.yaml")));
    }
    many_config_maps(&group, "second", 2);
    let (code, err) = deploy_through_outage(&group, "deleting", Duration::from_secs(10));
    assert_eq!(code, 0, "the prune must ride the outage out: {err}");
    assert!(retried(&err, "deleting "), "deletes retried: {err}");
    let (code, _, err) = group.run(&["diff", "app-group"], &["--exit-code"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_stalled_api_server_cannot_hold_a_deploy_past_its_wait_timeout() {
    let group = Group::new("deadline");
    group.write("app", "lb.yaml", &group.load_balancer(true));
    let proxy = FaultProxy::start(&api_server());
    let scratch = tempfile::tempdir().expect("temp dir");
    let kubeconfig = kubeconfig_via(&proxy, scratch.path());
    let kubeconfig = kubeconfig.to_str().expect("utf-8");
    let started = Instant::now();
    let running = group.start_with(
        &["--wait-timeout", "25s"],
        &[("KUBECONFIG", kubeconfig)],
        "waiting for a load balancer address",
    );
    // 9 s into the wait the server stops answering, for far longer than the wait timeout.
    // The lock, renewed until then, would be lost at 28 s: the 25 s wait timeout comes first.
    std::thread::sleep(Duration::from_secs(9));
    proxy.stall();
    let (code, err) = running.finish();
    let took = started.elapsed();
    proxy.resume();
    assert_eq!(code, 3, "{err}");
    assert!(
        took >= Duration::from_secs(24) && took <= Duration::from_millis(27500),
        "exit after {took:?}, not at the 25s wait timeout: {err}"
    );
}

#[test]
fn a_server_that_stalls_while_the_deploy_plans_cannot_hold_it_past_its_wait_timeout() {
    let group = Group::new("planstall");
    many_config_maps(&group, "cm", 400);
    let proxy = FaultProxy::start(&api_server());
    let scratch = tempfile::tempdir().expect("temp dir");
    let kubeconfig = kubeconfig_via(&proxy, scratch.path());
    let mut deploy = common::umbrella_command()
        .args([
            "deploy",
            "app-group",
            &group.env,
            "--yes",
            "--context",
            "umbrella-test",
        ])
        .args(["--wait-timeout", "10s"])
        .env("KUBECONFIG", &kubeconfig)
        .current_dir(group.repo.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start deploy");
    // The lock is taken; the deploy now reads the live objects and dry-runs 400 creates.
    while !group.lock_held() {
        assert!(
            deploy.try_wait().expect("wait").is_none(),
            "the deploy ended"
        );
    }
    let locked = Instant::now();
    proxy.stall();
    let status = deploy.wait().expect("wait");
    let took = locked.elapsed();
    proxy.resume();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut deploy.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(
        took <= Duration::from_millis(12_500),
        "exit {took:?} after the lock, not at the 10s wait timeout: {err}"
    );
    assert!(
        !err.contains(": applying"),
        "the stall came after the planning: {err}"
    );
}

#[test]
fn an_unreachable_api_server_is_named() {
    let group = Group::new("down");
    group.write("app", "cm.yaml", &group.config_map("x"));
    let proxy = FaultProxy::start(&api_server());
    proxy.refuse();
    let scratch = tempfile::tempdir().expect("temp dir");
    let kubeconfig = kubeconfig_via(&proxy, scratch.path());
    let kubeconfig = kubeconfig.to_str().expect("utf-8");
    let (code, _, err) = common::umbrella(
        group.repo.path(),
        &[
            "deploy",
            "app-group",
            &group.env,
            "--context",
            "umbrella-test",
            "--yes",
        ],
        &[("KUBECONFIG", kubeconfig)],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("https://{}", proxy.address()))
            && err.contains("context umbrella-test"),
        "the server is named: {err}"
    );
}

#[test]
fn pods_that_were_already_unschedulable_fail_a_redeploy_fast() {
    let group = Group::new("stuck");
    let stuck =
        |annotations: &str| {
            group
            .deployment("stuck", &image(), "")
            .replace("  namespace:", &format!("  annotations:\n{annotations}  namespace:"))
            .replace(
                "    spec:\n      containers:",
                "    spec:\n      nodeSelector:\n        no-such-node: \"true\"\n      containers:",
            )
        };
    group.write(
        "app",
        "deployment.yaml",
        &stuck("    kapp.k14s.io/disable-wait: \"true\"\n"),
    );
    let (code, _, err) = group.deploy(&[]);
    assert_eq!(code, 0, "{err}");
    // Its pods have been unschedulable for over two minutes (older than any rollout the
    // redeploy could have started); a redeploy that keeps the template must say so after the
    // grace period, not wait for the deadline.
    std::thread::sleep(Duration::from_secs(125));
    group.write("app", "deployment.yaml", &stuck("    owner: team-a\n"));
    let started = Instant::now();
    let (code, _, err) = group.deploy(&["--wait-timeout", "120s"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Unschedulable") || err.contains("nodes are available"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
