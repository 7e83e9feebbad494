//! Which Kubernetes version and API versions a render is for. `helm template` sees no cluster,
//! so without this a chart renders for helm's built-in version and Kubernetes' own APIs only.
//! The flags (`--kube-version`, `--api-versions`) come first, then the environment's settings
//! in `umbrella.yaml`, over what the environment's cluster offers: asked when the environment
//! names a kube context that answers, else as the state recorded it the last time.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::adapters::cluster::{self, Cluster, ClusterError};
use crate::adapters::retry::{Policy, Retrier};
use serde::Serialize;

use crate::formats::capabilities::ClusterCapabilities;
use crate::formats::yaml::YamlError;

/// What the flags and `umbrella.yaml` say, the flags first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Explicit {
    pub kube_version: Option<String>,
    pub api_versions: Vec<String>,
}

/// Where the cluster's part came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "from", content = "detail")]
pub enum ClusterSource {
    /// Asked of the cluster of this context just now.
    Asked(String),
    /// As the state recorded it (the context named, if any, did not answer: why).
    Recorded(Option<String>),
    /// Neither: helm's built-in version and Kubernetes' own APIs (the context named, if any,
    /// did not answer: why).
    Nothing(Option<String>),
}

/// What `helm template` is given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForRender {
    pub kube_version: Option<String>,
    pub api_versions: BTreeSet<String>,
}

/// The explicit settings over the cluster's: the version given, else the cluster's; the API
/// versions of both.
pub fn combine(explicit: &Explicit, cluster: Option<&ClusterCapabilities>) -> ForRender {
    let mut api_versions: BTreeSet<String> =
        cluster.map(|c| c.api_versions.clone()).unwrap_or_default();
    api_versions.extend(explicit.api_versions.iter().cloned());
    ForRender {
        kube_version: explicit
            .kube_version
            .clone()
            .or_else(|| cluster.map(|c| c.kube_version.clone())),
        api_versions,
    }
}

/// What charts saw in a render, and the state's record of the cluster.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    pub kube_version: Option<String>,
    pub api_versions: usize,
    pub cluster: ClusterSource,
    #[serde(skip)]
    pub for_render: ForRender,
    /// `capabilities.yaml` of the state: what the cluster offered, asked now or as recorded.
    #[serde(skip)]
    pub record: Option<String>,
}

/// What `helm template` is given for this environment, and the record to keep in its state.
pub async fn for_render(
    explicit: &Explicit,
    context: Option<&str>,
    recorded: &Path,
) -> Result<Seen, YamlError> {
    let (cluster, source) = cluster_part(context, recorded).await?;
    let for_render = combine(explicit, cluster.as_ref());
    Ok(Seen {
        kube_version: for_render.kube_version.clone(),
        api_versions: for_render.api_versions.len(),
        cluster: source,
        record: cluster.as_ref().map(ClusterCapabilities::to_yaml),
        for_render,
    })
}

/// How long a render waits for an environment's cluster before rendering for what the state
/// recorded: a render must not hang on a cluster it could do without.
const ASK_POLICY: Policy = Policy {
    budget: Duration::from_secs(3),
    base: Duration::from_millis(250),
    cap: Duration::from_secs(1),
};

/// The cluster's capabilities: asked of `context` when there is one and it answers, else the
/// state's record (`recorded`, the file), else none.
pub async fn cluster_part(
    context: Option<&str>,
    recorded: &Path,
) -> Result<(Option<ClusterCapabilities>, ClusterSource), YamlError> {
    let why = match context {
        Some(context) => match ask(context).await {
            Ok(asked) => return Ok((Some(asked), ClusterSource::Asked(context.to_string()))),
            Err(e) => Some(e.to_string()),
        },
        None => None,
    };
    Ok(match ClusterCapabilities::read(recorded)? {
        Some(record) => (Some(record), ClusterSource::Recorded(why)),
        None => (None, ClusterSource::Nothing(why)),
    })
}

/// The version and every API version (`group/version` and `group/version/Kind`) the cluster
/// of `context` serves.
async fn ask(context: &str) -> Result<ClusterCapabilities, ClusterError> {
    let connected = Cluster::connect(Some(context)).await?;
    let retrier = Retrier::default().with_policy(ASK_POLICY);
    let version = tokio::time::timeout(ASK_POLICY.budget, connected.server_version())
        .await
        .map_err(|_| ClusterError::Config(format!("context {context}: no answer")))??;
    let discovery = cluster::discover(&connected, &retrier).await?;
    let version = release_of(&version);
    let mut api_versions = BTreeSet::new();
    for group in discovery.groups() {
        for version in group.versions() {
            let group_version = match group.name() {
                "" => version.to_string(),
                name => format!("{name}/{version}"),
            };
            for (resource, _) in group.versioned_resources(version) {
                api_versions.insert(format!("{group_version}/{}", resource.kind));
            }
            api_versions.insert(group_version);
        }
    }
    Ok(ClusterCapabilities {
        context: context.to_string(),
        kube_version: version,
        api_versions,
    })
}

/// The release a server's git version names: `v1.34.2` of `v1.34.2-eks-4f1b2c`.
fn release_of(git_version: &str) -> String {
    let end = git_version.find(['-', '+']).unwrap_or(git_version.len());
    git_version[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vendor_suffix_is_not_part_of_the_release() {
        assert_eq!(release_of("v1.34.2-eks-4f1b2c"), "v1.34.2");
        assert_eq!(release_of("v1.31.0+k3s1"), "v1.31.0");
        assert_eq!(release_of("v1.34.4"), "v1.34.4");
    }

    fn cluster() -> ClusterCapabilities {
        ClusterCapabilities {
            context: "prod".into(),
            kube_version: "v1.33.1".into(),
            api_versions: ["v1", "apps/v1"].into_iter().map(String::from).collect(),
        }
    }

    #[test]
    fn explicit_settings_go_over_the_clusters() {
        let explicit = Explicit {
            kube_version: Some("v1.34.0".into()),
            api_versions: vec!["monitoring.coreos.com/v1".into()],
        };
        let combined = combine(&explicit, Some(&cluster()));
        assert_eq!(combined.kube_version.as_deref(), Some("v1.34.0"));
        assert_eq!(
            combined.api_versions.into_iter().collect::<Vec<_>>(),
            ["apps/v1", "monitoring.coreos.com/v1", "v1"]
        );
        let from_cluster = combine(&Explicit::default(), Some(&cluster()));
        assert_eq!(from_cluster.kube_version.as_deref(), Some("v1.33.1"));
        assert_eq!(combine(&Explicit::default(), None), ForRender::default());
    }
}
