//! Registry credentials from the Docker config (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`): `auths`, `credsStore` and `credHelpers`, like the Docker CLI.

use std::fmt;

/// A username and password (or identity token) for one registry. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic { username: String, password: String },
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

/// The Docker config could not give a credential although it names one for the registry.
#[derive(Debug, thiserror::Error)]
#[error("credentials for {registry} in the Docker config: {reason}")]
pub struct CredentialError {
    pub registry: String,
    pub reason: String,
}

/// The key the Docker CLI stores Docker Hub credentials under.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Looks up the credential for a registry host; `Ok(None)` when none is configured.
pub fn credential_for(registry: &str) -> Result<Option<Credential>, CredentialError> {
    let key = if registry == "docker.io" || registry == "index.docker.io" {
        DOCKER_HUB_KEY
    } else {
        registry
    };
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    match docker_credential::get_credential(key) {
        Ok(DockerCredential::UsernamePassword(username, password)) => {
            Ok(Some(Credential::Basic { username, password }))
        }
        Ok(DockerCredential::IdentityToken(token)) => Ok(Some(Credential::IdentityToken(token))),
        Err(E::NoCredentialConfigured | E::ConfigNotFound | E::ConfigReadError) => Ok(None),
        // A helper's stdout/stderr may echo secrets: report only which helper failed.
        Err(E::HelperFailure { helper, .. }) => Err(CredentialError {
            registry: registry.to_string(),
            reason: format!("credential helper `docker-credential-{helper}` failed"),
        }),
        Err(other) => Err(CredentialError {
            registry: registry.to_string(),
            reason: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let basic = Credential::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{basic:?}").contains("hunter2"));
        let token = Credential::IdentityToken("tok-secret".into());
        assert!(!format!("{token:?}").contains("tok-secret"));
    }
}
