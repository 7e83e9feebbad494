//! How a registry asks to be authenticated (`WWW-Authenticate`), and the token endpoint of
//! the Docker/OCI token flow.

use reqwest::header::HeaderValue;

use super::error::RegistryError;
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
    })
}

/// What a token request needs: the registry's client, retries, host and credential.
pub(super) struct TokenClient<'a> {
    pub http: &'a reqwest::Client,
    pub retrier: &'a Retrier,
    pub host: &'a str,
    pub credential: Option<&'a Credential>,
}

/// A token from the realm for `scope`, with the credential when there is one.
pub(super) async fn fetch_token(
    client: &TokenClient<'_>,
    realm: &str,
    service: Option<&str>,
    scope: Option<&str>,
) -> Result<String, RegistryError> {
    let host = client.host;
    let mut query: Vec<(&str, &str)> = Vec::new();
    query.extend(service.map(|s| ("service", s)));
    query.extend(scope.map(|s| ("scope", s)));
    let what = format!("token from {realm}");
    let request = || {
        let request = client.http.get(realm).query(&query);
        match &client.credential {
            Some(Credential::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            Some(Credential::IdentityToken(token)) => request.bearer_auth(token),
            None => request,
        }
    };
    let label = format!("registry {}: {what}", host);
    let response = transport::send(client.retrier, &label, request)
        .await
        .map_err(|(failure, attempts)| transport::named(host, &what, failure, attempts))?;
    if !response.status.is_success() {
        return Err(RegistryError::Unauthorized {
            host: host.to_string(),
            had_credentials: client.credential.is_some(),
        });
    }
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
    }
    let body: TokenResponse =
        serde_json::from_slice(&response.body).map_err(|e| RegistryError::Protocol {
            host: host.to_string(),
            reason: format!("{what}: {e}"),
        })?;
    body.token
        .or(body.access_token)
        .ok_or_else(|| RegistryError::Protocol {
            host: host.to_string(),
            reason: format!("{what}: no token in the answer"),
        })
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
                service: Some("registry.example".into())
            })
        );
        assert_eq!(
            parse_challenge(Some(&HeaderValue::from_static("Negotiate"))),
            None
        );
        assert_eq!(parse_challenge(None), None);
    }
}
