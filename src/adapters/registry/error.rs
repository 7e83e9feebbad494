//! How a registry request fails, in words a person can act on.

/// A registry request that failed; never carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {host}: cannot connect: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("registry {host}: credentials were {}", if *had_credentials { "refused" } else { "missing (run `docker login` for it)" })]
    Unauthorized { host: String, had_credentials: bool },
    #[error("registry {host}: {what}: access denied ({answer}): the credentials {} not allowed to {wanted}", if *had_credentials { "given are" } else { "(none were given) are" })]
    Forbidden {
        host: String,
        what: String,
        /// The registry's answer: `HTTP 403`, or a 401 saying the token lacks the scope.
        answer: String,
        /// What was asked, in words: `pull from repository a/b`.
        wanted: String,
        had_credentials: bool,
    },
    #[error("registry {host}: {what}: too many requests (HTTP 429){tries}")]
    RateLimited {
        host: String,
        what: String,
        tries: String,
    },
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

/// A token scope in words: `repository:a/b:pull,push` is "pull from and push to repository
/// a/b".
pub(super) fn wanted(scope: &str) -> String {
    let mut parts = scope.splitn(2, ':');
    let (kind, rest) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let Some((name, actions)) = rest.rsplit_once(':') else {
        return format!("use {scope}");
    };
    let verbs: Vec<&str> = actions
        .split(',')
        .map(|action| match action {
            "pull" => "pull from",
            "push" => "push to",
            other => other,
        })
        .collect();
    format!("{} {kind} {name}", verbs.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_as_words() {
        assert_eq!(wanted("repository:a/b:pull"), "pull from repository a/b");
        assert_eq!(
            wanted("repository:a/b:pull,push"),
            "pull from and push to repository a/b"
        );
        assert_eq!(wanted("odd"), "use odd");
    }
}
