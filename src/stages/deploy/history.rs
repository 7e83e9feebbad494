//! `umbrella history` and `umbrella rollback`: which of an environment's state commits is live
//! in the cluster, and which one a rollback deploys.

use std::collections::BTreeSet;
use std::path::Path;

use super::outcome::DeployError;
use super::request::Group;
use crate::adapters::git::{self, GitError, StateCommit};
use crate::adapters::retry::Retrier;
use crate::exit::{self, ExitStatus};
use crate::formats::layout;

/// The state commits of the environment, newest first (HEAD's first-parent line).
pub fn state_commits(root: &Path, env: &str) -> Result<Vec<StateCommit>, GitError> {
    git::history(root, &layout::env_path(env))
}

/// The commits the group's inventories record as deployed.
pub async fn recorded_commits(group: &Group) -> Result<BTreeSet<String>, DeployError> {
    let cluster = group.connect().await?;
    let inventories = group.inventories(&cluster.client, &Retrier::default());
    let inventories = inventories.list().await?;
    Ok(inventories.into_iter().map(|i| i.commit).collect())
}

/// The state commit live in the cluster: the newest of the history that an inventory records.
pub fn live_commit<'a>(
    history: &'a [StateCommit],
    recorded: &BTreeSet<String>,
) -> Option<&'a StateCommit> {
    history.iter().find(|c| recorded.contains(&c.sha))
}

/// Why there is nothing to roll back to.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("no state commit of {env} before the live one ({})", &live[..12.min(live.len())])]
    NothingBefore { env: String, live: String },
    #[error("no state commit of {env} is live in the cluster; pass --to REV")]
    NothingLive { env: String },
    #[error("cannot tell which commit is live: {0}")]
    Unknown(String),
}

impl ExitStatus for RollbackError {
    fn exit_code(&self) -> u8 {
        match self {
            RollbackError::Unknown(_) => exit::FAILURE,
            _ => exit::REFUSED,
        }
    }
}

/// The commit a rollback deploys: the state commit before the live one.
pub fn rollback_target(
    env: &str,
    history: &[StateCommit],
    live: Option<&StateCommit>,
) -> Result<String, RollbackError> {
    let Some(live) = live else {
        return Err(RollbackError::NothingLive { env: env.into() });
    };
    history
        .iter()
        .skip_while(|c| c.sha != live.sha)
        .nth(1)
        .map(|c| c.sha.clone())
        .ok_or_else(|| RollbackError::NothingBefore {
            env: env.into(),
            live: live.sha.clone(),
        })
}

/// The commit `rollback` deploys when no `--to` names one.
pub async fn previous_commit(root: &Path, group: &Group) -> Result<String, RollbackError> {
    let history =
        state_commits(root, &group.env).map_err(|e| RollbackError::Unknown(e.to_string()))?;
    let recorded = recorded_commits(group)
        .await
        .map_err(|e| RollbackError::Unknown(e.to_string()))?;
    rollback_target(&group.env, &history, live_commit(&history, &recorded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(sha: &str) -> StateCommit {
        StateCommit {
            sha: sha.repeat(40),
            time: 0,
            summary: String::new(),
            source_commit: None,
            images: Vec::new(),
        }
    }

    #[test]
    fn the_live_commit_is_the_newest_recorded_and_rollback_takes_the_one_before() {
        let history = [commit("c"), commit("b"), commit("a")];
        let recorded = BTreeSet::from(["a".repeat(40), "b".repeat(40), "x".repeat(40)]);
        let live = live_commit(&history, &recorded);
        assert_eq!(live.map(|c| c.sha.as_str()), Some("b".repeat(40).as_str()));
        assert_eq!(
            rollback_target("prod", &history, live).unwrap(),
            "a".repeat(40)
        );
        let oldest = live_commit(&history, &BTreeSet::from(["a".repeat(40)]));
        assert!(matches!(
            rollback_target("prod", &history, oldest),
            Err(RollbackError::NothingBefore { .. })
        ));
        let none = live_commit(&history, &BTreeSet::new());
        let error = rollback_target("prod", &history, none).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no state commit of prod is live in the cluster; pass --to REV"
        );
        assert_eq!(error.exit_code(), exit::REFUSED);
    }
}
