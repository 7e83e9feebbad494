//! Why a SOPS document could not be read or written.

use super::cipher::ValueError;

/// A document that cannot be decrypted or encrypted. No variant ever holds a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SopsError {
    #[error("its `sops` metadata is not SOPS': {0}")]
    Metadata(String),
    #[error(
        "it is encrypted only to {0} keys; umbrella decrypts with age keys (add an age recipient with `sops updatekeys`)"
    )]
    NotAge(String),
    #[error(
        "no age key to decrypt it with: it is encrypted to {recipients}; umbrella looked in {looked} (as sops does)"
    )]
    NoKey { recipients: String, looked: String },
    #[error("none of the age keys found ({looked}) is one it is encrypted to ({recipients})")]
    WrongKey { recipients: String, looked: String },
    #[error("the value at {path}: {problem}")]
    Value { path: String, problem: ValueError },
    #[error(
        "its SOPS MAC does not match its content: it was changed after it was encrypted (edited by hand?); edit it with `sops` instead"
    )]
    Mac,
    #[error("age recipient '{0}' is not an age X25519 public key (age1...)")]
    Recipient(String),
    #[error("encrypting the data key: {0}")]
    Encrypt(String),
}
