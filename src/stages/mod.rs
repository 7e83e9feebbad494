//! The pipeline: build, render, commit, deploy (with diff, status, history and rollback), image
//! updates by policy, and the doctor that checks everything they need.

pub mod build;
pub mod ci;
pub mod commit;
pub mod deploy;
pub mod doctor;
pub mod render;
pub mod update;
