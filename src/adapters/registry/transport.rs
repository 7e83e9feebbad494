//! How requests reach a registry: the HTTP client (with Docker's `certs.d` CAs), the scheme
//! (plain HTTP only where Docker allows it), and every request sent with the retry policy,
//! its failure named by its real cause.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response, StatusCode};

use super::error::RegistryError;
use crate::adapters::error_chain;
use crate::adapters::retry::{Retrier, Verdict};

/// How long one request may take before it counts as failed (and is tried again).
const TIMEOUT: Duration = Duration::from_secs(20);

/// A request that failed, before it is named for the caller.
#[derive(Debug)]
pub(super) enum Failure {
    Transport(reqwest::Error),
    /// 429 or 5xx: worth another try, after the delay the registry asked for, if any.
    Busy(StatusCode, Option<Duration>),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport(error) => f.write_str(&cause(error)),
            Failure::Busy(status, _) => write!(f, "HTTP {}", status.as_u16()),
        }
    }
}

/// Whether trying again can help: a reset, a refused or closed connection, a timeout, 429
/// and 5xx can pass; a certificate or a name that does not resolve cannot.
pub(super) fn verdict(failure: &Failure) -> Verdict {
    match failure {
        Failure::Busy(_, after) => Verdict::Again(*after),
        Failure::Transport(error) => {
            let chain = error_chain(error).to_lowercase();
            let settled = [
                "dns error",
                "failed to lookup",
                "certificate",
                "invalidcontenttype",
            ];
            if error.is_timeout() || chain.contains("connection reset") {
                Verdict::Again(None)
            } else if settled.iter().any(|s| chain.contains(s)) {
                Verdict::Final
            } else if error.is_connect()
                || error.is_request()
                || error.is_body()
                || error.is_decode()
            {
                Verdict::Again(None)
            } else {
                Verdict::Final
            }
        }
    }
}

/// What went wrong, in words: TLS, a timeout, a connection, or the registry's own answer.
fn cause(error: &reqwest::Error) -> String {
    let chain = error_chain(error);
    let lower = chain.to_lowercase();
    if error.is_timeout() {
        format!("no answer within {}s", TIMEOUT.as_secs())
    } else if lower.contains("certificate") || lower.contains("invalidcontenttype") {
        format!("TLS: {chain}")
    } else {
        chain
    }
}

/// The registry error a request that failed for good stands for.
pub(super) fn named(host: &str, what: &str, failure: Failure, attempts: u32) -> RegistryError {
    let host = host.to_string();
    let what = what.to_string();
    let tries = if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    };
    match failure {
        Failure::Busy(StatusCode::TOO_MANY_REQUESTS, _) => {
            RegistryError::RateLimited { host, what, tries }
        }
        Failure::Busy(status, _) => RegistryError::Status {
            host,
            what: format!("{what}{tries}"),
            status: status.as_u16(),
        },
        Failure::Transport(error) => RegistryError::Unreachable {
            host,
            reason: format!("{what}: {}{tries}", cause(&error)),
        },
    }
}

/// A registry's whole answer: registry answers are small (manifests, tokens), and reading the
/// body is part of the request that is retried.
#[derive(Debug)]
pub(super) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Sends the request `make` builds and reads the answer, with the retry policy: the answer of
/// any status but 429 and 5xx, or the failure that stayed, with how many attempts were made.
pub(super) async fn send(
    retrier: &Retrier,
    label: &str,
    make: impl Fn() -> RequestBuilder,
) -> Result<Answer, (Failure, u32)> {
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let result = retrier
        .run(label, verdict, || {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let sent = make().send();
            async move { read(sent.await.map_err(Failure::Transport)?).await }
        })
        .await;
    result.map_err(|failure| (failure, attempts.into_inner()))
}

async fn read(response: Response) -> Result<Answer, Failure> {
    let status = response.status();
    if busy(status) {
        return Err(Failure::Busy(status, retry_after(&response)));
    }
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(Failure::Transport)?.to_vec();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn busy(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `Retry-After` in seconds (the HTTP-date form is not used by registries).
fn retry_after(response: &Response) -> Option<Duration> {
    let seconds = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// Docker Hub's API lives on another host than its name.
pub(super) fn api_host(host: &str) -> &str {
    if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        host
    }
}

/// Plain HTTP as Docker allows it without configuration: loopback addresses, and the hosts
/// listed in `UMBRELLA_INSECURE_REGISTRIES` (comma-separated).
pub(super) fn plain_http_allowed(host: &str) -> bool {
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

/// A client for `host`: its `certs.d` CAs trusted, each request bounded in time.
pub(super) fn http_client(host: &str) -> Result<reqwest::Client, RegistryError> {
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
        reason: format!("HTTP client: {}", error_chain(&e)),
    })
}

fn read_certificates(dir: &Path, host: &str) -> Result<Vec<reqwest::Certificate>, RegistryError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback_or_listed() {
        assert!(plain_http_allowed("127.0.0.1:5000"));
        assert!(plain_http_allowed("localhost:5000"));
        assert!(!plain_http_allowed("ghcr.io"));
        assert!(!plain_http_allowed("10.0.0.1:5000"));
    }

    #[test]
    fn busy_answers_are_worth_another_try() {
        assert!(busy(StatusCode::TOO_MANY_REQUESTS) && busy(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!busy(StatusCode::NOT_FOUND) && !busy(StatusCode::UNAUTHORIZED));
        let rate_limited = named(
            "r:1",
            "/v2/",
            Failure::Busy(StatusCode::TOO_MANY_REQUESTS, None),
            4,
        );
        assert_eq!(
            rate_limited.to_string(),
            "registry r:1: /v2/: too many requests (HTTP 429) (after 4 attempts)"
        );
        let unavailable = named(
            "r:1",
            "/v2/",
            Failure::Busy(StatusCode::SERVICE_UNAVAILABLE, None),
            3,
        );
        assert_eq!(
            unavailable.to_string(),
            "registry r:1: /v2/ (after 3 attempts): HTTP 503"
        );
    }
}
