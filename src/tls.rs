//! The TLS crypto provider of the process.
//!
//! Two providers (ring and aws-lc-rs) end up compiled in through different
//! crates, and rustls then refuses to pick one by itself: every TLS client
//! gsdr builds, or lets a crate build, uses ring through this module.

use std::sync::Arc;

/// The crypto provider for TLS clients that gsdr configures itself.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process default, for crates (kube, redis) that call
/// `rustls::ClientConfig::builder()`; a no-op once done.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
