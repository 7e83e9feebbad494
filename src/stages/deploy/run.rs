//! One deploy under way, holding the group's lock: the waves applied and waited for, the
//! hooks around them, pruning, and the inventories recorded before and after.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::{StreamExt, TryStreamExt};
use kube::discovery::Discovery;

use super::apply;
use super::hooks::{self, Phase};
use super::inventory::{self, Inventories, Inventory};
use super::lease::Fence;
use super::limits::{Limits, Stop};
use super::outcome::{DeployError, DeployReport, ObjectReport, Op, failed};
use super::plan::{self, HookPlan, Target};
use super::prune;
use super::removal;
use super::request::DeployRequest;
use super::wait::{self, WaitError};
use crate::adapters::cluster::Cluster;
use crate::adapters::feeds::Feeds;
use crate::adapters::retry::Retrier;
use crate::formats::object_ref::ObjectRef;
use crate::progress::Progress;

/// One deploy under way, holding the group's lock.
pub(super) struct Run<'a> {
    pub request: &'a DeployRequest,
    pub progress: &'a dyn Progress,
    pub cluster: &'a Cluster,
    pub discovery: &'a Discovery,
    pub retrier: &'a Retrier,
    pub limits: Limits,
    /// The watches the run's waits share.
    pub feeds: Feeds,
}

/// The apps' inventories before the run, the objects it wants by app, and what it prunes.
type Planned = (
    BTreeMap<String, Inventory>,
    BTreeMap<String, BTreeSet<ObjectRef>>,
    removal::Removal,
);

impl<'a> Run<'a> {
    /// A run holding the group's lock (`fence`), its deadline `wait_timeout` from now.
    pub fn holding(
        request: &'a DeployRequest,
        progress: &'a dyn Progress,
        cluster: &'a Cluster,
        discovery: &'a Discovery,
        retrier: &'a Retrier,
        fence: Fence,
    ) -> Self {
        Run {
            request,
            progress,
            cluster,
            discovery,
            retrier,
            limits: Limits {
                fence,
                deadline: tokio::time::Instant::now() + request.wait_timeout,
            },
            feeds: Feeds::new(cluster.client.clone()),
        }
    }
}

impl Run<'_> {
    pub async fn locked(
        &self,
        mut targets: Vec<Target>,
        state_crds: &plan::StateCrds,
        waves: Vec<Vec<usize>>,
        mut hooks: HookPlan,
        inventories: &Inventories,
    ) -> Result<DeployReport, DeployError> {
        let client = &self.cluster.client;
        let applier = apply::Applier {
            client,
            request: self.request,
            retrier: self.retrier,
        };
        let mut report = DeployReport {
            env: self.request.group.env.clone(),
            ..Default::default()
        };
        // The reads and dry runs before the first write hold the deadline too: a stalled API
        // server cannot keep the deploy past it.
        let planning = self.plan_held(&applier, &mut targets, state_crds, inventories);
        let (previous, wanted, removal) = self.limits.guard(planning).await.map_err(|stop| {
            let waiting = "reading the live objects and dry-running the changes (--wait-timeout)";
            stop.failure(&report, vec![waiting.into()])
        })??;
        self.record_intent(inventories, &previous, &wanted, &report)
            .await?;
        hooks.operations = hooks::operations(
            &hooks.hooks,
            &inventory::deployed_commits(&previous),
            &self.request.source.commits,
            self.request.rollback,
        );
        // Namespaces and CRDs first, as helm has them before any hook runs.
        let (foundation, rest) = plan::foundation_first(&targets, &waves);
        self.run_waves(&applier, &mut targets, &foundation, &mut report)
            .await?;
        self.run_hooks(&applier, &mut hooks, Phase::Pre, &mut report)
            .await?;
        self.run_waves(&applier, &mut targets, &rest, &mut report)
            .await?;
        self.run_hooks(&applier, &mut hooks, Phase::Post, &mut report)
            .await?;
        let pruning = self.deleter();
        pruning
            .remove(self.discovery, &removal, &mut report)
            .await?;
        self.settle_inventories(inventories, &previous, &wanted, &mut report)
            .await?;
        Ok(report)
    }

    /// What the run will change and prune, read and checked while holding the lock and before
    /// its first write.
    async fn plan_held(
        &self,
        applier: &apply::Applier<'_>,
        targets: &mut [Target],
        state_crds: &plan::StateCrds,
        inventories: &Inventories,
    ) -> Result<Planned, DeployError> {
        let previous = inventories.by_app().await?;
        let env = &self.request.group.env;
        let ours = &self.request.source.repository;
        if let Some(other) = inventory::other_repository(env, &previous, ours) {
            return Err(DeployError::Invalid(vec![other]));
        }
        let wanted = plan::wanted_by_app(targets);
        let emptying = removal::emptying(env, &wanted, &previous);
        if let Some(why) = emptying.filter(|_| !self.request.allow_empty) {
            return Err(DeployError::Invalid(vec![why]));
        }
        applier.preflight(targets, state_crds).await?;
        let removal = self.plan_removal(&previous, &wanted).await?;
        Ok((previous, wanted, removal))
    }

    /// What deletes objects (and waits until they are gone) within this run's limits.
    pub fn deleter(&self) -> prune::Deleter<'_> {
        prune::Deleter {
            client: &self.cluster.client,
            progress: self.progress,
            retrier: self.retrier,
            limits: &self.limits,
        }
    }

    /// Runs the waves one after the other, each once the kinds it needs are known.
    pub async fn run_waves(
        &self,
        applier: &apply::Applier<'_>,
        targets: &mut [Target],
        waves: &[Vec<usize>],
        report: &mut DeployReport,
    ) -> Result<(), DeployError> {
        for wave in waves {
            plan::refresh_resources(self.cluster, self.retrier, targets, wave).await?;
            self.recheck_kept(applier, targets, wave, report).await?;
            self.run_wave(applier, targets, wave, report).await?;
        }
        Ok(())
    }

    /// Once this deploy wrote something (a hook, a replaced object, an earlier wave, any of
    /// which may change other objects), the wave's objects the preflight found unchanged are
    /// listed again: what no longer is unchanged, or is gone, is applied.
    async fn recheck_kept(
        &self,
        applier: &apply::Applier<'_>,
        targets: &mut [Target],
        wave: &[usize],
        report: &DeployReport,
    ) -> Result<(), DeployError> {
        let wrote = report.objects.iter().any(|o| o.op != Op::Unchanged);
        let kept: Vec<usize> = wave
            .iter()
            .copied()
            .filter(|&i| targets[i].kept_ready.is_some())
            .collect();
        if !wrote || kept.is_empty() {
            return Ok(());
        }
        let lister = applier.lister();
        let listed = self.limits.guard(lister.list_some(targets, &kept)).await;
        let listed = listed.map_err(|stop| stop.failure(report, Vec::new()))??;
        for index in kept {
            apply::recheck(&mut targets[index], listed.get(&index));
        }
        Ok(())
    }

    /// Applies a wave and waits for each object its answer did not show ready, from the
    /// moment that answer comes: waits overlap the wave's other applies. Each outcome is
    /// reported as it comes; the first failure ends the deploy once the wave's applies are
    /// answered; what is still unsettled when a limit is reached is reported as such.
    async fn run_wave(
        &self,
        applier: &apply::Applier<'_>,
        targets: &[Target],
        wave: &[usize],
        report: &mut DeployReport,
    ) -> Result<(), DeployError> {
        let fence = &self.limits.fence;
        let mut answers = std::pin::pin!(applier.apply_wave(self.progress, fence, targets, wave));
        let mut waits = futures_util::stream::FuturesUnordered::new();
        let mut wave_run = WaveRun::new(wave);
        while !wave_run.settled(waits.is_empty()) {
            let applying = !wave_run.unanswered.is_empty();
            let step = self.limits.guard(async {
                tokio::select! {
                    Some(answer) = answers.next(), if applying => Step::Applied(answer),
                    Some(waited) = waits.next(), if !waits.is_empty() => Step::Waited(waited),
                    else => Step::Idle,
                }
            });
            match step.await {
                Ok(Step::Applied((index, op, answer, duration_ms))) => {
                    let target = &targets[index];
                    let (result, uid) = match answer {
                        Ok(answer) => (Ok(answer.ready), answer.uid),
                        Err(e) => (Err(e), None),
                    };
                    if result == Ok(true) {
                        self.progress.finish(&plan::label_of(target), "ready");
                    }
                    if wave_run.answered(report, target, index, op, result, duration_ms) {
                        let any_age = target.template_kept;
                        let (client, feeds) = (&self.cluster.client, &self.feeds);
                        let (progress, deadline) = (self.progress, self.limits.deadline);
                        waits.push(async move {
                            let uid = uid.as_deref();
                            let waited = wait::wait_for(
                                feeds, client, progress, target, uid, any_age, deadline,
                            );
                            (index, waited.await)
                        });
                    }
                }
                Ok(Step::Waited((index, result))) => wave_run.waited(report, index, result),
                Ok(Step::Idle) => break,
                Err(stop) => return Err(wave_run.stopped(report, targets, stop)),
            }
        }
        wave_run.outcome(report)
    }

    /// What pruning will remove, read and checked before the first write: never a Namespace
    /// or CRD the state still needs.
    async fn plan_removal(
        &self,
        previous: &BTreeMap<String, Inventory>,
        wanted: &BTreeMap<String, BTreeSet<ObjectRef>>,
    ) -> Result<removal::Removal, DeployError> {
        let owned = removal::stale(previous, wanted);
        let client = &self.cluster.client;
        let live = removal::live_stale(client, self.retrier, self.discovery, owned).await?;
        let forbidden = removal::forbidden(&live, wanted);
        if !forbidden.is_empty() {
            return Err(DeployError::Invalid(forbidden));
        }
        removal::removal(&live)
            .map_err(|e| DeployError::Invalid(vec![format!("ordering the objects to prune: {e}")]))
    }

    /// Records intent before anything is applied: each app's old and new objects together, so
    /// an interruption loses track of nothing.
    async fn record_intent(
        &self,
        inventories: &Inventories,
        previous: &BTreeMap<String, Inventory>,
        wanted: &BTreeMap<String, BTreeSet<ObjectRef>>,
        report: &DeployReport,
    ) -> Result<(), DeployError> {
        let intents = wanted.iter().map(|(app, objects)| {
            let before = previous.get(app);
            let mut union = before.map(|i| i.objects.clone()).unwrap_or_default();
            union.extend(objects.iter().cloned());
            let commit = before.map(|i| i.commit.clone()).unwrap_or_default();
            self.inventory(before, app, union, commit)
        });
        self.write_inventories(inventories, previous, intents.collect(), report)
            .await
    }

    /// The inventories narrowed to what the state has, and those of deleted apps removed.
    async fn settle_inventories(
        &self,
        inventories: &Inventories,
        previous: &BTreeMap<String, Inventory>,
        wanted: &BTreeMap<String, BTreeSet<ObjectRef>>,
        report: &mut DeployReport,
    ) -> Result<(), DeployError> {
        let settled = wanted.iter().map(|(app, objects)| {
            let commit = self.request.source.commits.get(app).cloned();
            let commit = commit.unwrap_or_default();
            self.inventory(previous.get(app), app, objects.clone(), commit)
        });
        self.write_inventories(inventories, previous, settled.collect(), report)
            .await?;
        for (app, gone) in previous
            .iter()
            .filter(|(app, _)| !wanted.contains_key(*app))
        {
            let deleted = self.limits.guard(inventories.delete(gone)).await;
            deleted.map_err(|stop| stop.failure(report, Vec::new()))??;
            report.deleted_apps.push(app.clone());
        }
        Ok(())
    }

    /// An app's inventory as this deploy records it (keeping the name of the one `before` it).
    fn inventory(
        &self,
        before: Option<&Inventory>,
        app: &str,
        objects: BTreeSet<ObjectRef>,
        commit: String,
    ) -> Inventory {
        Inventory {
            app: app.to_string(),
            objects,
            commit,
            updated: inventory::timestamp(),
            repository: self.request.source.repository.clone(),
            legacy_name: before.and_then(|b| b.legacy_name.clone()),
        }
    }

    /// Writes the inventories that record something new, `concurrency` at a time.
    async fn write_inventories(
        &self,
        inventories: &Inventories,
        previous: &BTreeMap<String, Inventory>,
        next: Vec<Inventory>,
        report: &DeployReport,
    ) -> Result<(), DeployError> {
        let changed = next
            .iter()
            .filter(|i| !previous.get(&i.app).is_some_and(|before| before.records(i)));
        let writes = futures_util::stream::iter(changed)
            .map(|inventory| inventories.write(inventory))
            .buffer_unordered(self.request.concurrency.max(1))
            .try_collect::<()>();
        let written = self.limits.guard(writes).await;
        Ok(written.map_err(|stop| stop.failure(report, Vec::new()))??)
    }
}

/// One step of a wave: an apply answered, a wait ended, or nothing left to do.
enum Step {
    Applied(apply::Outcome),
    Waited((usize, Result<(), WaitError>)),
    Idle,
}

/// Where a wave stands: what is not answered or not ready yet, each object's line in the
/// report, and what went wrong.
struct WaveRun {
    unanswered: BTreeSet<usize>,
    waiting: BTreeSet<usize>,
    positions: BTreeMap<usize, usize>,
    failure: Option<String>,
    timeouts: Vec<String>,
}

impl WaveRun {
    fn new(wave: &[usize]) -> Self {
        WaveRun {
            unanswered: wave.iter().copied().collect(),
            waiting: BTreeSet::new(),
            positions: BTreeMap::new(),
            failure: None,
            timeouts: Vec::new(),
        }
    }

    /// Every apply answered, and every wait ended (or, after a failure, no longer needed).
    fn settled(&self, no_waits: bool) -> bool {
        self.unanswered.is_empty() && (no_waits || self.failure.is_some())
    }

    /// Records an apply's answer; whether the object is to be waited for.
    fn answered(
        &mut self,
        report: &mut DeployReport,
        target: &Target,
        index: usize,
        op: Op,
        result: Result<bool, String>,
        duration_ms: u128,
    ) -> bool {
        self.unanswered.remove(&index);
        self.positions.insert(index, report.objects.len());
        let wait = matches!(result, Ok(false)) && self.failure.is_none();
        match &result {
            Ok(false) if wait => {
                self.waiting.insert(index);
            }
            Ok(_) => {}
            Err(e) => {
                let label = plan::label_of(target);
                self.failure.get_or_insert_with(|| format!("{label}: {e}"));
            }
        }
        let failed = result.is_err();
        let mut entry = ObjectReport::new(
            &target.desired.app,
            &target.reference,
            op,
            result.err(),
            duration_ms,
        );
        if !failed && let Some(note) = &target.take_back {
            entry.message = Some(note.clone());
        }
        report.objects.push(entry);
        wait
    }

    /// Puts a wait's outcome on its object's line.
    fn waited(&mut self, report: &mut DeployReport, index: usize, result: Result<(), WaitError>) {
        self.waiting.remove(&index);
        let entry = &mut report.objects[self.positions[&index]];
        match result {
            Ok(()) => {}
            Err(WaitError::Failed(reason)) => {
                entry.result = "failed".into();
                entry.message = Some(reason.clone());
                self.failure.get_or_insert(reason);
            }
            Err(WaitError::Timeout(last)) => {
                entry.result = "timeout".into();
                entry.message = Some(last.clone());
                self.timeouts.push(last);
            }
        }
    }

    /// The deploy's failure when a limit is reached: applies not yet answered, and objects
    /// not yet ready, are reported as not known.
    fn stopped(self, report: &mut DeployReport, targets: &[Target], stop: Stop) -> DeployError {
        for &index in &self.waiting {
            let entry = &mut report.objects[self.positions[&index]];
            entry.result = "unknown".into();
            entry.message = Some("applied; whether it got ready is not known".into());
        }
        for &index in &self.unanswered {
            let target = &targets[index];
            let op = if target.live_version.is_some() {
                Op::Update
            } else {
                Op::Create
            };
            let mut entry = ObjectReport::new(&target.desired.app, &target.reference, op, None, 0);
            entry.result = "unknown".into();
            entry.message =
                Some("sent, or about to be: whether it was applied is not known".into());
            report.objects.push(entry);
        }
        if let Some(reason) = self.failure {
            return failed(report, reason);
        }
        let unsettled = self
            .timeouts
            .into_iter()
            .chain(
                self.unanswered
                    .iter()
                    .chain(&self.waiting)
                    .map(|&i| plan::label_of(&targets[i])),
            )
            .collect();
        stop.failure(report, unsettled)
    }

    /// The first failure, else the timeouts, end the deploy.
    fn outcome(self, report: &DeployReport) -> Result<(), DeployError> {
        if let Some(reason) = self.failure {
            return Err(failed(report, reason));
        }
        if !self.timeouts.is_empty() {
            return Err(DeployError::Timeout {
                report: Box::new(report.clone()),
                waiting: self.timeouts,
            });
        }
        Ok(())
    }
}
