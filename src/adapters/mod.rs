//! The outside world: the Docker engine, OCI registries and their credentials, the Kubernetes
//! API, helm, and git. Adapters know no stage.

pub mod cluster;
pub mod credentials;
pub mod docker;
pub mod feeds;
pub mod git;
pub mod helm;
pub mod registry;
pub mod retry;
pub mod tls;

/// An error with its causes, `: `-separated: reqwest and kube hide them in their Display
/// ("error sending request", "client error (Connect)").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
