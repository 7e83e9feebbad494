//! Access to the Kubernetes cluster of a kubeconfig context (kube-rs): connecting, discovery,
//! and reaching objects of any kind by their identity.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, ApiResource, DynamicObject, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{ApiCapabilities, Discovery, Scope};
use kube::{Client, Config};
use serde_json::Value;

use crate::formats::object_ref::ObjectRef;

/// The field manager of everything umbrella writes.
pub const FIELD_MANAGER: &str = "umbrella";

/// A cluster call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("cluster {context}: {reason}")]
    Api { context: String, reason: String },
    #[error("API discovery: {0}")]
    Discovery(kube::Error),
    #[error("{what}: {source}")]
    Request { what: String, source: kube::Error },
}

impl ClusterError {
    /// Names what a failed call was doing.
    pub fn request(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| ClusterError::Request { what, source }
    }
}

/// How often discovery is tried when groups vanish while it runs.
const DISCOVERY_ATTEMPTS: u32 = 5;

/// The cluster's API resources. A group can vanish between the listing of groups and the read
/// of its resources (a CRD deleted meanwhile, by anyone): discovery is then run again.
pub async fn discover(client: &Client) -> Result<Discovery, ClusterError> {
    let mut attempt = 1;
    loop {
        match Discovery::new(client.clone()).run().await {
            Ok(discovery) => return Ok(discovery),
            Err(error) if attempt == DISCOVERY_ATTEMPTS => {
                return Err(ClusterError::Discovery(error));
            }
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The API resource of the object's kind and whether it is namespaced; `None` when the cluster
/// does not know the kind.
pub fn resolve(discovery: &Discovery, reference: &ObjectRef) -> Option<(ApiResource, bool)> {
    let (group, version) = match reference.api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", reference.api_version.as_str()),
    };
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &reference.kind);
    discovery
        .resolve_gvk(&gvk)
        .map(|(resource, caps): (ApiResource, ApiCapabilities)| {
            (resource, caps.scope == Scope::Namespaced)
        })
}

/// The API that holds the object: its namespace's (the client's default when it names none),
/// or the cluster's for cluster-scoped kinds.
pub fn api_for(
    client: &Client,
    resource: &ApiResource,
    namespaced: bool,
    reference: &ObjectRef,
) -> Api<DynamicObject> {
    match (namespaced, &reference.namespace) {
        (true, Some(namespace)) => Api::namespaced_with(client.clone(), namespace, resource),
        (true, None) => Api::default_namespaced_with(client.clone(), resource),
        (false, _) => Api::all_with(client.clone(), resource),
    }
}

/// The object as JSON with its type: items of a LIST carry none, and readers need it.
pub fn with_type(object: &DynamicObject, reference: &ObjectRef) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    value["apiVersion"] = reference.api_version.clone().into();
    value["kind"] = reference.kind.clone().into();
    value
}

/// Server-side apply as umbrella's field manager; `force` takes fields other managers own.
pub fn apply_params(force: bool) -> PatchParams {
    let params = PatchParams::apply(FIELD_MANAGER);
    if force { params.force() } else { params }
}

/// A client bound to one kubeconfig context.
pub struct Cluster {
    pub client: Client,
    /// The context's name, for messages.
    pub context: String,
    /// The context's default namespace (`default` when it names none).
    pub default_namespace: String,
}

/// One verb on one resource, as asked of the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub verb: String,
    pub group: String,
    pub resource: String,
}

impl Permission {
    pub fn new(verb: &str, group: &str, resource: &str) -> Self {
        Permission {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.group.as_str() {
            "" => write!(f, "{} {}", self.verb, self.resource),
            group => write!(f, "{} {}.{}", self.verb, self.resource, group),
        }
    }
}

impl Cluster {
    /// Connects with the current kubeconfig (`KUBECONFIG` or `~/.kube/config`) and `context`,
    /// or the kubeconfig's current context.
    pub async fn connect(context: Option<&str>) -> Result<Self, ClusterError> {
        super::tls::install_crypto_provider();
        let kubeconfig = Kubeconfig::read().map_err(|e| ClusterError::Config(e.to_string()))?;
        let context_name = context
            .map(str::to_string)
            .or_else(|| kubeconfig.current_context.clone())
            .ok_or_else(|| ClusterError::Config("no current context; pass --context".into()))?;
        let options = KubeConfigOptions {
            context: Some(context_name.clone()),
            ..Default::default()
        };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| ClusterError::Config(format!("context {context_name}: {e}")))?;
        let default_namespace = config.default_namespace.clone();
        let client = Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))?;
        Ok(Cluster {
            client,
            context: context_name,
            default_namespace,
        })
    }

    fn api_error(&self, error: kube::Error) -> ClusterError {
        ClusterError::Api {
            context: self.context.clone(),
            reason: error.to_string(),
        }
    }

    /// The API server's version, e.g. `v1.34.4`.
    pub async fn server_version(&self) -> Result<String, ClusterError> {
        let info = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| self.api_error(e))?;
        Ok(info.git_version)
    }

    /// Asks the API server (SelfSubjectAccessReview) which of `permissions` the current user
    /// lacks in `namespace`.
    pub async fn missing_permissions(
        &self,
        namespace: &str,
        permissions: &[Permission],
    ) -> Result<Vec<Permission>, ClusterError> {
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let mut missing = Vec::new();
        for permission in permissions {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        namespace: Some(namespace.to_string()),
                        verb: Some(permission.verb.clone()),
                        group: Some(permission.group.clone()),
                        resource: Some(permission.resource.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| self.api_error(e))?;
            if !answer.status.is_some_and(|s| s.allowed) {
                missing.push(permission.clone());
            }
        }
        Ok(missing)
    }
}
