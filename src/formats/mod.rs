//! What umbrella reads and writes, as data: YAML, Kubernetes manifests and object identities,
//! image references, kbld's `sources.yaml`, the images lock, the umbrella chart, the
//! environments' settings (`umbrella.yaml`) and the capabilities they render for, and where
//! each of them lives in the repository.

pub mod capabilities;
pub mod chart;
pub mod environments;
pub mod image_markers;
pub mod image_policies;
pub mod image_ref;
pub mod images_lock;
pub mod layout;
pub mod manifest;
pub mod names;
pub mod object_ref;
pub mod secrets;
pub mod sops;
pub mod sources;
pub mod yaml;
