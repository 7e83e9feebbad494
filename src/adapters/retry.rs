//! One retry policy for every call to the outside world that failed for a passing reason (a
//! connection refused or reset, a timeout, 429, 5xx): bounded exponential backoff with jitter,
//! a server's `Retry-After` honoured up to the cap, and a time budget after which the failure
//! is final. Each retry is reported (live and in the command's report) before it sleeps.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::progress::Progress;

/// How long failing calls are tried again, and how fast.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Retries stop once this much time has passed since the first failure.
    pub budget: Duration,
    /// The first delay; each next one doubles, up to `cap`.
    pub base: Duration,
    pub cap: Duration,
}

/// The policy of API server and registry calls: they ride out an outage of about 30 s.
pub const DEFAULT: Policy = Policy {
    budget: Duration::from_secs(30),
    base: Duration::from_millis(250),
    cap: Duration::from_secs(5),
};

/// What a failure says about trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Trying again cannot help.
    Final,
    /// A passing failure; the server may say how long to wait.
    Again(Option<Duration>),
}

/// One retry, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryNote {
    /// What was being done (`apply ConfigMap/x in ns`, `registry r:5000: /v2/`).
    pub what: String,
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    pub error: String,
    pub delay_ms: u128,
}

/// Retries with one policy, telling a command's progress and keeping the notes for its report.
#[derive(Clone)]
pub struct Retrier {
    policy: Policy,
    progress: Option<Arc<dyn Progress>>,
    notes: Arc<Mutex<Vec<RetryNote>>>,
}

impl Default for Retrier {
    fn default() -> Self {
        Retrier {
            policy: DEFAULT,
            progress: None,
            notes: Arc::default(),
        }
    }
}

impl Retrier {
    /// Retries with the default policy, each one shown on `progress`.
    pub fn reporting(progress: Arc<dyn Progress>) -> Self {
        Retrier {
            progress: Some(progress),
            ..Default::default()
        }
    }

    /// The same, with another policy (tests, benchmarks).
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Every retry so far.
    pub fn notes(&self) -> Vec<RetryNote> {
        self.notes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Calls `call` until it succeeds, fails for good, or the budget is spent.
    pub async fn run<T, E, F, Fut>(
        &self,
        what: &str,
        classify: impl Fn(&E) -> Verdict,
        mut call: F,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 1;
        let mut first_failure = None;
        loop {
            let error = match call().await {
                Ok(done) => return Ok(done),
                Err(error) => error,
            };
            let Verdict::Again(asked) = classify(&error) else {
                return Err(error);
            };
            let since = *first_failure.get_or_insert_with(Instant::now);
            let delay = delay(&self.policy, attempt, asked);
            if since.elapsed() + delay > self.policy.budget {
                return Err(error);
            }
            self.note(what, attempt, &error, delay);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Reports a retry a caller makes by its own rule (one that [`Retrier::run`] cannot
    /// express), before it sleeps `delay`.
    pub fn note(&self, what: &str, attempt: u32, error: &impl std::fmt::Display, delay: Duration) {
        let note = RetryNote {
            what: what.to_string(),
            attempt,
            error: error.to_string(),
            delay_ms: delay.as_millis(),
        };
        if let Some(progress) = &self.progress {
            progress.update(
                what,
                &format!(
                    "retrying in {:.1}s (attempt {attempt} failed: {})",
                    delay.as_secs_f64(),
                    note.error
                ),
            );
        }
        self.notes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(note);
    }
}

/// The wait before attempt `attempt + 1`: doubling from the base, up to the cap, with a random
/// quarter taken off (so many clients do not retry in step); what the server asked for, when
/// it asked, up to the cap.
pub fn delay(policy: &Policy, attempt: u32, asked: Option<Duration>) -> Duration {
    if let Some(asked) = asked {
        return asked.min(policy.cap);
    }
    let exponential = policy
        .base
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(policy.cap);
    let jitter = exponential.mul_f64(0.25 * random_fraction());
    exponential - jitter
}

/// A number in [0, 1) that differs from call to call; not for secrets.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        budget: Duration::from_secs(3),
        base: Duration::from_millis(100),
        cap: Duration::from_secs(1),
    };

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_and_honour_the_server() {
        for attempt in 1..8 {
            let full = Duration::from_millis(100 << (attempt - 1)).min(Duration::from_secs(1));
            let got = delay(&POLICY, attempt, None);
            assert!(
                got <= full && got >= full.mul_f64(0.75),
                "attempt {attempt}: {got:?}"
            );
        }
        assert_eq!(
            delay(&POLICY, 1, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        assert_eq!(
            delay(&POLICY, 1, Some(Duration::from_secs(60))),
            Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn passing_failures_are_retried_within_the_budget_and_noted() {
        let retrier = Retrier::default().with_policy(POLICY);
        let calls = std::sync::atomic::AtomicU32::new(0);
        let result: Result<u32, String> = retrier
            .run(
                "thing",
                |_| Verdict::Again(None),
                || async {
                    let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if n < 3 {
                        Err(format!("reset {n}"))
                    } else {
                        Ok(n)
                    }
                },
            )
            .await;
        assert_eq!(result, Ok(3));
        let notes = retrier.notes();
        assert_eq!(notes.len(), 3);
        assert_eq!((notes[0].attempt, notes[0].error.as_str()), (1, "reset 0"));
        // Final failures are not retried; a budget spent ends the retries.
        let final_only: Result<(), &str> = retrier
            .run("x", |_| Verdict::Final, || async { Err("no") })
            .await;
        assert_eq!(final_only, Err("no"));
        let started = Instant::now();
        let forever: Result<(), &str> = retrier
            .run("y", |_| Verdict::Again(None), || async { Err("down") })
            .await;
        assert_eq!(forever, Err("down"));
        assert!(
            started.elapsed() <= POLICY.budget,
            "{:?}",
            started.elapsed()
        );
    }
}
