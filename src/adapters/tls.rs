//! One process-wide TLS crypto provider (ring) for kube, reqwest and everything else.

/// Installs ring as rustls' provider. Idempotent: later calls and an already installed provider
/// are fine, so library entry points call it too and tests need not remember.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
