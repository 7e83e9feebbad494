//! umbrella: build, render, commit and deploy many Helm services as reviewed, reproducible git
//! commits. Stages live in their own modules; shared pieces (registry, cluster, yaml, report)
//! sit beside them.

pub mod build;
pub mod chart;
pub mod cli;
pub mod cluster;
pub mod credentials;
pub mod deploy;
pub mod docker;
pub mod doctor;
pub mod helm;
pub mod lock;
pub mod manifest;
pub mod registry;
pub mod render;
pub mod report;
pub mod sources;
pub mod state;
#[cfg(test)]
mod testutil;
pub mod tls;
pub mod yaml;
