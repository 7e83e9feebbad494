//! `umbrella ci`: build, then render, then commit (the CI job's one step); it stops at the first
//! stage that fails, keeping what the stages before it reported.

use std::sync::Arc;

use super::build::{self, BuildError, BuildReport, BuildRequest};
use super::commit::{self, CommitError, CommitOutcome, CommitRequest};
use super::render::{self, RenderError, RenderRequest, Rendered};
use crate::exit::{self, ExitStatus};
use crate::progress::Progress;

/// The three stages' requests.
#[derive(Debug, Clone)]
pub struct CiRequest {
    pub build: BuildRequest,
    pub render: RenderRequest,
    pub commit: CommitRequest,
}

/// What every stage that ran returned: `render` is `None` when the build failed, `commit` when
/// the render failed or only checked (`--check` commits nothing).
#[derive(Debug)]
pub struct CiReport {
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

/// Runs the stages in order. A build that could not start is an error; a stage that ran and
/// failed is in the report, with everything before it.
pub async fn run(request: &CiRequest, progress: Arc<dyn Progress>) -> Result<CiReport, BuildError> {
    let mut report = CiReport {
        build: build::build(&request.build, progress).await?,
        render: None,
        commit: None,
    };
    if !report.build.succeeded() {
        return Ok(report);
    }
    let rendered = render::run(&request.render).await;
    let commit = rendered.is_ok() && !request.render.check;
    report.render = Some(rendered);
    if commit {
        report.commit = Some(commit::commit_state(&request.commit));
    }
    Ok(report)
}
