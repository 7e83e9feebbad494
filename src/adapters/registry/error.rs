//! How a registry request fails, in words a person can act on.

/// A registry request that failed; never carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {host}: cannot connect: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("registry {host}: credentials were {}", if *had_credentials { "refused" } else { "missing (run `docker login` for it)" })]
    Unauthorized { host: String, had_credentials: bool },
    #[error("registry {host}: {what}: access denied (HTTP 403): the credentials {} not allowed to do this", if *had_credentials { "given are" } else { "(none were given) are" })]
    Forbidden {
        host: String,
        what: String,
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
