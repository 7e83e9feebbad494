//! What a deploy is asked to do: which app group in which cluster, which state, and how; and
//! the marks umbrella puts on what it applies.

use std::time::Duration;

use kube::Client;

use super::inventory::Inventories;
use super::outcome::DeployError;
use super::source::DeploySource;
use crate::adapters::cluster::Cluster;
use crate::adapters::retry::Retrier;

/// The annotation with the state commit an object was deployed from.
pub const COMMIT_ANNOTATION: &str = "umbrella.dev/state-commit";
pub(super) const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub(super) const DISABLE_WAIT: &str = "kapp.k14s.io/disable-wait";

/// Which app group, in which cluster.
#[derive(Debug, Clone)]
pub struct Group {
    pub env: String,
    /// The kubeconfig context; the current one when `None`.
    pub context: Option<String>,
    /// Where the group's inventories and deploy lock live.
    pub inventory_namespace: String,
}

impl Group {
    pub(super) async fn connect(&self) -> Result<Cluster, DeployError> {
        Ok(Cluster::connect(self.context.as_deref()).await?)
    }

    pub(super) fn inventories(&self, client: &Client, retrier: &Retrier) -> Inventories {
        Inventories::new(
            client.clone(),
            &self.inventory_namespace,
            &self.env,
            retrier,
        )
    }
}

/// What to deploy, and how.
#[derive(Debug)]
pub struct DeployRequest {
    pub group: Group,
    pub source: DeploySource,
    pub wait_timeout: Duration,
    pub concurrency: usize,
    pub force_conflicts: bool,
    pub adopt: bool,
    pub lock_timeout: Duration,
    /// Deploy even when the state is empty or drops every app of the group.
    pub allow_empty: bool,
    /// A rollback: changed apps run their `pre-rollback`/`post-rollback` hooks.
    pub rollback: bool,
}
