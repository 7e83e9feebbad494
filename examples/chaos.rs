//! `scripts/chaos`: random faults against real deploys of a group of a few hundred objects, on
//! the local environment, and a table of what they did.
//!
//! Each trial mutates the group's state (objects added, removed and changed), then either
//! kills the deploy of it with SIGKILL at a random moment, runs it through a TCP proxy that
//! stalls at a random moment while a second deploy of another state waits for the lock, runs
//! it through an API outage, or stalls it past its `--wait-timeout`; or it renders an image
//! through a registry that fails in one of the ways registries do. After every trial a deploy
//! must converge while a CRD of the cluster is created and deleted over and over. Counted:
//! - objects lost: objects both the old and the new state want, missing after the fault;
//! - orphans: objects labelled for the group that the state no longer has, after converging;
//! - takeovers while the holder still ran: the lock went to the second deploy while the first
//!   was alive and had not said it lost the lock (must be 0);
//! - locks left behind by a deploy that ended;
//! - deadlines that did not hold: a stalled deploy still running 3 s past its wait timeout;
//! - registry faults: renders that succeeded with the right digest, that failed naming the
//!   registry with nothing written, and wrong digests written (must be 0).
//!
//! Usage: `chaos BINARY [TRIALS]` with the environment of `scripts/testenv env` loaded.

#[path = "../tests/common/proxy.rs"]
mod proxy;

#[allow(dead_code)]
#[path = "../tests/common/http_faults.rs"]
mod http_faults;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use tokio::io::AsyncBufReadExt;

use http_faults::{Fault, HttpFaults};
use proxy::FaultProxy;

const APPS: usize = 8;
const PER_APP: usize = 40;

/// A small, seeded random source: a run can be repeated with `CHAOS_SEED`.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

/// The group's state: app -> ConfigMap name -> value.
type State = BTreeMap<String, BTreeMap<String, String>>;

struct Chaos {
    binary: PathBuf,
    env: String,
    repo: tempfile::TempDir,
    random: Random,
    client: kube::Client,
    next_name: usize,
}

#[derive(Default)]
struct Tally {
    trials: usize,
    kills: usize,
    stalls: usize,
    outages: usize,
    /// Deploys that finished through an outage without failing.
    rode_out: usize,
    converged: usize,
    lost: usize,
    orphans: usize,
    takeovers_while_running: usize,
    locks_left: usize,
    deadlines: usize,
    deadlines_missed: usize,
    registry: usize,
    registry_rendered: usize,
    registry_failed_named: usize,
    registry_wrong: usize,
}

#[tokio::main]
async fn main() {
    umbrella::adapters::tls::install_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let binary = PathBuf::from(args.first().expect("usage: chaos BINARY [TRIALS]"));
    let trials: usize = args.get(1).map_or(30, |n| n.parse().expect("TRIALS"));
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let context = std::env::var("UMBRELLA_TEST_KUBE_CONTEXT").expect("load scripts/testenv env");
    let client = umbrella::adapters::cluster::Cluster::connect(Some(&context))
        .await
        .expect("the test cluster")
        .client;
    let repo = tempfile::tempdir().expect("temp dir");
    git2::Repository::init(repo.path()).expect("git init");
    let mut chaos = Chaos {
        binary,
        env: format!("chaos-{}", std::process::id()),
        repo,
        random: Random(seed),
        client,
        next_name: 0,
    };
    eprintln!("chaos: {trials} trials on group {}, seed {seed}", chaos.env);
    let mut state = chaos.initial_state();
    chaos.write_state(&state, true);
    let (code, err) = chaos.deploy(&[], None).await;
    assert_eq!(code, 0, "the first deploy failed: {err}");
    let digest = chaos
        .render_image(&std::env::var("UMBRELLA_TEST_REGISTRY_A").expect("registry A"))
        .await
        .1
        .expect("the image's digest, without faults");
    let mut tally = Tally::default();
    for trial in 1..=trials {
        let next = chaos.mutate(&state);
        let kind = chaos.random.below(8);
        let started = Instant::now();
        let name = match kind {
            0 | 1 => {
                let other = chaos.mutate(&next);
                chaos.stall_trial(&state, &next, &other, &mut tally).await;
                state = other;
                "stall"
            }
            2 => {
                chaos.outage_trial(&state, &next, &mut tally).await;
                state = next;
                "outage"
            }
            3 => {
                chaos.deadline_trial(&state, &next, &mut tally).await;
                state = next;
                "deadline"
            }
            4 | 5 => {
                chaos.registry_trial(&digest, &mut tally).await;
                "registry"
            }
            _ => {
                chaos.kill_trial(&state, &next, &mut tally).await;
                state = next;
                "kill -9"
            }
        };
        tally.trials += 1;
        eprintln!(
            "chaos: trial {trial} ({name}) in {:.1}s: converged {}/{}, lost {}, orphans {}, takeovers while running {}",
            started.elapsed().as_secs_f64(),
            tally.converged,
            tally.trials - tally.registry,
            tally.lost,
            tally.orphans,
            tally.takeovers_while_running
        );
    }
    chaos.write_state(&BTreeMap::new(), false);
    let _ = chaos
        .run(&["delete", "app-group", &chaos.env.clone(), "--yes"], None)
        .await;
    print_table(&tally);
}

fn print_table(tally: &Tally) {
    println!(
        "| trials | kill -9 | stalls with a competing deploy | API outages (rode out) | stalls past --wait-timeout (deadline missed) | converged under CRD churn | objects lost | orphans | lock takeovers while the holder still ran | locks left behind |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} ({}) | {} ({}) | {} | {} | {} | {} | {} |",
        tally.trials - tally.registry,
        tally.kills,
        tally.stalls,
        tally.outages,
        tally.rode_out,
        tally.deadlines,
        tally.deadlines_missed,
        tally.converged,
        tally.lost,
        tally.orphans,
        tally.takeovers_while_running,
        tally.locks_left
    );
    println!();
    println!(
        "| registry faults | rendered, right digest | failed naming the registry, nothing written | wrong or malformed digest written |"
    );
    println!("|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} |",
        tally.registry, tally.registry_rendered, tally.registry_failed_named, tally.registry_wrong
    );
}

impl Chaos {
    fn initial_state(&mut self) -> State {
        (0..APPS)
            .map(|app| {
                let objects = (0..PER_APP)
                    .map(|_| (self.fresh_name(), "v0".to_string()))
                    .collect();
                (format!("app-{app}"), objects)
            })
            .collect()
    }

    fn fresh_name(&mut self) -> String {
        self.next_name += 1;
        format!("cm-{}", self.next_name)
    }

    /// About a tenth of the objects removed, a tenth changed, a tenth added.
    fn mutate(&mut self, state: &State) -> State {
        let mut next = state.clone();
        for objects in next.values_mut() {
            let names: Vec<String> = objects.keys().cloned().collect();
            for name in names {
                match self.random.below(10) {
                    0 => {
                        objects.remove(&name);
                    }
                    1 => {
                        let value = format!("v{}", self.random.below(1_000_000));
                        objects.insert(name, value);
                    }
                    _ => {}
                }
            }
            for _ in 0..PER_APP / 10 {
                let name = self.fresh_name();
                objects.insert(name, "v0".into());
            }
        }
        next
    }

    fn state_dir(&self) -> PathBuf {
        self.repo.path().join("umbrella-state").join(&self.env)
    }

    /// Writes `state` as the group's state directory (with the namespace's app); `waited`
    /// adds a LoadBalancer Service whose wait never ends.
    fn write_state(&self, state: &State, with_namespace: bool) {
        let dir = self.state_dir();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("state dir");
        if with_namespace {
            write(
                &dir.join("base/namespace.yaml"),
                &format!(
                    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n",
                    self.env
                ),
            );
        }
        for (app, objects) in state {
            for (name, value) in objects {
                let text = format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {}\ndata:\n  value: \"{value}\"\n",
                    self.env
                );
                write(&dir.join(app).join(format!("{name}.yaml")), &text);
            }
        }
    }

    fn add_load_balancer(&self) {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: lb\n  namespace: {}\nspec:\n  type: LoadBalancer\n  selector:\n    app: none\n  ports:\n  - port: 80\n",
            self.env
        );
        write(&self.state_dir().join("base/lb.yaml"), &text);
    }

    /// A deploy of the group that waits for the lock up to 120 s, its output dropped.
    fn deploy_command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .args([
                "deploy",
                "app-group",
                &self.env,
                "--yes",
                "--lock-timeout",
                "120s",
            ])
            .current_dir(self.repo.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// A deploy on a task of its own: its exit status.
    fn deploy_in_background(
        &self,
        kubeconfig: Option<PathBuf>,
    ) -> tokio::task::JoinHandle<std::io::Result<std::process::ExitStatus>> {
        let mut command = self.deploy_command();
        if let Some(kubeconfig) = kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        tokio::spawn(async move { command.status().await })
    }

    async fn run(&self, args: &[&str], kubeconfig: Option<&Path>) -> (i32, String) {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .args(args)
            .current_dir(self.repo.path())
            .env("CI", "1");
        if let Some(kubeconfig) = kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let output = command.output().await.expect("run umbrella");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn deploy(&self, extra: &[&str], kubeconfig: Option<&Path>) -> (i32, String) {
        let mut args = vec!["deploy", "app-group", self.env.as_str(), "--yes"];
        args.extend(extra);
        self.run(&args, kubeconfig).await
    }

    /// The ConfigMaps of the group in the cluster.
    async fn live(&self) -> BTreeSet<String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.env);
        let params = ListParams::default().labels(&format!("umbrella.dev/group={}", self.env));
        match api.list(&params).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter_map(|c| c.metadata.name)
                .collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    async fn lock_holder(&self) -> Option<String> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), "umbrella-system");
        let lease = api
            .get_opt(&format!("umbrella-lock-{}", self.env))
            .await
            .ok()??;
        lease.spec?.holder_identity
    }

    /// A plain deploy of `state` converges: exit 0, nothing missing, nothing extra, no diff.
    async fn converge(&self, state: &State, before: &State, tally: &mut Tally) {
        self.write_state(state, true);
        let wanted_by_both: BTreeSet<String> =
            names(state).intersection(&names(before)).cloned().collect();
        let live = self.live().await;
        tally.lost += wanted_by_both.difference(&live).count();
        let churn = churn_a_crd(self.env.clone());
        let (code, err) = self.deploy(&["--lock-timeout", "120s"], None).await;
        churn.abort();
        let (diff, _) = self
            .run(&["diff", "app-group", &self.env, "--exit-code"], None)
            .await;
        let live = self.live().await;
        tally.orphans += live.difference(&names(state)).count();
        let missing = names(state).difference(&live).count();
        if code == 0 && diff == 0 && missing == 0 {
            tally.converged += 1;
        } else {
            eprintln!(
                "chaos: did not converge (deploy {code}, diff {diff}, {missing} missing): {err}"
            );
        }
        if self.lock_holder().await.is_some() {
            tally.locks_left += 1;
        }
    }

    async fn kill_trial(&mut self, before: &State, next: &State, tally: &mut Tally) {
        tally.kills += 1;
        self.write_state(next, true);
        let mut child = self.deploy_command().spawn().expect("start deploy");
        tokio::time::sleep(self.random.millis(100, 4000)).await;
        let _ = child.start_kill();
        let _ = child.wait().await;
        self.converge(next, before, tally).await;
    }

    /// A deploy through a proxy whose connections are reset, and new ones refused, for a few
    /// seconds at a random moment: it should ride the outage out.
    async fn outage_trial(&mut self, before: &State, next: &State, tally: &mut Tally) {
        tally.outages += 1;
        let proxy = FaultProxy::start(&proxy::server_of(&kubeconfig()));
        let scratch = tempfile::tempdir().expect("temp dir");
        let kubeconfig = proxy::kubeconfig_via(&proxy.address(), &kubeconfig(), scratch.path());
        self.write_state(next, true);
        let deploy = self.deploy_in_background(Some(kubeconfig));
        tokio::time::sleep(self.random.millis(200, 3000)).await;
        proxy.refuse();
        proxy.reset();
        tokio::time::sleep(self.random.millis(1000, 10000)).await;
        proxy.resume();
        if deploy
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|s| s.success())
        {
            tally.rode_out += 1;
        }
        self.converge(next, before, tally).await;
    }

    /// Deploy A (through a proxy) stalls at a random moment while deploy B of another state
    /// asks for the lock; the proxy resumes at a random later moment.
    async fn stall_trial(
        &mut self,
        before: &State,
        a_state: &State,
        b_state: &State,
        tally: &mut Tally,
    ) {
        tally.stalls += 1;
        let proxy = FaultProxy::start(&proxy::server_of(&kubeconfig()));
        let scratch = tempfile::tempdir().expect("temp dir");
        let kubeconfig = proxy::kubeconfig_via(&proxy.address(), &kubeconfig(), scratch.path());
        self.write_state(a_state, true);
        self.add_load_balancer();
        let mut a = tokio::process::Command::new(&self.binary)
            .args([
                "deploy",
                "app-group",
                &self.env,
                "--yes",
                "--wait-timeout",
                "20s",
                "--lock-timeout",
                "120s",
            ])
            .current_dir(self.repo.path())
            .env("KUBECONFIG", &kubeconfig)
            .env("CI", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start deploy A");
        let a_pid = a.id().unwrap_or_default();
        let a_lost = Arc::new(Mutex::new(false));
        let watch_output = {
            let lost = a_lost.clone();
            let mut lines = tokio::io::BufReader::new(a.stderr.take().expect("stderr")).lines();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("lost the deploy lock") {
                        *lost.lock().unwrap_or_else(|e| e.into_inner()) = true;
                    }
                }
            })
        };
        tokio::time::sleep(self.random.millis(300, 4000)).await;
        proxy.stall();
        let stall = self.random.millis(3000, 40000);
        tokio::time::sleep(self.random.millis(0, 3000)).await;
        self.write_state(b_state, true);
        let b = self.deploy_in_background(None);
        let b_started = Instant::now();
        let mut resumed = false;
        let mut a_exited = false;
        while !b.is_finished() {
            if !resumed && b_started.elapsed() >= stall {
                proxy.resume();
                resumed = true;
            }
            if !a_exited && a.try_wait().ok().flatten().is_some() {
                a_exited = true;
            }
            if let Some(holder) = self.lock_holder().await
                && !holder.starts_with(&format!("{a_pid}@"))
                && !a_exited
                && a.try_wait().ok().flatten().is_none()
                && !*a_lost.lock().unwrap_or_else(|e| e.into_inner())
            {
                tally.takeovers_while_running += 1;
                eprintln!("chaos: the lock went to {holder} while deploy A still ran");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        proxy.resume();
        let _ = b.await;
        let _ = a.wait().await;
        let _ = watch_output.await;
        self.converge(b_state, before, tally).await;
    }
}

/// One way a registry fails: what the proxy does, to which requests, how many times.
struct RegistryFault {
    what: &'static str,
    path: &'static str,
    times: usize,
    fault: fn() -> Fault,
}

/// The faults a registry trial picks from (or, one more, a registry that stops answering).
const REGISTRY_FAULTS: [RegistryFault; 9] = [
    RegistryFault {
        what: "the first /v2/ ping reset",
        path: "/v2/",
        times: 1,
        fault: || Fault::Reset,
    },
    RegistryFault {
        what: "manifest answers cut short",
        path: MANIFESTS,
        times: 2,
        fault: || Fault::CutShort,
    },
    RegistryFault {
        what: "429 with Retry-After: 1, twice",
        path: MANIFESTS,
        times: 2,
        fault: || Fault::Answer(429, vec![("Retry-After", "1")]),
    },
    RegistryFault {
        what: "503, three times",
        path: MANIFESTS,
        times: 3,
        fault: || Fault::Answer(503, vec![]),
    },
    RegistryFault {
        what: "slow answers (2 s)",
        path: MANIFESTS,
        times: 3,
        fault: || Fault::Delay(Duration::from_secs(2)),
    },
    RegistryFault {
        what: "503 that stays",
        path: MANIFESTS,
        times: usize::MAX,
        fault: || Fault::Answer(503, vec![]),
    },
    RegistryFault {
        what: "403 that stays",
        path: MANIFESTS,
        times: usize::MAX,
        fault: || Fault::Answer(403, vec![]),
    },
    RegistryFault {
        what: "a malformed digest",
        path: MANIFESTS,
        times: usize::MAX,
        fault: || Fault::Header("Docker-Content-Digest", "sha256:zz../../not-a-digest"),
    },
    RegistryFault {
        what: "a manifest that does not hash to its digest",
        path: MANIFESTS,
        times: usize::MAX,
        fault: || Fault::Body,
    },
];

const MANIFESTS: &str = "/v2/mirror/busybox/manifests/";

/// A proxy that serves until dropped.
type Running = Box<dyn std::any::Any>;

impl Chaos {
    /// Renders one image through a registry proxy failing in a random way registries do: the
    /// render must pin the right digest, or fail naming the registry and write nothing.
    async fn registry_trial(&mut self, digest: &str, tally: &mut Tally) {
        tally.registry += 1;
        let registry = std::env::var("UMBRELLA_TEST_REGISTRY_A").expect("registry A");
        let pick = self.random.below(REGISTRY_FAULTS.len() as u64 + 1) as usize;
        // The proxy is kept (and serves) until the render ended.
        let (what, host, _proxy): (String, String, Running) = match REGISTRY_FAULTS.get(pick) {
            Some(chosen) => {
                let faults = HttpFaults::start(&registry);
                faults.fault("*", chosen.path, chosen.times, (chosen.fault)());
                let host = faults.address();
                (chosen.what.to_string(), host, Box::new(faults))
            }
            None => {
                let stalled = FaultProxy::start(&registry);
                stalled.stall();
                (
                    "a registry that stops answering".to_string(),
                    stalled.address(),
                    Box::new(stalled),
                )
            }
        };
        let (code, pinned, output, wrote) = self.render_image(&host).await;
        match (code, pinned) {
            (0, Some(pinned)) if pinned == digest => tally.registry_rendered += 1,
            (0, _) => {
                tally.registry_wrong += 1;
                eprintln!("chaos: {what}: a wrong digest was written");
            }
            (_, _) if output.contains(&host) && !wrote => tally.registry_failed_named += 1,
            (_, _) => eprintln!("chaos: {what}: failed without naming {host}, or wrote: {output}"),
        }
        eprintln!("chaos: registry fault: {what}, exit {code}");
    }

    /// Renders a chart of one Pod using `HOST/mirror/busybox:1.35` in a repository of its own:
    /// the exit code, the digest pinned in the state, the output, and whether a state exists.
    async fn render_image(&self, host: &str) -> (i32, Option<String>, String, bool) {
        let repo = tempfile::tempdir().expect("temp dir");
        let chart = repo.path().join("umbrella-chart");
        write(
            &chart.join("Chart.yaml"),
            "apiVersion: v2\nname: shop\nversion: 0.1.0\n",
        );
        write(&chart.join("values.yaml"), "{}\n");
        write(
            &chart.join("templates/pod.yaml"),
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: {host}/mirror/busybox:1.35\n"
            ),
        );
        git2::Repository::init(repo.path()).expect("git init");
        let output = tokio::process::Command::new(&self.binary)
            .args(["render", "--env", "dev"])
            .current_dir(repo.path())
            .env("CI", "1")
            .output()
            .await
            .expect("run umbrella");
        let state = repo.path().join("umbrella-state");
        let pinned = std::fs::read_to_string(state.join("dev/shop/pod-p.yaml"))
            .ok()
            .and_then(|text| {
                let at = text.find("@sha256:")?;
                Some(text[at + 1..].chars().take(71).collect())
            });
        let text = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        (
            output.status.code().unwrap_or(-1),
            pinned,
            text,
            state.exists(),
        )
    }

    /// A deploy that waits for what is never ready, with `--wait-timeout 10s`, whose API
    /// connection stalls for good at a random moment after it took the lock: it must end by
    /// the clock, 10 s after the lock (3 s of slack for starting and ending).
    async fn deadline_trial(&mut self, before: &State, next: &State, tally: &mut Tally) {
        tally.deadlines += 1;
        let proxy = FaultProxy::start(&proxy::server_of(&kubeconfig()));
        let scratch = tempfile::tempdir().expect("temp dir");
        let kubeconfig = proxy::kubeconfig_via(&proxy.address(), &kubeconfig(), scratch.path());
        self.write_state(next, true);
        self.add_load_balancer();
        let mut command = self.deploy_command();
        command
            .args(["--wait-timeout", "10s"])
            .env("KUBECONFIG", &kubeconfig);
        let mut child = command.spawn().expect("start deploy");
        let holder = format!("{}@", child.id().unwrap_or_default());
        let started = Instant::now();
        while !self
            .lock_holder()
            .await
            .is_some_and(|h| h.starts_with(&holder))
            && child.try_wait().ok().flatten().is_none()
            && started.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let locked = Instant::now();
        tokio::time::sleep(self.random.millis(200, 6000)).await;
        proxy.stall();
        let bound = Duration::from_secs(13).saturating_sub(locked.elapsed());
        if tokio::time::timeout(bound, child.wait()).await.is_err() {
            tally.deadlines_missed += 1;
            eprintln!("chaos: a stalled deploy ran past its --wait-timeout");
            let _ = child.start_kill();
        }
        let _ = child.wait().await;
        proxy.resume();
        self.converge(next, before, tally).await;
    }
}

fn names(state: &State) -> BTreeSet<String> {
    state
        .values()
        .flat_map(|objects| objects.keys().cloned())
        .collect()
}

/// Creates and deletes a CRD of the cluster over and over, as other teams' deploys do, until
/// aborted: discovery must not fail a deploy for a group its state does not use.
fn churn_a_crd(env: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let crd = format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: churns.{env}.example.com\nspec:\n  group: {env}.example.com\n  names: {{kind: Churn, plural: churns}}\n  scope: Namespaced\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {{type: object}}\n"
        );
        loop {
            kubectl(&["apply", "-f", "-"], &crd).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            kubectl(&["delete", "--wait=false", "-f", "-"], &crd).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

async fn kubectl(args: &[&str], input: &str) {
    use tokio::io::AsyncWriteExt;
    let Ok(mut child) = tokio::process::Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
    else {
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes()).await;
    }
    let _ = child.wait().await;
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("dirs");
    std::fs::write(path, text).expect("write");
}

fn kubeconfig() -> PathBuf {
    PathBuf::from(std::env::var("KUBECONFIG").expect("load scripts/testenv env"))
}
