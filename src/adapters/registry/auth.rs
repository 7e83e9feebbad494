//! How a registry wants to be authenticated, learned once from its `WWW-Authenticate`
//! challenge (its `/v2/` answer, or the first refusal), and what each request then carries:
//! nothing, Basic credentials, or a bearer token for its scope from the registry's realm.
//!
//! Token requests follow the distribution token specification: a GET with Basic credentials
//! or none (anonymous), or, with an identity token (`docker login` to a registry that hands
//! them out), the OAuth2 `refresh_token` grant, whose answer may rotate the refresh token.

use std::sync::{Mutex, MutexGuard, PoisonError};

use reqwest::RequestBuilder;
use reqwest::header::HeaderValue;

use super::error::{self, RegistryError};
use super::tokens::{Issued, Lease, TokenCache};
use super::transport;
use crate::adapters::credentials::Credential;
use crate::adapters::retry::Retrier;

/// How the registry asked to be authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        /// `insufficient_scope`, `invalid_token`, ... when the challenge answers a token.
        error: Option<String>,
    },
}

pub(super) fn parse_challenge(header: Option<&HeaderValue>) -> Option<Challenge> {
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
        error: param("error"),
    })
}

/// Whether a 401's challenge says the token was valid but does not grant the scope.
pub(super) fn insufficient_scope(header: Option<&HeaderValue>) -> bool {
    matches!(
        parse_challenge(header),
        Some(Challenge::Bearer { error: Some(e), .. }) if e == "insufficient_scope"
    )
}

/// What one request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Authorization {
    Nothing,
    Basic { username: String, password: String },
    Bearer(Lease),
}

impl Authorization {
    pub fn apply(&self, request: RequestBuilder) -> RequestBuilder {
        match self {
            Authorization::Nothing => request,
            Authorization::Basic { username, password } => {
                request.basic_auth(username, Some(password))
            }
            Authorization::Bearer(lease) => request.bearer_auth(&lease.token),
        }
    }

    pub fn is_nothing(&self) -> bool {
        matches!(self, Authorization::Nothing)
    }
}

/// One registry's auth state: its challenge once known, its tokens by scope, and the refresh
/// token an identity token grant rotated to.
pub(super) struct Authenticator {
    host: String,
    credential: Option<Credential>,
    challenge: Mutex<Option<Challenge>>,
    tokens: TokenCache,
    refresh_token: Mutex<Option<String>>,
}

/// The HTTP client and retries token requests go through.
pub(super) struct Transport<'a> {
    pub http: &'a reqwest::Client,
    pub retrier: &'a Retrier,
}

impl Authenticator {
    pub fn new(host: &str, credential: Option<Credential>) -> Self {
        let refresh_token = match &credential {
            Some(Credential::IdentityToken(token)) => Some(token.clone()),
            _ => None,
        };
        Authenticator {
            host: host.to_string(),
            credential,
            challenge: Mutex::new(None),
            tokens: TokenCache::default(),
            refresh_token: Mutex::new(refresh_token),
        }
    }

    pub fn has_credentials(&self) -> bool {
        self.credential.is_some()
    }

    /// Remembers how the registry asks to be authenticated, from a 401's header.
    pub fn learn(&self, header: Option<&HeaderValue>) -> bool {
        let Some(challenge) = parse_challenge(header) else {
            return false;
        };
        *locked(&self.challenge) = Some(challenge);
        true
    }

    /// What a request for `scope` carries, before any refusal: what the registry's challenge
    /// asks for, or nothing while it has not asked.
    pub async fn authorize(
        &self,
        transport: &Transport<'_>,
        scope: Option<&str>,
    ) -> Result<Authorization, RegistryError> {
        let challenge = locked(&self.challenge).clone();
        match challenge {
            None => Ok(Authorization::Nothing),
            Some(Challenge::Basic) => Ok(match &self.credential {
                Some(Credential::Basic { username, password }) => Authorization::Basic {
                    username: username.clone(),
                    password: password.clone(),
                },
                _ => Authorization::Nothing,
            }),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let fetch = || self.fetch_token(transport, &realm, service.as_deref(), scope);
                let lease = self.tokens.get(scope.unwrap_or(""), fetch).await?;
                Ok(Authorization::Bearer(lease))
            }
        }
    }

    /// After a 401 answered `sent`: what the one retry carries, or `None` when another try
    /// cannot change the answer (the credentials were sent and refused, or a token fetched
    /// just now lacks the scope).
    pub async fn after_refusal(
        &self,
        transport: &Transport<'_>,
        scope: Option<&str>,
        sent: &Authorization,
        header: Option<&HeaderValue>,
    ) -> Result<Option<Authorization>, RegistryError> {
        if !self.learn(header) {
            return Ok(None);
        }
        match sent {
            Authorization::Basic { .. } => return Ok(None),
            Authorization::Bearer(lease) if lease.fresh && insufficient_scope(header) => {
                return Ok(None);
            }
            Authorization::Bearer(lease) => {
                self.tokens.discard(scope.unwrap_or(""), &lease.token).await;
            }
            Authorization::Nothing => {}
        }
        let retry = self.authorize(transport, scope).await?;
        Ok((!retry.is_nothing()).then_some(retry))
    }

    /// A token for `scope` from the realm.
    async fn fetch_token(
        &self,
        transport: &Transport<'_>,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<Issued, RegistryError> {
        let refresh_token = locked(&self.refresh_token).clone();
        let what = format!("token from {realm}");
        let mut params: Vec<(&str, &str)> = Vec::new();
        params.extend(service.map(|s| ("service", s)));
        params.extend(scope.map(|s| ("scope", s)));
        let request =
            || self.token_request(transport.http, realm, &params, refresh_token.as_deref());
        let label = format!("registry {}: {what}", self.host);
        let answer = transport::send(transport.retrier, &label, request)
            .await
            .map_err(|(failure, attempts)| {
                transport::named(&self.host, &what, failure, attempts)
            })?;
        let (issued, rotated) = self.read_token_answer(&answer, &what, scope)?;
        if let (Some(rotated), Some(_)) = (rotated, &refresh_token) {
            *locked(&self.refresh_token) = Some(rotated);
        }
        Ok(issued)
    }

    /// The OAuth2 `refresh_token` grant when there is a refresh token, else a GET with the
    /// Basic credentials or none.
    fn token_request(
        &self,
        http: &reqwest::Client,
        realm: &str,
        params: &[(&str, &str)],
        refresh_token: Option<&str>,
    ) -> RequestBuilder {
        if let Some(token) = refresh_token {
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("client_id", "umbrella"),
            ];
            form.extend_from_slice(params);
            return http.post(realm).form(&form);
        }
        let request = http.get(realm).query(params);
        match &self.credential {
            Some(Credential::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            _ => request,
        }
    }

    /// The token in the realm's answer, or the refusal its status stands for: 401, the
    /// credentials (or their absence) were refused; 403, they were recognised but may not have
    /// `scope` (the distribution token spec has a realm grant what it can, and the registry
    /// refuse the rest, but some realms refuse the whole request).
    fn read_token_answer(
        &self,
        answer: &transport::Answer,
        what: &str,
        scope: Option<&str>,
    ) -> Result<(Issued, Option<String>), RegistryError> {
        let status = answer.status;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(RegistryError::Unauthorized {
                host: self.host.clone(),
                had_credentials: self.has_credentials(),
            });
        }
        if status == reqwest::StatusCode::FORBIDDEN {
            return Err(RegistryError::Forbidden {
                host: self.host.clone(),
                what: what.to_string(),
                answer: "HTTP 403 Forbidden".to_string(),
                wanted: scope.map_or_else(|| "use the registry".to_string(), error::wanted),
                had_credentials: self.has_credentials(),
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                host: self.host.clone(),
                what: what.to_string(),
                status: status.as_u16(),
            });
        }
        parse_token_answer(&answer.body).map_err(|reason| RegistryError::Protocol {
            host: self.host.clone(),
            reason: format!("{what}: {reason}"),
        })
    }
}

/// A token endpoint's answer: the token (`token`, or OAuth2's `access_token`), its lifetime,
/// and the refresh token it may rotate to.
fn parse_token_answer(body: &[u8]) -> Result<(Issued, Option<String>), String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
        refresh_token: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let token = answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .ok_or("no token in the answer")?;
    let issued = Issued {
        token,
        expires_in: answer.expires_in,
    };
    Ok((issued, answer.refresh_token))
}

/// The mutex's value; a panic elsewhere while it was held leaves a value still worth using.
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

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
                service: Some("registry.example".into()),
                error: None,
            })
        );
        assert_eq!(
            parse_challenge(Some(&HeaderValue::from_static("Negotiate"))),
            None
        );
        assert_eq!(parse_challenge(None), None);
    }

    #[test]
    fn tells_a_missing_scope_from_a_bad_token() {
        let scope = HeaderValue::from_static(
            "Bearer realm=\"http://a/token\",service=\"r\",scope=\"repository:x:pull\",error=\"insufficient_scope\"",
        );
        let invalid = HeaderValue::from_static(
            "Bearer realm=\"http://a/token\",service=\"r\",error=\"invalid_token\"",
        );
        assert!(insufficient_scope(Some(&scope)));
        assert!(!insufficient_scope(Some(&invalid)));
        assert!(!insufficient_scope(None));
    }

    #[test]
    fn a_realm_refusing_the_credentials_is_told_from_one_forbidding_the_scope() {
        let credential = Credential::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        let auth = Authenticator::new("r:1", Some(credential));
        let answer = |status: u16| transport::Answer {
            status: reqwest::StatusCode::from_u16(status).expect("a status"),
            headers: reqwest::header::HeaderMap::new(),
            body: Vec::new(),
        };
        let what = "token from http://a/token";
        let refused = auth.read_token_answer(&answer(401), what, Some("repository:a/b:pull"));
        assert_eq!(
            refused.map(|_| ()).map_err(|e| e.to_string()),
            Err("registry r:1: credentials were refused".to_string())
        );
        let forbidden = auth.read_token_answer(&answer(403), what, Some("repository:a/b:pull"));
        assert_eq!(
            forbidden.map(|_| ()).map_err(|e| e.to_string()),
            Err("registry r:1: token from http://a/token: access denied (HTTP 403 Forbidden): the credentials given are not allowed to pull from repository a/b".to_string())
        );
    }

    #[test]
    fn reads_token_answers_of_both_forms() {
        let docker = br#"{"token":"t1","expires_in":300,"issued_at":"2026-01-01T00:00:00Z"}"#;
        let (issued, rotated) = parse_token_answer(docker).unwrap();
        assert_eq!(
            issued,
            Issued {
                token: "t1".into(),
                expires_in: Some(300)
            }
        );
        assert_eq!(rotated, None);
        let oauth = br#"{"access_token":"t2","refresh_token":"r2","scope":"repository:a:pull"}"#;
        let (issued, rotated) = parse_token_answer(oauth).unwrap();
        assert_eq!(
            issued,
            Issued {
                token: "t2".into(),
                expires_in: None
            }
        );
        assert_eq!(rotated.as_deref(), Some("r2"));
        assert!(parse_token_answer(br#"{"token":""}"#).is_err());
        assert!(parse_token_answer(b"<html>").is_err());
    }
}
