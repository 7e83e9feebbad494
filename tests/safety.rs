//! The safety guarantees, each against the real local environment: one deploy of a group at a
//! time (even when a deploy's API connection stalls), nothing written outside
//! `umbrella-state/ENV`, and nothing deleted that the state still wants.

mod common;

use std::time::{Duration, Instant};

use common::group::Group;
use common::proxy::{FaultProxy, api_server, kubeconfig_via};

/// A Service whose wait never ends: nothing gives a LoadBalancer an address here.
fn load_balancer(group: &Group, waited: bool) -> String {
    let annotation = if waited {
        ""
    } else {
        "  annotations:\n    kapp.k14s.io/disable-wait: \"true\"\n"
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: lb\n  namespace: {}\n{annotation}spec:\n  type: LoadBalancer\n  selector:\n    app: none\n  ports:\n  - port: 80\n",
        group.env
    )
}

fn config_maps(group: &Group) -> Vec<String> {
    let output = std::process::Command::new("kubectl")
        .args([
            "--context",
            "umbrella-test",
            "-n",
            &group.env,
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

#[test]
fn a_deploy_that_cannot_renew_its_lock_stops_by_the_clock_and_the_next_one_takes_over_cleanly() {
    let group = Group::new("fence");
    for name in ["keep", "old-1", "old-2"] {
        group.write("app", &format!("{name}.yaml"), &group.config_map(name));
    }
    group.write("app", "lb.yaml", &load_balancer(&group, true));
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
    proxy.stall();
    let stalled = Instant::now();
    // B, with a state that prunes what A wanted, asks for the lock 4s into the stall.
    std::thread::sleep(Duration::from_secs(4));
    group.remove("app", Some("old-1.yaml"));
    group.remove("app", Some("old-2.yaml"));
    group.write("app", "new.yaml", &group.config_map("new"));
    group.write("app", "lb.yaml", &load_balancer(&group, false));
    let b_started = Instant::now();
    let b = std::thread::spawn({
        let env = group.env.clone();
        let repo = group.repo.path().to_path_buf();
        move || {
            let args = [
                "deploy",
                "app-group",
                &env,
                "--context",
                "umbrella-test",
                "--yes",
            ];
            let mut args = args.to_vec();
            args.extend(["--lock-timeout", "60s", "-o", "json"]);
            common::umbrella(&repo, &args, &[])
        }
    });
    // A must give up by the clock, although the API server never answers it.
    let a_exit = loop {
        if let Some(code) = a.exited() {
            break code;
        }
        assert!(
            stalled.elapsed() < Duration::from_secs(20),
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
        a_stopped < Duration::from_secs(12) && b_took >= Duration::from_secs(15),
        "A stopped {a_stopped:?} into the stall; B needed {b_took:?}"
    );
    // Now A's held bytes reach the API server: they change nothing.
    proxy.resume();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(config_maps(&group), ["keep", "new"]);
    let (code, _, err) = group.run(&["diff", "app-group"], &["--exit-code"]);
    assert_eq!(code, 0, "the cluster is B's state: {err}");
}
