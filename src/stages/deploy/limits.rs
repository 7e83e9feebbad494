//! What ends a deploy's work early, by the clock whatever the API server does: losing the
//! group's lock, or reaching `--wait-timeout`.

use tokio::time::Instant;

use super::lease::{Fence, LeaseError};
use super::outcome::{DeployError, DeployReport, failed};

/// The lock's fence and the deploy's deadline.
pub(super) struct Limits {
    pub fence: Fence,
    pub deadline: Instant,
}

/// Why the work was stopped.
pub(super) enum Stop {
    Lost(LeaseError),
    Deadline,
}

impl Limits {
    /// Runs `work` within the limits: `Err` as soon as one is reached, `work` dropped (and with
    /// it every request it has in flight).
    pub async fn guard<T>(&self, work: impl Future<Output = T>) -> Result<T, Stop> {
        self.fence.check().map_err(Stop::Lost)?;
        if Instant::now() >= self.deadline {
            return Err(Stop::Deadline);
        }
        tokio::select! {
            done = work => Ok(done),
            lost = self.fence.lost() => Err(Stop::Lost(lost)),
            _ = tokio::time::sleep_until(self.deadline) => Err(Stop::Deadline),
        }
    }
}

impl Stop {
    /// The deploy's failure, with what it did so far and what was still under way.
    pub fn failure(self, report: &DeployReport, unsettled: Vec<String>) -> DeployError {
        match self {
            Stop::Lost(lost) => failed(report, lost.to_string()),
            Stop::Deadline => DeployError::Timeout {
                report: Box::new(report.clone()),
                waiting: if unsettled.is_empty() {
                    vec!["the deploy's writes (--wait-timeout)".into()]
                } else {
                    unsettled
                },
            },
        }
    }
}
