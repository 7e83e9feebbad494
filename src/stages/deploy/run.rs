//! One deploy under way, holding the group's lock: the waves applied and waited for, the
//! hooks around them, pruning, and the inventories recorded before and after.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
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
}

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
        let previous = inventories.by_app().await?;
        let env = &self.request.group.env;
        let ours = &self.request.source.repository;
        if let Some(other) = inventory::other_repository(env, &previous, ours) {
            return Err(DeployError::Invalid(vec![other]));
        }
        let wanted = plan::wanted_by_app(&targets);
        let emptying = removal::emptying(env, &wanted, &previous);
        if let Some(why) = emptying.filter(|_| !self.request.allow_empty) {
            return Err(DeployError::Invalid(vec![why]));
        }
        let client = &self.cluster.client;
        let applier = apply::Applier {
            client,
            request: self.request,
            retrier: self.retrier,
        };
        applier.preflight(&mut targets, state_crds).await?;
        let removal = self.plan_removal(&previous, &wanted).await?;
        let mut report = DeployReport {
            env: self.request.group.env.clone(),
            ..Default::default()
        };
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
            self.run_wave(applier, targets, wave, report).await?;
        }
        Ok(())
    }

    /// Applies a wave, then waits for what its answers did not show ready. Each outcome is
    /// reported as it comes; the objects still unsettled when a limit is reached are reported
    /// as such.
    async fn run_wave(
        &self,
        applier: &apply::Applier<'_>,
        targets: &[Target],
        wave: &[usize],
        report: &mut DeployReport,
    ) -> Result<(), DeployError> {
        let applied = self.apply_wave(applier, targets, wave, report).await?;
        let client = &self.cluster.client;
        let waits = wait::wait_wave(
            client,
            self.progress,
            targets,
            &applied.to_wait,
            &applied.templates_kept,
            self.limits.deadline,
        );
        match self.limits.guard(waits).await {
            Ok(waited) => settle_waits(report, &applied.positions, waited),
            Err(stop) => {
                for index in &applied.to_wait {
                    let entry = &mut report.objects[applied.positions[index]];
                    entry.result = "unknown".into();
                    entry.message = Some("applied; whether it got ready is not known".into());
                }
                let waiting = applied
                    .to_wait
                    .iter()
                    .map(|&i| plan::label_of(&targets[i]))
                    .collect();
                Err(stop.failure(report, waiting))
            }
        }
    }

    /// Applies the wave's objects, reporting each as its answer comes; the first failure ends
    /// the deploy once the wave's applies are answered.
    async fn apply_wave(
        &self,
        applier: &apply::Applier<'_>,
        targets: &[Target],
        wave: &[usize],
        report: &mut DeployReport,
    ) -> Result<Applied, DeployError> {
        let fence = &self.limits.fence;
        let mut answers = std::pin::pin!(applier.apply_wave(self.progress, fence, targets, wave));
        let mut unsettled: BTreeSet<usize> = wave.iter().copied().collect();
        let mut applied = Applied::default();
        let mut failure = None;
        loop {
            let (index, op, result, duration_ms) = match self.limits.guard(answers.next()).await {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(stop) => return Err(stopped_during(report, targets, &unsettled, stop)),
            };
            unsettled.remove(&index);
            applied.positions.insert(index, report.objects.len());
            let label = plan::label_of(&targets[index]);
            match &result {
                Ok(true) => self.progress.finish(&label, "ready"),
                Ok(false) => applied.waiting(index, &targets[index]),
                Err(e) => {
                    failure.get_or_insert_with(|| format!("{label}: {e}"));
                }
            }
            let target = &targets[index];
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
        }
        match failure {
            Some(reason) => Err(failed(report, reason)),
            None => Ok(applied),
        }
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
        for (app, objects) in wanted {
            let before = previous.get(app);
            let mut union = before.map(|i| i.objects.clone()).unwrap_or_default();
            union.extend(objects.iter().cloned());
            let commit = before.map(|i| i.commit.clone()).unwrap_or_default();
            self.write_inventory(inventories, before, app, union, commit, report)
                .await?;
        }
        Ok(())
    }

    /// The inventories narrowed to what the state has, and those of deleted apps removed.
    async fn settle_inventories(
        &self,
        inventories: &Inventories,
        previous: &BTreeMap<String, Inventory>,
        wanted: &BTreeMap<String, BTreeSet<ObjectRef>>,
        report: &mut DeployReport,
    ) -> Result<(), DeployError> {
        for (app, objects) in wanted {
            let commit = self.request.source.commits.get(app).cloned();
            let before = previous.get(app);
            let commit = commit.unwrap_or_default();
            self.write_inventory(inventories, before, app, objects.clone(), commit, report)
                .await?;
        }
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

    /// Writes an app's inventory (the one `before` it is replaced, whatever its form).
    async fn write_inventory(
        &self,
        inventories: &Inventories,
        before: Option<&Inventory>,
        app: &str,
        objects: BTreeSet<ObjectRef>,
        commit: String,
        report: &DeployReport,
    ) -> Result<(), DeployError> {
        let inventory = Inventory {
            app: app.to_string(),
            objects,
            commit,
            updated: inventory::timestamp(),
            repository: self.request.source.repository.clone(),
            legacy_name: before.and_then(|b| b.legacy_name.clone()),
        };
        if before.is_some_and(|b| b.records(&inventory)) {
            return Ok(());
        }
        let written = self.limits.guard(inventories.write(&inventory)).await;
        Ok(written.map_err(|stop| stop.failure(report, Vec::new()))??)
    }
}

/// The deploy's failure when a limit is reached during a wave's applies: the applies not yet
/// answered are reported as not known.
fn stopped_during(
    report: &mut DeployReport,
    targets: &[Target],
    unsettled: &BTreeSet<usize>,
    stop: Stop,
) -> DeployError {
    for &index in unsettled {
        let target = &targets[index];
        let op = if target.live_version.is_some() {
            Op::Update
        } else {
            Op::Create
        };
        let mut entry = ObjectReport::new(&target.desired.app, &target.reference, op, None, 0);
        entry.result = "unknown".into();
        entry.message = Some("sent, or about to be: whether it was applied is not known".into());
        report.objects.push(entry);
    }
    let waiting = unsettled
        .iter()
        .map(|&i| plan::label_of(&targets[i]))
        .collect();
    stop.failure(report, waiting)
}

/// What a wave's applies left to do.
#[derive(Default)]
struct Applied {
    /// Each object's line in the report.
    positions: BTreeMap<usize, usize>,
    /// The objects to wait for, and those of them whose pod template the apply kept.
    to_wait: Vec<usize>,
    templates_kept: BTreeSet<usize>,
}

impl Applied {
    fn waiting(&mut self, index: usize, target: &Target) {
        self.to_wait.push(index);
        if target.template_kept {
            self.templates_kept.insert(index);
        }
    }
}

/// Puts each wait's outcome on its object's line; the first failure, or the timeouts, end the
/// deploy.
fn settle_waits(
    report: &mut DeployReport,
    positions: &BTreeMap<usize, usize>,
    waited: Vec<(usize, Result<(), WaitError>)>,
) -> Result<(), DeployError> {
    let (mut failure, mut waiting) = (None, Vec::new());
    for (index, result) in waited {
        let entry = &mut report.objects[positions[&index]];
        match result {
            Ok(()) => {}
            Err(WaitError::Failed(reason)) => {
                entry.result = "failed".into();
                entry.message = Some(reason.clone());
                failure.get_or_insert(reason);
            }
            Err(WaitError::Timeout(last)) => {
                entry.result = "timeout".into();
                entry.message = Some(last.clone());
                waiting.push(last);
            }
        }
    }
    if let Some(reason) = failure {
        return Err(failed(report, reason));
    }
    if !waiting.is_empty() {
        return Err(DeployError::Timeout {
            report: Box::new(report.clone()),
            waiting,
        });
    }
    Ok(())
}
