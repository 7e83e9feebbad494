//! `umbrella ci`: build, then render, then commit (the CI job's one step), after moving image
//! tags by policy with `--update-images`; it stops at the first stage that fails, keeping what
//! the stages before it reported. An update is its own commit (the values files), so the state
//! commit that follows names it as its source: two commits, each reviewable alone.

use std::sync::Arc;

use super::build::{self, BuildError, BuildReport, BuildRequest};
use super::commit::{self, CommitError, CommitOutcome, CommitRequest};
use super::render::{self, RenderError, RenderRequest, Rendered};
use super::update::{self, UpdateError, UpdateRequest, Updated};
use crate::exit::{self, ExitStatus};
use crate::progress::Progress;

/// The stages' requests.
#[derive(Debug, Clone)]
pub struct CiRequest {
    /// Image tags moved by policy first (`--update-images`).
    pub update: Option<UpdateRequest>,
    pub build: BuildRequest,
    pub render: RenderRequest,
    pub commit: CommitRequest,
}

/// What every stage that ran returned: `render` is `None` when the build failed, `commit` when
/// the render failed or only checked (`--check` commits nothing).
#[derive(Debug)]
pub struct CiReport {
    pub update: Option<Updated>,
    pub build: BuildReport,
    pub render: Option<Result<Rendered, RenderError>>,
    pub commit: Option<Result<CommitOutcome, CommitError>>,
}

impl CiReport {
    /// The stage that failed and stopped the others, if one did.
    pub fn stopped_at(&self) -> Option<&'static str> {
        if !self.build.succeeded() {
            Some("build")
        } else if matches!(self.render, Some(Err(_))) {
            Some("render")
        } else {
            None
        }
    }
}

impl ExitStatus for CiReport {
    fn exit_code(&self) -> u8 {
        match (&self.render, &self.commit) {
            _ if !self.build.succeeded() => self.build.exit_code(),
            (Some(Err(error)), _) => error.exit_code(),
            (_, Some(Err(error))) => error.exit_code(),
            _ => exit::SUCCESS,
        }
    }
}

/// Why `ci` stopped before any build.
#[derive(Debug, thiserror::Error)]
pub enum CiError {
    #[error("images update: {0}")]
    Update(#[from] UpdateError),
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl ExitStatus for CiError {
    fn exit_code(&self) -> u8 {
        match self {
            CiError::Update(error) => error.exit_code(),
            CiError::Build(error) => error.exit_code(),
        }
    }
}

/// Runs the stages in order. An update that failed, or a build that could not start, is an
/// error; a stage that ran and failed is in the report, with everything before it.
pub async fn run(request: &CiRequest, progress: Arc<dyn Progress>) -> Result<CiReport, CiError> {
    let updated = match &request.update {
        Some(update) => Some(update::run(update).await?),
        None => None,
    };
    let mut report = CiReport {
        update: updated,
        build: build::build(&request.build, progress.clone()).await?,
        render: None,
        commit: None,
    };
    if !report.build.succeeded() {
        return Ok(report);
    }
    let rendered = render::run(&request.render, progress).await;
    let commit = rendered.is_ok() && !request.render.check;
    report.render = Some(rendered);
    if commit {
        report.commit = Some(commit::commit_state(&request.commit));
    }
    Ok(report)
}
