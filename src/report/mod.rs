//! How results reach the person or the CI job: aligned text lines, or JSON; one printer per
//! command, and the live progress of the stages.

mod build;
mod commit;
mod deploy;
mod diff;
mod doctor;
mod history;
mod output;
pub mod progress;
mod render;
mod status;
mod update;

pub use build::{ci_summary, write_build};
pub use commit::write_commit;
pub use deploy::{source_warnings, write_deploy};
pub use diff::write_diff;
pub use doctor::write_checks;
pub use history::write_history;
pub use output::{ColorChoice, OutputFormat};
pub use render::{check_verdict, write_render};
pub use status::write_status;
pub use update::write_update;
