//! Running a phase of helm hooks holding the group's lock: weight by weight, each weight in
//! kapp's order and waited for (a Job until complete, a Pod until it succeeded), with helm's
//! delete policies around it. The decisions are in [`super::hooks`].

use std::collections::{BTreeMap, BTreeSet};

use kube::discovery::Discovery;

use super::apply::Applier;
use super::hooks::{Hook, Operation, Phase, phase_hooks};
use super::outcome::DeployError;
use super::plan::{self, StateCrds, Target};
use super::prune::Deleter;
use super::removal::Owned;
use super::{DeployReport, Run};

/// The hooks of the state, resolved against the cluster, and what each app is under.
pub(super) struct Hooks {
    pub hooks: Vec<Hook>,
    pub targets: Vec<Target>,
    pub waves: Vec<Vec<usize>>,
    pub operations: BTreeMap<String, Operation>,
}

impl Hooks {
    /// The hooks with their targets and their kapp order (applied weight by weight).
    pub fn new(
        hooks: Vec<Hook>,
        discovery: &Discovery,
        state_crds: &StateCrds,
    ) -> Result<Self, DeployError> {
        let targets =
            plan::targets_of(hooks.iter().map(|h| h.desired.clone()).collect(), discovery);
        let waves = plan::plan_waves(&targets, state_crds)?;
        Ok(Hooks {
            hooks,
            targets,
            waves,
            operations: BTreeMap::new(),
        })
    }

    fn owned(&self, indexes: impl IntoIterator<Item = usize>) -> Vec<Owned> {
        indexes
            .into_iter()
            .map(|i| {
                (
                    self.hooks[i].desired.app.clone(),
                    self.targets[i].reference.clone(),
                )
            })
            .collect()
    }
}

impl Run<'_> {
    /// Runs the hooks of `phase`: weight by weight, the previous objects deleted first
    /// (`before-hook-creation`), then applied and waited for; `hook-failed` hooks are deleted
    /// when their weight fails, `hook-succeeded` ones once the whole phase succeeded.
    pub(super) async fn run_hooks(
        &self,
        applier: &Applier<'_>,
        hooks: &mut Hooks,
        phase: Phase,
        report: &mut DeployReport,
    ) -> Result<(), DeployError> {
        let weights = phase_hooks(&hooks.hooks, &hooks.operations, phase);
        let deleter = Deleter {
            client: &self.cluster.client,
            progress: self.progress,
            retrier: self.retrier,
            limits: &self.limits,
        };
        for weight in &weights {
            let replaced = weight
                .iter()
                .copied()
                .filter(|&i| hooks.hooks[i].delete.before_creation);
            deleter
                .delete_wave(self.discovery, &hooks.owned(replaced), report)
                .await?;
            if let Err(error) = self.run_weight(applier, hooks, weight, report).await {
                let failed = weight
                    .iter()
                    .copied()
                    .filter(|&i| hooks.hooks[i].delete.failed);
                // The failure is what matters; a failed clean-up is in the report.
                let _ = deleter
                    .delete_wave(self.discovery, &hooks.owned(failed), report)
                    .await;
                return Err(error);
            }
        }
        let succeeded = weights
            .iter()
            .flatten()
            .copied()
            .filter(|&i| hooks.hooks[i].delete.succeeded);
        deleter
            .delete_wave(self.discovery, &hooks.owned(succeeded), report)
            .await
    }

    /// Applies and waits for the hooks of one weight, in kapp's order.
    async fn run_weight(
        &self,
        applier: &Applier<'_>,
        hooks: &mut Hooks,
        weight: &[usize],
        report: &mut DeployReport,
    ) -> Result<(), DeployError> {
        let members: BTreeSet<usize> = weight.iter().copied().collect();
        let waves: Vec<Vec<usize>> = hooks
            .waves
            .iter()
            .map(|wave| {
                wave.iter()
                    .copied()
                    .filter(|i| members.contains(i))
                    .collect()
            })
            .filter(|wave: &Vec<usize>| !wave.is_empty())
            .collect();
        self.run_waves(applier, &mut hooks.targets, &waves, report)
            .await
    }
}
