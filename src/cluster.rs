//! Access to the Kubernetes cluster of a kubeconfig context (kube-rs).

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A cluster call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("cluster {context}: {reason}")]
    Api { context: String, reason: String },
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
        crate::tls::install_crypto_provider();
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
