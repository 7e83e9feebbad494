//! The outside world: the Docker engine, OCI registries and their credentials, the Kubernetes
//! API, helm, and git. Adapters know no stage.

pub mod cluster;
pub mod credentials;
pub mod docker;
pub mod git;
pub mod helm;
pub mod registry;
pub mod tls;
