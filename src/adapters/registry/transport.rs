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
/// How long a connection (with its TLS handshake) may take to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request that failed, before it is named for the caller.
#[derive(Debug)]
pub(super) enum Failure {
    Transport(reqwest::Error),
    /// 429 or 5xx: worth another try, after the delay the registry asked for, if any.
    Busy(StatusCode, Option<Duration>),
    /// A plain HTTP server that answered `/v2/` with this status, not as an OCI registry.
    NotRegistry(StatusCode),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport(error) => f.write_str(&cause(error)),
            Failure::Busy(status, _) => write!(f, "HTTP {}", status.as_u16()),
            Failure::NotRegistry(status) => write!(
                f,
                "answered HTTP {} without the distribution API header: not an OCI registry",
                status.as_u16()
            ),
        }
    }
}

/// Whether trying again can help: a reset, a refused or closed connection, a timeout, 429
/// and 5xx can pass; a certificate or a name that does not resolve cannot.
pub(super) fn verdict(failure: &Failure) -> Verdict {
    match failure {
        Failure::Busy(_, after) => Verdict::Again(*after),
        Failure::NotRegistry(_) => Verdict::Final,
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
    if error.is_timeout() && error.is_connect() {
        format!(
            "timed out: no connection within {}s",
            CONNECT_TIMEOUT.as_secs()
        )
    } else if error.is_timeout() {
        format!("timed out: no answer within {}s", TIMEOUT.as_secs())
    } else if lower.contains("connection reset") {
        format!("connection reset: {chain}")
    } else if lower.contains("certificate") || speaks_no_tls(error) {
        format!("TLS: {chain}")
    } else {
        chain
    }
}

/// Whether a TLS handshake failed because the server answered something else than TLS (a
/// plain HTTP server answers a TLS hello with an HTTP 400).
pub(super) fn speaks_no_tls(error: &reqwest::Error) -> bool {
    error_chain(error)
        .to_lowercase()
        .contains("invalidcontenttype")
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
        Failure::NotRegistry(_) => RegistryError::Protocol {
            host,
            reason: format!("{what}: {failure}"),
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
            once(make())
        })
        .await;
    result.map_err(|failure| (failure, attempts.into_inner()))
}

/// Sends `request` once and reads the answer: any status but 429 and 5xx, or the failure.
pub(super) async fn once(request: RequestBuilder) -> Result<Answer, Failure> {
    read(request.send().await.map_err(Failure::Transport)?).await
}

async fn read(response: Response) -> Result<Answer, Failure> {
    let status = response.status();
    if busy(status) {
        let after = retry_after(response.headers(), std::time::SystemTime::now());
        return Err(Failure::Busy(status, after));
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

/// The delay a `Retry-After` header asks for: delay-seconds, or an HTTP-date (IMF-fixdate,
/// `Sun, 06 Nov 1994 08:49:37 GMT`) taken from `now` (a date past is no delay). Anything
/// else asks for nothing, and the backoff decides.
fn retry_after(headers: &HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = std::time::SystemTime::from(http_date(value)?);
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate, the HTTP-date form senders must use (RFC 9110, section 5.6.7).
fn http_date(text: &str) -> Option<time::OffsetDateTime> {
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let [weekday, day, month, year, clock, "GMT"] = fields[..] else {
        return None;
    };
    if weekday.len() != 4 || !weekday.ends_with(',') || day.len() != 2 || year.len() != 4 {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as u8 + 1;
    let date = time::Date::from_calendar_date(
        year.parse().ok()?,
        time::Month::try_from(month).ok()?,
        day.parse().ok()?,
    )
    .ok()?;
    let mut parts = clock
        .split(':')
        .map(|p| p.parse::<u8>().ok().filter(|_| p.len() == 2));
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    if parts.next().is_some() {
        return None;
    }
    let clock = time::Time::from_hms(h, m, s).ok()?;
    Some(time::PrimitiveDateTime::new(date, clock).assume_utc())
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
        .connect_timeout(CONNECT_TIMEOUT)
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
    fn retry_after_is_read_in_seconds_or_as_an_http_date_and_garbage_ignored() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37
        let asked = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                reqwest::header::RETRY_AFTER,
                value.parse().expect("a header value"),
            );
            retry_after(&headers, now)
        };
        assert_eq!(asked("3"), Some(Duration::from_secs(3)));
        assert_eq!(asked(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(asked("0"), Some(Duration::ZERO));
        assert_eq!(
            asked("Sun, 06 Nov 1994 08:49:42 GMT"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            asked("Mon, 07 Nov 1994 08:49:37 GMT"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            asked("Sun, 06 Nov 1994 08:00:00 GMT"),
            Some(Duration::ZERO),
            "a date past asks for no delay"
        );
        for garbage in [
            "",
            "soon",
            "-1",
            "1.5",
            "3 s",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
        ] {
            assert_eq!(asked(garbage), None, "{garbage:?}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
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
