//! Deleting what the inventories own but the state no longer has (pruning), or all of it
//! (`delete app-group`): the upsert order backwards, each object waited for until it is gone.

use std::collections::BTreeSet;
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject};
use kube::discovery::Discovery;

use super::inventory::{APP_LABEL, GROUP_LABEL};
use super::lease::Fence;
use super::limits::{Limits, Stop};
use super::outcome::{DeployError, DeployReport, ObjectReport, Op, failed};
use super::removal::{Owned, Removal};
use super::request::{COMMIT_ANNOTATION, MANAGED_BY};
use crate::adapters::cluster::{self, Sighting};
use crate::adapters::retry::Retrier;
use crate::formats::object_ref::ObjectRef;
use crate::progress::Progress;

/// Deletions in flight at once.
const DELETE_CONCURRENCY: usize = 64;

/// Deletes objects holding the group's lock, and waits until they are gone.
pub(super) struct Deleter<'a> {
    pub client: &'a Client,
    pub progress: &'a dyn Progress,
    pub retrier: &'a Retrier,
    pub limits: &'a Limits,
}

impl Deleter<'_> {
    /// Deletes what the removal says, wave by wave, waiting until each object is gone, then
    /// lets the orphans go: they stay in the cluster without umbrella's labels.
    pub async fn remove(
        &self,
        discovery: &Discovery,
        removal: &Removal,
        report: &mut DeployReport,
    ) -> Result<(), DeployError> {
        for wave in &removal.deletion_waves {
            self.delete_wave(discovery, wave, report).await?;
        }
        for owned in &removal.orphans {
            let started = Instant::now();
            let guarded = self.limits.guard(self.let_go(discovery, &owned.1)).await;
            let result = guarded.map_err(|stop| stop.failure(report, vec![owned.1.to_string()]))?;
            let mut entry = ObjectReport::new(
                &owned.0,
                &owned.1,
                Op::Orphan,
                result.clone().err(),
                started.elapsed().as_millis(),
            );
            entry
                .message
                .get_or_insert_with(|| "let go: left in the cluster, no longer managed".into());
            report.objects.push(entry);
            if let Err(reason) = result {
                return Err(failed(report, format!("letting {} go: {reason}", owned.1)));
            }
        }
        Ok(())
    }

    /// Removes umbrella's labels and annotation from the object, leaving everything else.
    async fn let_go(&self, discovery: &Discovery, reference: &ObjectRef) -> Result<(), String> {
        let Some((resource, namespaced)) = cluster::resolve(discovery, reference) else {
            return Ok(());
        };
        let api = cluster::api_for(self.client, &resource, namespaced, reference);
        let patch = serde_json::json!({"metadata": {
            "labels": {MANAGED_BY: null, APP_LABEL: null, GROUP_LABEL: null},
            "annotations": {COMMIT_ANNOTATION: null},
        }});
        self.limits.fence.check().map_err(|e| e.to_string())?;
        let params = kube::api::PatchParams::default();
        let what = format!("letting {reference} go");
        let patch = kube::api::Patch::Merge(&patch);
        let patched = cluster::call(self.retrier, &what, || {
            api.patch(&reference.name, &params, &patch)
        });
        match patched.await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Deletes a wave at once, reporting each object as it goes; the first failure ends the
    /// prune, and losing the lock leaves the wave's unsettled objects reported as not known.
    pub async fn delete_wave(
        &self,
        discovery: &Discovery,
        wave: &[Owned],
        report: &mut DeployReport,
    ) -> Result<(), DeployError> {
        // Bounded: each deletion watches its object until it is gone, and thousands of watches
        // at once cost memory without going faster.
        let mut deletions = std::pin::pin!(
            futures_util::stream::iter(wave.iter().enumerate())
                .map(|(position, owned)| async move {
                    (position, self.delete_reported(discovery, owned).await)
                })
                .buffer_unordered(DELETE_CONCURRENCY)
        );
        let mut unsettled: BTreeSet<usize> = (0..wave.len()).collect();
        loop {
            let (position, (result, duration_ms)) = match self.limits.guard(deletions.next()).await
            {
                Ok(Some(next)) => next,
                Ok(None) => return Ok(()),
                Err(stop) => return Err(stopped_while_deleting(report, wave, &unsettled, stop)),
            };
            unsettled.remove(&position);
            let (app, reference) = &wave[position];
            let error = result.err();
            report.objects.push(ObjectReport::new(
                app,
                reference,
                Op::Delete,
                error.clone(),
                duration_ms,
            ));
            if let Some(reason) = error {
                return Err(failed(report, format!("deleting {reference}: {reason}")));
            }
        }
    }

    async fn delete_reported(
        &self,
        discovery: &Discovery,
        (app, reference): &Owned,
    ) -> (Result<(), String>, u128) {
        let label = format!("{app} {reference}");
        self.progress.update(&label, "deleting");
        let started = Instant::now();
        let result = self.delete_one(discovery, reference).await;
        let news = if result.is_ok() {
            "deleted"
        } else {
            "FAILED to delete"
        };
        self.progress.finish(&label, news);
        (result, started.elapsed().as_millis())
    }

    async fn delete_one(&self, discovery: &Discovery, reference: &ObjectRef) -> Result<(), String> {
        let Some((resource, namespaced)) = cluster::resolve(discovery, reference) else {
            // Its kind is gone (a CRD deleted first): so is the object.
            return Ok(());
        };
        let api = cluster::api_for(self.client, &resource, namespaced, reference);
        let gone = delete_until_gone(&api, reference, self.retrier, &self.limits.fence);
        tokio::time::timeout_at(self.limits.deadline, gone)
            .await
            .map_err(|_| "still there at the wait timeout".to_string())?
    }
}

/// Deletes the object and waits until it is gone (the caller bounds the wait).
pub(super) async fn delete_until_gone(
    api: &Api<DynamicObject>,
    reference: &ObjectRef,
    retrier: &Retrier,
    fence: &Fence,
) -> Result<(), String> {
    fence.check().map_err(|e| e.to_string())?;
    let what = format!("deleting {reference}");
    let params = DeleteParams::background();
    let deleted = cluster::call(retrier, &what, || api.delete(&reference.name, &params));
    match deleted.await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.to_string()),
    }
    let mut sightings = std::pin::pin!(cluster::watch_one(api.clone(), &reference.name));
    loop {
        match sightings.try_next().await {
            Ok(Some(Sighting::Gone) | None) => return Ok(()),
            Ok(Some(Sighting::Seen(_))) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The prune's failure when a limit is reached while deleting: the deletions not yet
/// answered are reported as not known.
fn stopped_while_deleting(
    report: &mut DeployReport,
    wave: &[Owned],
    unsettled: &BTreeSet<usize>,
    stop: Stop,
) -> DeployError {
    for &position in unsettled {
        let (app, reference) = &wave[position];
        let mut entry = ObjectReport::new(app, reference, Op::Delete, None, 0);
        entry.result = "unknown".into();
        entry.message =
            Some("a delete sent, or about to be: whether it happened is not known".into());
        report.objects.push(entry);
    }
    let waiting = unsettled
        .iter()
        .map(|&p| format!("deleting {}", wave[p].1))
        .collect();
    stop.failure(report, waiting)
}
