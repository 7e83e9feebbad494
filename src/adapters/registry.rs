//! A small OCI distribution client: `/v2/` checks and manifest digests, with the registry's own
//! auth flow (Basic, or Bearer tokens from its realm) and extra CAs from Docker's `certs.d`.
//!
//! Plain HTTP is used only where Docker itself allows it without configuration: registries on
//! loopback addresses, after HTTPS failed to connect (or hosts listed in
//! `UMBRELLA_INSECURE_REGISTRIES`, comma-separated).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{ACCEPT, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::sync::Mutex;

use super::credentials::Credential;
use crate::formats::image_ref::Digest;

/// Manifest media types a digest may be asked for; an index comes first so a multi-arch tag
/// resolves to its index digest, the one that pins every platform.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

const TIMEOUT: Duration = Duration::from_secs(20);
const RETRY_ATTEMPTS: u32 = 4;
const RETRY_BASE_DELAY: Duration = Duration::from_millis(250);

/// A registry request that failed; never carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {host}: cannot connect: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("registry {host}: credentials were {}", if *had_credentials { "refused" } else { "missing (run `docker login` for it)" })]
    Unauthorized { host: String, had_credentials: bool },
    #[error("registry {host}: {what} not found")]
    NotFound { host: String, what: String },
    #[error("registry {host}: {what}: HTTP {status}")]
    Status {
        host: String,
        what: String,
        status: u16,
    },
    #[error("registry {host}: {reason}")]
    Protocol { host: String, reason: String },
}

/// How the registry asked to be authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// One registry host, with its scheme settled and its auth state cached.
pub struct Registry {
    host: String,
    base: String,
    http: reqwest::Client,
    credential: Option<Credential>,
    bearer: Mutex<Option<String>>,
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
        super::tls::install_crypto_provider();
        let http = http_client(host)?;
        let https = format!("https://{}", api_host(host));
        let base = match http.get(format!("{https}/v2/")).send().await {
            Ok(_) => https,
            Err(error) => {
                let unreachable = RegistryError::Unreachable {
                    host: host.to_string(),
                    reason: describe(&error),
                };
                // Plain HTTP only when a registry really answers there: a TLS registry whose
                // certificate is not trusted must say so, not be talked to in clear text.
                let http_base = format!("http://{}", api_host(host));
                if !plain_http_allowed(host) || !answers_as_registry(&http, &http_base).await {
                    return Err(unreachable);
                }
                http_base
            }
        };
        Ok(Registry {
            host: host.to_string(),
            base,
            http,
            credential,
            bearer: Mutex::new(None),
        })
    }

    /// The registry host as given.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `GET /v2/`: the registry answers and accepts our credentials (if it asks for them).
    pub async fn ping(&self) -> Result<PingOutcome, RegistryError> {
        let (response, authenticated) = self.send(Method::GET, "/v2/", None, None).await?;
        self.expect_success(&response, "/v2/")?;
        Ok(PingOutcome {
            authenticated,
            scheme: if self.base.starts_with("https") {
                "https"
            } else {
                "http"
            },
        })
    }

    /// `HEAD /v2/<repository>/manifests/<reference>`: the digest the registry serves.
    pub async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Digest, RegistryError> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let scope = format!("repository:{repository}:pull");
        let (response, _) = self.send(Method::HEAD, &path, Some(&scope), None).await?;
        let what = format!("{repository}:{reference}");
        if response.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                host: self.host.clone(),
                what,
            });
        }
        self.expect_success(&response, &what)?;
        let header = response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol {
                host: self.host.clone(),
                reason: format!("{what}: no Docker-Content-Digest header in the manifest HEAD"),
            })?;
        Digest::parse(header).map_err(|e| RegistryError::Protocol {
            host: self.host.clone(),
            reason: format!("{what}: the registry answered with a malformed digest: {e}"),
        })
    }

    /// The compressed size of an image manifest's config and layers (0 for an index).
    pub async fn image_size(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<u64, RegistryError> {
        let scope = format!("repository:{repository}:pull");
        let what = format!("{repository}@{digest}");
        let path = format!("/v2/{repository}/manifests/{digest}");
        let (response, _) = self.send(Method::GET, &path, Some(&scope), None).await?;
        self.expect_success(&response, &what)?;
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
        let manifest: Manifest = response.json().await.map_err(|e| RegistryError::Protocol {
            host: self.host.clone(),
            reason: format!("{what}: manifest: {}", describe(&e)),
        })?;
        Ok(manifest.config.map_or(0, |c| c.size)
            + manifest.layers.iter().map(|l| l.size).sum::<u64>())
    }

    /// Points `tag` at the manifest `digest` of `repository` without moving any blob: the
    /// manifest is read and written back under the new tag.
    pub async fn put_tag(
        &self,
        repository: &str,
        digest: &Digest,
        tag: &str,
    ) -> Result<(), RegistryError> {
        let scope = format!("repository:{repository}:pull,push");
        let what = format!("{repository}@{digest}");
        let (response, _) = self
            .send(
                Method::GET,
                &format!("/v2/{repository}/manifests/{digest}"),
                Some(&scope),
                None,
            )
            .await?;
        self.expect_success(&response, &what)?;
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/vnd.docker.distribution.manifest.v2+json")
            .to_string();
        let body = response
            .bytes()
            .await
            .map_err(|e| RegistryError::Protocol {
                host: self.host.clone(),
                reason: format!("{what}: {}", describe(&e)),
            })?;
        let path = format!("/v2/{repository}/manifests/{tag}");
        let (response, _) = self
            .send(
                Method::PUT,
                &path,
                Some(&scope),
                Some((media_type, body.to_vec())),
            )
            .await?;
        self.expect_success(&response, &format!("{repository}:{tag}"))
    }

    fn expect_success(&self, response: &Response, what: &str) -> Result<(), RegistryError> {
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(RegistryError::Unauthorized {
                host: self.host.clone(),
                had_credentials: self.credential.is_some(),
            });
        }
        Err(RegistryError::Status {
            host: self.host.clone(),
            what: what.to_string(),
            status: status.as_u16(),
        })
    }

    /// Sends a request, answering one auth challenge if the registry makes it.
    /// Returns the response and whether credentials were used.
    async fn send(
        &self,
        method: Method,
        path: &str,
        scope: Option<&str>,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<(Response, bool), RegistryError> {
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
        let cached = self.bearer.lock().await.clone();
        let first = match &cached {
            Some(token) => request().bearer_auth(token),
            None => request(),
        };
        let response = self.execute(first).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok((response, cached.is_some()));
        }
        let Some(challenge) = parse_challenge(response.headers().get(WWW_AUTHENTICATE)) else {
            return Ok((response, false));
        };
        let retry = match challenge {
            Challenge::Basic => match &self.credential {
                Some(Credential::Basic { username, password }) => {
                    request().basic_auth(username, Some(password))
                }
                _ => return Ok((response, false)),
            },
            Challenge::Bearer { realm, service } => {
                let token = self.fetch_token(&realm, service.as_deref(), scope).await?;
                *self.bearer.lock().await = Some(token.clone());
                request().bearer_auth(token)
            }
        };
        Ok((self.execute(retry).await?, true))
    }

    /// The token endpoint of the Docker/OCI token flow.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String, RegistryError> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        query.extend(service.map(|s| ("service", s)));
        query.extend(scope.map(|s| ("scope", s)));
        let mut request = self.http.get(realm).query(&query);
        match &self.credential {
            Some(Credential::Basic { username, password }) => {
                request = request.basic_auth(username, Some(password))
            }
            Some(Credential::IdentityToken(token)) => request = request.bearer_auth(token),
            None => {}
        }
        let response = self.execute(request).await?;
        if !response.status().is_success() {
            return Err(RegistryError::Unauthorized {
                host: self.host.clone(),
                had_credentials: self.credential.is_some(),
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body: TokenResponse = response.json().await.map_err(|e| RegistryError::Protocol {
            host: self.host.clone(),
            reason: format!("token endpoint {realm}: {}", describe(&e)),
        })?;
        body.token
            .or(body.access_token)
            .ok_or_else(|| RegistryError::Protocol {
                host: self.host.clone(),
                reason: format!("token endpoint {realm} returned no token"),
            })
    }

    /// Sends with bounded retries: connection failures, timeouts and 5xx answers are tried again
    /// with exponential backoff, everything else is answered at once.
    async fn execute(&self, request: RequestBuilder) -> Result<Response, RegistryError> {
        let mut delay = RETRY_BASE_DELAY;
        let mut attempt = 1;
        loop {
            let last = attempt == RETRY_ATTEMPTS;
            // Every request here has an in-memory body, so it can always be cloned.
            let this_try = request.try_clone().ok_or_else(|| RegistryError::Protocol {
                host: self.host.clone(),
                reason: "a streaming request cannot be retried".into(),
            })?;
            match this_try.send().await {
                Ok(response) if response.status().is_server_error() && !last => {}
                Ok(response) => return Ok(response),
                Err(error) if (error.is_connect() || error.is_timeout()) && !last => {}
                Err(error) => {
                    return Err(RegistryError::Unreachable {
                        host: self.host.clone(),
                        reason: format!(
                            "{} (attempt {attempt} of {RETRY_ATTEMPTS})",
                            describe(&error)
                        ),
                    });
                }
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
        }
    }
}

/// Whether `base` answers `/v2/` as an OCI registry (200 or 401 with the distribution header).
async fn answers_as_registry(http: &reqwest::Client, base: &str) -> bool {
    match http.get(format!("{base}/v2/")).send().await {
        Ok(response) => {
            matches!(response.status(), StatusCode::OK | StatusCode::UNAUTHORIZED)
                && response
                    .headers()
                    .contains_key("Docker-Distribution-API-Version")
        }
        Err(_) => false,
    }
}

/// Docker Hub's API lives on another host than its name.
fn api_host(host: &str) -> &str {
    if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        host
    }
}

fn plain_http_allowed(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let loopback = name == "localhost" || name.starts_with("127.") || name == "[::1]";
    let listed = std::env::var("UMBRELLA_INSECURE_REGISTRIES")
        .map(|list| list.split(',').any(|h| h.trim() == host))
        .unwrap_or(false);
    loopback || listed
}

/// Docker's per-registry CA directories: `<docker config>/certs.d/<host>/*.crt` and
/// `/etc/docker/certs.d/<host>/*.crt`.
fn certs_d_dirs(host: &str) -> Vec<PathBuf> {
    let config = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
    config
        .into_iter()
        .chain([PathBuf::from("/etc/docker")])
        .map(|dir| dir.join("certs.d").join(host))
        .collect()
}

fn http_client(host: &str) -> Result<reqwest::Client, RegistryError> {
    let mut builder = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("umbrella/", env!("CARGO_PKG_VERSION")));
    for dir in certs_d_dirs(host) {
        for cert in read_certificates(&dir, host)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| RegistryError::Protocol {
        host: host.to_string(),
        reason: format!("HTTP client: {}", describe(&e)),
    })
}

fn read_certificates(
    dir: &std::path::Path,
    host: &str,
) -> Result<Vec<reqwest::Certificate>, RegistryError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut certs = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_some_and(|e| e == "crt") {
            let invalid = |reason: String| RegistryError::Protocol {
                host: host.to_string(),
                reason: format!("CA file {}: {reason}", path.display()),
            };
            let pem = std::fs::read(&path).map_err(|e| invalid(e.to_string()))?;
            certs.push(reqwest::Certificate::from_pem(&pem).map_err(|e| invalid(e.to_string()))?);
        }
    }
    Ok(certs)
}

/// reqwest's Display hides the cause ("error sending request"); the chain says what happened.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn parse_challenge(header: Option<&reqwest::header::HeaderValue>) -> Option<Challenge> {
    let value = header?.to_str().ok()?;
    let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let param = |name: &str| {
        params.split(',').find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key.trim() == name).then(|| value.trim().trim_matches('"').to_string())
        })
    };
    Some(Challenge::Bearer {
        realm: param("realm")?,
        service: param("service"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            parse_challenge(Some(&HeaderValue::from_static("Basic realm=\"x\""))),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(Some(&HeaderValue::from_static(
                "Bearer realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:a:pull\""
            ))),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            })
        );
        assert_eq!(
            parse_challenge(Some(&HeaderValue::from_static("Negotiate"))),
            None
        );
        assert_eq!(parse_challenge(None), None);
    }

    #[test]
    fn plain_http_only_on_loopback_or_listed() {
        assert!(plain_http_allowed("127.0.0.1:5000"));
        assert!(plain_http_allowed("localhost:5000"));
        assert!(!plain_http_allowed("ghcr.io"));
        assert!(!plain_http_allowed("10.0.0.1:5000"));
    }

    #[test]
    fn unauthorized_message_never_holds_secrets_and_says_why() {
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
    }
}
