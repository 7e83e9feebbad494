//! umbrella: build, render, commit and deploy many Helm services as reviewed, reproducible git
//! commits. The pipeline's stages (`stages`) read and write the formats (`formats`) and reach
//! the outside world through adapters (`adapters`); `report` prints what they return and `cli`
//! only parses and dispatches.

pub mod adapters;
pub mod cli;
pub mod exit;
pub mod formats;
pub mod progress;
pub mod report;
pub mod stages;
#[cfg(test)]
mod testutil;
