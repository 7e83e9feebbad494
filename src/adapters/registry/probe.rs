//! Settling the scheme a registry speaks, from its `/v2/` answer, within one retry budget.
//!
//! HTTPS always; plain HTTP too where Docker allows it (see [`transport::plain_http_allowed`]),
//! and only when a registry really answers there: a TLS registry whose certificate is not
//! trusted must say so, not be talked to in clear text. Where both are allowed, each attempt
//! asks both at once, and the answers tell which scheme the registry is meant to be reached
//! by; a failure is then that scheme's, and later attempts ask it alone. While neither
//! answers at all (reset, refused, stalled), both are asked again and the failure named is
//! plain HTTP's: the scheme such a host is reached by once HTTPS has failed, as Docker's.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

use futures_util::future::{Either, select};
use reqwest::StatusCode;

use super::error::RegistryError;
use super::transport::{self, Answer, Failure};
use crate::adapters::retry::{Retrier, Verdict};

/// How a registry is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    Https,
    Http,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// The schemes an attempt asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    One(Scheme),
    Both,
}

/// An attempt's failure, over the scheme the registry is taken to be meant for.
#[derive(Debug)]
struct Missed {
    scheme: Scheme,
    failure: Failure,
}

impl std::fmt::Display for Missed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "over {}: {}", self.scheme.name(), self.failure)
    }
}

/// What one attempt found, and what the next one asks.
type Outcome = (Result<(Scheme, Answer), Missed>, Asked);

/// `GET /v2/` of `host` until a scheme answers, with the retry policy (one budget for both
/// schemes): the scheme and its answer, or the failure of the scheme the registry is meant
/// to be reached by.
pub(super) async fn settle(
    http: &reqwest::Client,
    retrier: &Retrier,
    host: &str,
) -> Result<(Scheme, Answer), RegistryError> {
    let first = if transport::plain_http_allowed(host) {
        Asked::Both
    } else {
        Asked::One(Scheme::Https)
    };
    let asked = &Mutex::new(first);
    let attempts = &AtomicU32::new(0);
    let label = format!("registry {host}: /v2/");
    let classify = |missed: &Missed| transport::verdict(&missed.failure);
    let result = retrier
        .run(&label, classify, || async move {
            attempts.fetch_add(1, Ordering::Relaxed);
            let now = *asked.lock().unwrap_or_else(PoisonError::into_inner);
            let (outcome, next) = attempt(http, host, now).await;
            *asked.lock().unwrap_or_else(PoisonError::into_inner) = next;
            outcome
        })
        .await;
    result.map_err(|missed| {
        let what = format!("/v2/ over {}", missed.scheme.name());
        transport::named(
            host,
            &what,
            missed.failure,
            attempts.load(Ordering::Relaxed),
        )
    })
}

async fn attempt(http: &reqwest::Client, host: &str, asked: Asked) -> Outcome {
    match asked {
        Asked::One(Scheme::Https) => {
            let result = ask(http, host, Scheme::Https).await;
            let outcome = result.map(|answer| (Scheme::Https, answer));
            (outcome.map_err(missed(Scheme::Https)), asked)
        }
        Asked::One(Scheme::Http) => {
            let outcome = match ask(http, host, Scheme::Http).await {
                Ok(answer) if speaks_registry(&answer) => Ok((Scheme::Http, answer)),
                Ok(answer) => Err(Failure::NotRegistry(answer.status)),
                Err(failure) => Err(failure),
            };
            (outcome.map_err(missed(Scheme::Http)), asked)
        }
        Asked::Both => both(http, host).await,
    }
}

/// Asks both schemes at once; HTTPS wins whenever it answers.
async fn both(http: &reqwest::Client, host: &str) -> Outcome {
    let https = std::pin::pin!(ask(http, host, Scheme::Https));
    let plain = std::pin::pin!(ask(http, host, Scheme::Http));
    match select(https, plain).await {
        Either::Left((Ok(answer), _)) => (Ok((Scheme::Https, answer)), Asked::One(Scheme::Https)),
        Either::Left((Err(failure), plain)) => judge(failure, plain.await),
        Either::Right((plain, https)) => match https.await {
            Ok(answer) => (Ok((Scheme::Https, answer)), Asked::One(Scheme::Https)),
            Err(failure) => judge(failure, plain),
        },
    }
}

/// Which scheme is meant, when HTTPS failed with `https` and plain HTTP answered `plain`.
fn judge(https: Failure, plain: Result<Answer, Failure>) -> Outcome {
    let no_tls = matches!(&https, Failure::Transport(e) if transport::speaks_no_tls(e));
    let https_final = transport::verdict(&https) == Verdict::Final;
    let (scheme, failure) = match plain {
        Ok(answer) if speaks_registry(&answer) => {
            return (Ok((Scheme::Http, answer)), Asked::One(Scheme::Http));
        }
        // A plain HTTP server that is no registry.
        Ok(answer) if no_tls => (Scheme::Http, Failure::NotRegistry(answer.status)),
        // A TLS server answering plain HTTP with 400; or one that answered in TLS (busy), or
        // whose certificate or name will not do.
        Ok(_) => (Scheme::Https, https),
        Err(_) if matches!(https, Failure::Busy(..)) || (https_final && !no_tls) => {
            (Scheme::Https, https)
        }
        // No TLS there, or a plain HTTP server that answered (busy): plain HTTP is meant.
        Err(plain) if no_tls || matches!(plain, Failure::Busy(..)) => (Scheme::Http, plain),
        // Neither answered at all: both are asked again.
        Err(plain) => {
            let missed = Missed {
                scheme: Scheme::Http,
                failure: plain,
            };
            return (Err(missed), Asked::Both);
        }
    };
    (Err(Missed { scheme, failure }), Asked::One(scheme))
}

fn missed(scheme: Scheme) -> impl FnOnce(Failure) -> Missed {
    move |failure| Missed { scheme, failure }
}

/// One `GET /v2/` over `scheme`.
async fn ask(http: &reqwest::Client, host: &str, scheme: Scheme) -> Result<Answer, Failure> {
    let url = format!("{}://{}/v2/", scheme.name(), transport::api_host(host));
    transport::once(http.get(url)).await
}

/// Whether a `/v2/` answer comes from an OCI registry: 200 or 401 with the distribution header
/// (a TLS server answers plain HTTP with 400).
fn speaks_registry(answer: &Answer) -> bool {
    matches!(answer.status, StatusCode::OK | StatusCode::UNAUTHORIZED)
        && answer
            .headers
            .contains_key("Docker-Distribution-API-Version")
}
