//! What a deploy, prune or delete did, object by object, and how it can fail.

use serde::Serialize;

use super::inventory::InventoryError;
use super::lease::LeaseError;
use crate::adapters::cluster::ClusterError;
use crate::adapters::retry::RetryNote;
use crate::exit::{self, ExitStatus};
use crate::formats::object_ref::ObjectRef;

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Create,
    Update,
    /// Deleted and created again: a field that cannot change did (kapp's update strategies).
    Replace,
    Unchanged,
    Delete,
    /// Let go (kapp's `delete-strategy: orphan`): left in the cluster, no longer managed.
    Orphan,
}

/// What happened to one object in a deploy, prune or delete.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReport {
    pub app: String,
    pub object: String,
    pub op: Op,
    /// `ok`, `failed` or `timeout`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub duration_ms: u128,
}

impl ObjectReport {
    /// `ok`, or `failed` with the error as the message.
    pub(super) fn new(
        app: &str,
        object: &ObjectRef,
        op: Op,
        error: Option<String>,
        duration_ms: u128,
    ) -> Self {
        ObjectReport {
            app: app.to_string(),
            object: object.to_string(),
            op,
            result: if error.is_some() {
                "failed".into()
            } else {
                "ok".into()
            },
            message: error,
            duration_ms,
        }
    }
}

/// Everything a deploy (or delete) did, object by object.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployReport {
    pub env: String,
    pub objects: Vec<ObjectReport>,
    pub deleted_apps: Vec<String>,
    pub duration_ms: u128,
    /// Calls that failed for a passing reason and were tried again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<RetryNote>,
}

/// The deploy did not succeed. Each variant has its exit status (see README).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("invalid input:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("{0}")]
    Preflight(String),
    #[error("a temporary directory: {0}")]
    Scratch(std::io::Error),
    #[error("{reason}")]
    Failed {
        report: Box<DeployReport>,
        reason: String,
    },
    #[error("timed out; still not ready:\n  {}", waiting.join("\n  "))]
    Timeout {
        report: Box<DeployReport>,
        waiting: Vec<String>,
    },
}

impl DeployError {
    /// The same failure, its report (if any) saying how long the work ran.
    pub(super) fn with_duration(mut self, started: std::time::Instant) -> Self {
        if let DeployError::Failed { report, .. } | DeployError::Timeout { report, .. } = &mut self
        {
            report.duration_ms = started.elapsed().as_millis();
        }
        self
    }

    /// The report of what was applied before the failure, if anything was.
    pub fn report(&self) -> Option<&DeployReport> {
        match self {
            DeployError::Failed { report, .. } | DeployError::Timeout { report, .. } => {
                Some(report)
            }
            _ => None,
        }
    }
}

impl ExitStatus for DeployError {
    fn exit_code(&self) -> u8 {
        match self {
            DeployError::Invalid(_) => exit::REFUSED,
            DeployError::Timeout { .. } => exit::TIMEOUT,
            _ => exit::FAILURE,
        }
    }
}

/// The deploy failed after writing: the report of what was done, and why.
pub(super) fn failed(report: &DeployReport, reason: String) -> DeployError {
    DeployError::Failed {
        report: Box::new(report.clone()),
        reason,
    }
}
