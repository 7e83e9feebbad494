//! Running a phase of helm hooks holding the group's lock: weight by weight, each weight in
//! kapp's order and waited for (a Job until complete, a Pod until it succeeded), with helm's
//! delete policies around it. The decisions are in [`super::hooks`].

use std::collections::BTreeSet;

use super::apply::Applier;
use super::hooks::{Phase, phase_hooks};
use super::outcome::{DeployError, DeployReport};
use super::plan::HookPlan;
use super::run::Run;

impl Run<'_> {
    /// Runs the hooks of `phase`: weight by weight, the previous objects deleted first
    /// (`before-hook-creation`), then applied and waited for; `hook-failed` hooks are deleted
    /// when their weight fails, `hook-succeeded` ones once the whole phase succeeded.
    pub(super) async fn run_hooks(
        &self,
        applier: &Applier<'_>,
        hooks: &mut HookPlan,
        phase: Phase,
        report: &mut DeployReport,
    ) -> Result<(), DeployError> {
        let weights = phase_hooks(&hooks.hooks, &hooks.operations, phase);
        let deleter = self.deleter();
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
        hooks: &mut HookPlan,
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
