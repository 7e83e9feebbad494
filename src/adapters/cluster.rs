//! Access to the Kubernetes cluster of a kubeconfig context (kube-rs): connecting, discovery,
//! and reaching objects of any kind by their identity.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, ApiResource, DynamicObject, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{ApiCapabilities, Discovery, Scope};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use serde_json::Value;

use super::retry::{Retrier, Verdict};
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
    #[error("API discovery at {server}: {}", super::error_chain(source))]
    Discovery { server: String, source: kube::Error },
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

/// How long one call may take before it counts as failed (and is tried again): a stalled
/// server must not hold a command past its deadlines.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// What the API server says of an apply that does not fit the object's schema.
const UNFIT_FOR_SCHEMA: &str = "failed to create typed patch object";

/// Whether a failed API call may succeed if sent again: a connection refused, reset or timed
/// out, 429 and 5xx (an etcd leader change is a 500), after the server's `retryAfterSeconds`.
pub fn classify(error: &kube::Error) -> Verdict {
    match error {
        // The API server answers 500 when an apply's object does not fit its schema (a number
        // where a string belongs): the same object fails the same way every time.
        kube::Error::Api(status) if status.message.contains(UNFIT_FOR_SCHEMA) => Verdict::Final,
        kube::Error::Api(status) if status.code == 429 || status.code >= 500 => {
            let asked = status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s.into()));
            Verdict::Again(asked)
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => Verdict::Again(None),
        _ => Verdict::Final,
    }
}

/// An API call with the retry policy, each attempt bounded in time. Only for calls that are
/// safe to repeat: reads, server-side applies, deletes, writes conditional on a version.
pub async fn call<T, F, Fut>(retrier: &Retrier, what: &str, call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    call_within(retrier, what, ATTEMPT_TIMEOUT, call).await
}

/// [`call`], each attempt bounded by `attempt_timeout`.
pub async fn call_within<T, F, Fut>(
    retrier: &Retrier,
    what: &str,
    attempt_timeout: Duration,
    mut call: F,
) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let attempt = || {
        let sent = call();
        async move {
            tokio::time::timeout(attempt_timeout, sent)
                .await
                .unwrap_or_else(|_| {
                    let why = format!("no answer within {}s", attempt_timeout.as_secs());
                    Err(kube::Error::Service(why.into()))
                })
        }
    };
    retrier.run(what, classify, attempt).await
}

/// The cluster's API resources, from one aggregated discovery (two requests, one consistent
/// answer, so groups that appear or vanish meanwhile, a CRD created or deleted by anyone,
/// cannot break it); from the classic per-group discovery where the server has no aggregated
/// one, run again when a group vanished during it.
pub async fn discover(cluster: &Cluster, retrier: &Retrier) -> Result<Discovery, ClusterError> {
    let client = &cluster.client;
    let aggregated = call(retrier, "API discovery", || {
        Discovery::new(client.clone()).run_aggregated()
    })
    .await;
    let classic = match aggregated {
        Ok(discovery) => return Ok(discovery),
        Err(error) if classify(&error) == Verdict::Again(None) => Err(error),
        // No aggregated discovery here (before Kubernetes 1.26): the classic one.
        Err(_) => {
            let vanished = |e: &kube::Error| match e {
                kube::Error::Api(status) if status.code == 404 => Verdict::Again(None),
                other => classify(other),
            };
            retrier
                .run("API discovery", vanished, || {
                    Discovery::new(client.clone()).run()
                })
                .await
        }
    };
    classic.map_err(|source| ClusterError::Discovery {
        server: cluster.describe(),
        source,
    })
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

/// What a watch of one object says of it.
#[derive(Debug)]
pub enum Sighting {
    /// Its current state.
    Seen(Box<DynamicObject>),
    /// It does not exist (any more).
    Gone,
}

/// Watches the object named `name` and tells each state of it, and when it is gone: deleted,
/// or missing from a (re-)list. The lists are consistent reads, so an object missing from one
/// is gone, not yet to reach the API server's cache. The watcher reconnects by itself.
pub fn watch_one(
    api: Api<DynamicObject>,
    name: &str,
) -> impl futures_util::Stream<Item = Result<Sighting, watcher::Error>> + Send {
    let config = watcher::Config::default()
        .fields(&format!("metadata.name={name}"))
        .list_semantic(watcher::ListSemantic::MostRecent);
    let mut listed = false;
    watcher(api, config)
        .default_backoff()
        .filter_map(move |event| {
            let sighting = match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                    listed = true;
                    Some(Ok(Sighting::Seen(Box::new(object))))
                }
                Ok(watcher::Event::Delete(_)) => Some(Ok(Sighting::Gone)),
                Ok(watcher::Event::Init) => {
                    listed = false;
                    None
                }
                Ok(watcher::Event::InitDone) => (!listed).then_some(Ok(Sighting::Gone)),
                Err(e) => Some(Err(e)),
            };
            std::future::ready(sighting)
        })
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
    /// The API server's URL, for messages.
    pub server: String,
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
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))?;
        Ok(Cluster {
            client,
            context: context_name,
            server,
            default_namespace,
        })
    }

    /// `the API server URL (context NAME)`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} (context {})",
            self.server.trim_end_matches('/'),
            self.context
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: serde_json::Value) -> kube::Error {
        kube::Error::Api(Box::new(serde_json::from_value(status).expect("a Status")))
    }

    #[test]
    fn passing_answers_are_tried_again_after_what_the_server_asks() {
        let busy = api(
            serde_json::json!({"code": 429, "message": "too many requests",
            "details": {"retryAfterSeconds": 3}}),
        );
        assert_eq!(
            classify(&busy),
            Verdict::Again(Some(Duration::from_secs(3)))
        );
        let leader = api(serde_json::json!({"code": 500,
            "message": "etcdserver: leader changed"}));
        assert_eq!(classify(&leader), Verdict::Again(None));
        let unavailable = api(serde_json::json!({"code": 503, "message": "unavailable"}));
        assert_eq!(classify(&unavailable), Verdict::Again(None));
    }

    #[test]
    fn refusals_and_objects_unfit_for_their_schema_are_final() {
        for (code, message) in [
            (422, "Invalid value"),
            (409, "Apply failed with 1 conflict"),
            (404, "not found"),
            (403, "forbidden"),
            (
                500,
                "failed to create typed patch object (/x; example.com/v1, Kind=X): .spec.a: expected string, got &value.valueUnstructured{Value:1}",
            ),
        ] {
            let error = api(serde_json::json!({"code": code, "message": message}));
            assert_eq!(classify(&error), Verdict::Final, "{code} {message}");
        }
    }
}
