//! A small OCI distribution client: `/v2/` checks, manifest digests (verified against the
//! manifest's bytes wherever they are fetched), tags pointed at manifests, with the registry's
//! own auth flow (Basic, or bearer tokens from its realm cached per repository scope, see
//! [`auth`]), Docker's `certs.d` CAs, and every request retried through passing failures.
//!
//! Plain HTTP is used only where Docker itself allows it without configuration: registries on
//! loopback addresses (or hosts listed in `UMBRELLA_INSECURE_REGISTRIES`, comma-separated),
//! when HTTPS does not work there and plain HTTP does (see [`probe`]).

mod auth;
mod error;
mod probe;
mod tokens;
mod transport;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use reqwest::header::{ACCEPT, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};

use super::credentials::{Credential, credential_for};
use super::retry::Retrier;
use crate::formats::image_ref::{DOCKER_HUB, Digest};
use auth::Authenticator;
pub use error::RegistryError;
use transport::Answer;

/// Manifest media types a digest may be asked for; an index comes first so a multi-arch tag
/// resolves to its index digest, the one that pins every platform.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Tags asked for per page of a tag list (the most registries hand out at once).
const TAGS_PER_PAGE: usize = 1000;
/// Pages of tags followed before a registry is taken to loop.
const MAX_TAG_PAGES: usize = 10_000;

/// The path of the next page a `Link: <...>; rel="next"` header names, if any (the URL may be
/// absolute; only its path and query are kept, the host stays the one asked).
fn next_page(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find(|link| link.contains("rel=\"next\"") || link.contains("rel=next"))
        .and_then(|link| {
            let target = link.split_once('<')?.1.split_once('>')?.0.trim();
            let path = match target.split_once("://") {
                Some((_, rest)) => &rest[rest.find('/')?..],
                None => target,
            };
            path.starts_with("/v2/").then(|| path.to_string())
        })
}

/// A client per registry host, or why that host could not be connected.
pub type Clients = HashMap<String, Result<Arc<Registry>, String>>;

/// Connects to every host at once, each with the Docker config's credentials for it.
pub async fn connect_all(hosts: BTreeSet<String>, retrier: &Retrier) -> Clients {
    futures_util::future::join_all(hosts.into_iter().map(|host| async move {
        let registry = Registry::connect_configured(&host, retrier.clone())
            .await
            .map(Arc::new);
        (host, registry)
    }))
    .await
    .into_iter()
    .collect()
}

/// One registry host, with its scheme settled and its auth state cached.
pub struct Registry {
    host: String,
    scheme: probe::Scheme,
    base: String,
    http: reqwest::Client,
    auth: Authenticator,
    retrier: Retrier,
}

/// What a `/v2/` check learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingOutcome {
    /// The registry asked for credentials (and accepted ours).
    pub authenticated: bool,
    pub scheme: &'static str,
}

impl Registry {
    /// Connects to `host` (e.g. `127.0.0.1:5000`, `ghcr.io`), settling HTTPS or plain HTTP.
    pub async fn connect(
        host: &str,
        credential: Option<Credential>,
    ) -> Result<Self, RegistryError> {
        Registry::connect_with(host, credential, Retrier::default()).await
    }

    /// [`Registry::connect_with`] with the Docker config's credentials for `host`; a failure
    /// (of the config or of the registry) as one message.
    pub async fn connect_configured(host: &str, retrier: Retrier) -> Result<Self, String> {
        let credential = credential_for(host).map_err(|e| e.to_string())?;
        Registry::connect_with(host, credential, retrier)
            .await
            .map_err(|e| e.to_string())
    }

    /// [`Registry::connect`], its retries reported by `retrier`.
    pub async fn connect_with(
        host: &str,
        credential: Option<Credential>,
        retrier: Retrier,
    ) -> Result<Self, RegistryError> {
        crate::adapters::tls::install_crypto_provider();
        let http = transport::http_client(host)?;
        let (scheme, answer) = probe::settle(&http, &retrier, host).await?;
        let registry = Registry {
            host: host.to_string(),
            scheme,
            base: format!("{}://{}", scheme.name(), transport::api_host(host)),
            http,
            auth: Authenticator::new(host, credential),
            retrier,
        };
        Ok(registry.learning(&answer))
    }

    /// The registry, knowing how to authenticate from its `/v2/` answer: with the realm known
    /// before the first request, no request pays a 401 to learn it.
    fn learning(self, answer: &Answer) -> Self {
        if answer.status == StatusCode::UNAUTHORIZED {
            self.auth.learn(answer.headers.get(WWW_AUTHENTICATE));
        }
        self
    }

    fn scheme(&self) -> &'static str {
        self.scheme.name()
    }

    /// What token requests go through.
    fn transport(&self) -> auth::Transport<'_> {
        auth::Transport {
            http: &self.http,
            retrier: &self.retrier,
        }
    }

    /// The registry host as given.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `GET /v2/`: the registry answers and accepts our credentials (if it asks for them).
    pub async fn ping(&self) -> Result<PingOutcome, RegistryError> {
        let (response, authenticated) = self.send(Method::GET, "/v2/", None, None).await?;
        self.expect_success(&response, "/v2/", None)?;
        Ok(PingOutcome {
            authenticated,
            scheme: self.scheme(),
        })
    }

    /// The digest the registry serves for `repository:reference`. The manifest is fetched and
    /// its bytes hashed, so a digest is never taken on the registry's word; from Docker Hub,
    /// whose pull limits count every manifest GET, a HEAD answers (its digest still checked
    /// for form).
    pub async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Digest, RegistryError> {
        let what = format!("{repository}:{reference}");
        let method = if self.host == DOCKER_HUB {
            Method::HEAD
        } else {
            Method::GET
        };
        let (response, _) = self.manifest(method, repository, reference, &what).await?;
        let served = self.served_digest(&response, &what)?;
        if self.host == DOCKER_HUB {
            return served.ok_or_else(|| self.protocol(&what, "no Docker-Content-Digest header"));
        }
        let bytes = response.body;
        self.verified(served, &bytes, &what)
    }

    /// The compressed size of an image manifest's config and layers (0 for an index).
    pub async fn image_size(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<u64, RegistryError> {
        let what = format!("{repository}@{digest}");
        let (response, _) = self
            .manifest(Method::GET, repository, digest.as_str(), &what)
            .await?;
        let bytes = response.body;
        self.verified(Some(digest.clone()), &bytes, &what)?;
        #[derive(serde::Deserialize)]
        struct Descriptor {
            size: u64,
        }
        #[derive(serde::Deserialize)]
        struct Manifest {
            config: Option<Descriptor>,
            #[serde(default)]
            layers: Vec<Descriptor>,
        }
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| self.protocol(&what, &format!("manifest: {e}")))?;
        Ok(manifest.config.map_or(0, |c| c.size)
            + manifest.layers.iter().map(|l| l.size).sum::<u64>())
    }

    /// Points `tag` at the manifest `digest` of `repository` without moving any blob: the
    /// manifest is read (and checked against its digest) and written back under the new tag.
    pub async fn put_tag(
        &self,
        repository: &str,
        digest: &Digest,
        tag: &str,
    ) -> Result<(), RegistryError> {
        let what = format!("{repository}@{digest}");
        let scope = format!("repository:{repository}:pull,push");
        let path = format!("/v2/{repository}/manifests/{digest}");
        let (response, _) = self.send(Method::GET, &path, Some(&scope), None).await?;
        self.expect_success(&response, &what, Some(&scope))?;
        let media_type = response
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/vnd.docker.distribution.manifest.v2+json")
            .to_string();
        let bytes = response.body;
        self.verified(Some(digest.clone()), &bytes, &what)?;
        let path = format!("/v2/{repository}/manifests/{tag}");
        let body = Some((media_type, bytes));
        let (response, _) = self.send(Method::PUT, &path, Some(&scope), body).await?;
        self.expect_success(&response, &format!("{repository}:{tag}"), Some(&scope))
    }

    /// Every tag of `repository`, page by page as the distribution spec pages them (`n=` and
    /// the `Link` header's next page); a registry that ignores `n` answers all at once.
    pub async fn list_tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            tags: Option<Vec<String>>,
        }
        let what = format!("the tags of {repository}");
        let scope = format!("repository:{repository}:pull");
        let mut path = format!("/v2/{repository}/tags/list?n={TAGS_PER_PAGE}");
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let (response, _) = self.send(Method::GET, &path, Some(&scope), None).await?;
            if response.status == StatusCode::NOT_FOUND {
                return Err(RegistryError::NotFound {
                    host: self.host.clone(),
                    what,
                });
            }
            self.expect_success(&response, &what, Some(&scope))?;
            let page: Page = serde_json::from_slice(&response.body)
                .map_err(|e| self.protocol(&what, &format!("tag list: {e}")))?;
            tags.extend(page.tags.unwrap_or_default());
            match next_page(&response.headers) {
                Some(next) if next != path => path = next,
                _ => return Ok(tags),
            }
        }
        Err(self.protocol(&what, &format!("more than {MAX_TAG_PAGES} pages of tags")))
    }

    /// A manifest request: not found, refused, or the registry's answer.
    async fn manifest(
        &self,
        method: Method,
        repository: &str,
        reference: &str,
        what: &str,
    ) -> Result<(Answer, bool), RegistryError> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let scope = format!("repository:{repository}:pull");
        let (response, authenticated) = self.send(method, &path, Some(&scope), None).await?;
        if response.status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                host: self.host.clone(),
                what: what.to_string(),
            });
        }
        self.expect_success(&response, what, Some(&scope))?;
        Ok((response, authenticated))
    }

    /// The `Docker-Content-Digest` the registry answered with, if any: well-formed, or an error.
    fn served_digest(
        &self,
        response: &Answer,
        what: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        let Some(header) = response.headers.get("Docker-Content-Digest") else {
            return Ok(None);
        };
        let text = header.to_str().unwrap_or_default();
        Digest::parse(text).map(Some).map_err(|e| {
            self.protocol(
                what,
                &format!("the registry answered with a malformed digest: {e}"),
            )
        })
    }

    /// The digest of the manifest's bytes, which the digest the registry named (if any) must be.
    fn verified(
        &self,
        named: Option<Digest>,
        bytes: &[u8],
        what: &str,
    ) -> Result<Digest, RegistryError> {
        let digest = named.unwrap_or_else(|| Digest::of_sha256(bytes));
        if !digest.verifies(bytes) {
            return Err(self.protocol(
                what,
                &format!(
                    "the manifest's bytes do not hash to {digest}, the digest the registry named"
                ),
            ));
        }
        Ok(digest)
    }

    fn protocol(&self, what: &str, reason: &str) -> RegistryError {
        RegistryError::Protocol {
            host: self.host.clone(),
            reason: format!("{what}: {reason}"),
        }
    }

    /// The answer, or the error its status stands for. A 401 whose challenge says the token
    /// lacks the scope is a refusal of these credentials for this repository (registries that
    /// hand out tokens never answer 403), or, without credentials, a request for them.
    fn expect_success(
        &self,
        response: &Answer,
        what: &str,
        scope: Option<&str>,
    ) -> Result<(), RegistryError> {
        let status = response.status;
        let had_credentials = self.auth.has_credentials();
        let forbidden = |answer: &str| RegistryError::Forbidden {
            host: self.host.clone(),
            what: what.to_string(),
            answer: answer.to_string(),
            wanted: scope.map_or_else(|| "do this".to_string(), error::wanted),
            had_credentials,
        };
        match status {
            _ if status.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED
                if had_credentials
                    && auth::insufficient_scope(response.headers.get(WWW_AUTHENTICATE)) =>
            {
                Err(forbidden("HTTP 401, insufficient_scope"))
            }
            StatusCode::UNAUTHORIZED => Err(RegistryError::Unauthorized {
                host: self.host.clone(),
                had_credentials,
            }),
            StatusCode::FORBIDDEN => Err(forbidden("HTTP 403")),
            _ => Err(RegistryError::Status {
                host: self.host.clone(),
                what: what.to_string(),
                status: status.as_u16(),
            }),
        }
    }

    /// Sends a request with the retry policy and what the registry's auth asks for (a token
    /// for `scope` once its realm is known), answering one refusal if another try can help.
    /// Returns the answer and whether credentials or a token went with it.
    async fn send(
        &self,
        method: Method,
        path: &str,
        scope: Option<&str>,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<(Answer, bool), RegistryError> {
        let url = format!("{}{}", self.base, path);
        let request = || {
            let builder = self
                .http
                .request(method.clone(), &url)
                .header(ACCEPT, MANIFEST_ACCEPT);
            match &body {
                Some((media_type, bytes)) => builder
                    .header(reqwest::header::CONTENT_TYPE, media_type)
                    .body(bytes.clone()),
                None => builder,
            }
        };
        let what = format!("{method} {path}");
        let transport = self.transport();
        let sent = self.auth.authorize(&transport, scope).await?;
        let answer = self.execute(&what, || sent.apply(request())).await?;
        if answer.status != StatusCode::UNAUTHORIZED {
            return Ok((answer, !sent.is_nothing()));
        }
        let header = answer.headers.get(WWW_AUTHENTICATE);
        let Some(retry) = self
            .auth
            .after_refusal(&transport, scope, &sent, header)
            .await?
        else {
            return Ok((answer, !sent.is_nothing()));
        };
        let answer = self.execute(&what, || retry.apply(request())).await?;
        Ok((answer, true))
    }

    /// One request with the retry policy, its failure named.
    async fn execute(
        &self,
        what: &str,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Answer, RegistryError> {
        let label = format!("registry {}: {what}", self.host);
        transport::send(&self.retrier, &label, make)
            .await
            .map_err(|(failure, attempts)| transport::named(&self.host, what, failure, attempts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_is_taken_from_the_link_header() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(next_page(&headers), None);
        headers.insert(
            reqwest::header::LINK,
            "</v2/shop/app/tags/list?n=1000&last=t999>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_page(&headers).as_deref(),
            Some("/v2/shop/app/tags/list?n=1000&last=t999")
        );
        headers.insert(
            reqwest::header::LINK,
            "<https://r.example/v2/a/tags/list?last=b&n=2>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_page(&headers).as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        headers.insert(
            reqwest::header::LINK,
            "<https://elsewhere/x>; rel=\"next\"".parse().unwrap(),
        );
        assert_eq!(next_page(&headers), None);
    }

    #[test]
    fn refusals_say_why_and_never_hold_secrets() {
        let missing = RegistryError::Unauthorized {
            host: "r:1".into(),
            had_credentials: false,
        };
        assert_eq!(
            missing.to_string(),
            "registry r:1: credentials were missing (run `docker login` for it)"
        );
        let refused = RegistryError::Unauthorized {
            host: "r:1".into(),
            had_credentials: true,
        };
        assert_eq!(
            refused.to_string(),
            "registry r:1: credentials were refused"
        );
        let forbidden = RegistryError::Forbidden {
            host: "r:1".into(),
            what: "a:1".into(),
            answer: "HTTP 403".into(),
            wanted: error::wanted("repository:a:pull"),
            had_credentials: true,
        };
        assert_eq!(
            forbidden.to_string(),
            "registry r:1: a:1: access denied (HTTP 403): the credentials given are not allowed to pull from repository a"
        );
    }
}
