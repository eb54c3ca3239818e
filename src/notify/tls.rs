//! TLS for `https://` receivers: which certificate authorities berth trusts.
//!
//! The host's: its CA bundle as OpenSSL would find it, or the file and directory named by
//! `SSL_CERT_FILE` and `SSL_CERT_DIR` instead (how a private CA is trusted). A host with
//! no CA bundle at all, as berth's own `FROM scratch` image, trusts the Mozilla roots
//! built into berth (the `webpki-roots` crate) rather than no one: a hosted hook (Slack's,
//! Discord's) then works there as it does on a full host. The Mozilla roots are never
//! added to a host's own store, and never stand in for an `SSL_CERT_*` that names nothing
//! readable: an administrator's choice of whom to trust is theirs.
//!
//! The crypto is rustls's `ring` provider (it builds with a C compiler alone). It is
//! given to the receivers' config here, and [`install_provider`] makes it the process's
//! default as well: reqwest builds a TLS connector into every client it makes, even one
//! that only speaks http (to the engine, to the daemon), and panics without a provider.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Make `ring` the process's rustls provider, once, before any HTTP client is built.
/// Another already installed is left in place.
pub fn install_provider() {
    let _ = provider().install_default();
}

/// A reqwest client builder with berth's TLS: the provider installed and the trust of
/// [`client_config`]. Every client berth makes starts here, even one that only speaks
/// plain http (a probe, the daemon's own endpoint): reqwest builds TLS into each client,
/// and its own platform verifier refuses to build at all on a host without a CA store,
/// such as berth's `FROM scratch` image.
pub fn builder() -> reqwest::ClientBuilder {
    install_provider();
    reqwest::Client::builder().tls_backend_preconfigured(client_config().0)
}

/// rustls's `ring` provider. rustls marks it deprecated since 0.23.48 because ring has
/// no post-quantum key exchange; aws-lc-rs has, but needs cmake to build. A webhook's
/// event is short-lived news, not a secret to keep for decades: ring it is.
#[allow(deprecated)]
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Where the trusted roots came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// The host's store (or the `SSL_CERT_*` files), with this many certificates.
    Host(usize),
    /// The Mozilla roots built into berth: the host has no CA store.
    Mozilla(usize),
}

/// The TLS config of the client every attempt uses, and where its roots came from.
pub fn client_config() -> (ClientConfig, Roots) {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "a CA certificate of this host cannot be read");
    }
    let named = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|p| !p.is_empty()));
    let (store, roots) = roots(found.certs, named);
    if store.is_empty() {
        tracing::warn!(
            "SSL_CERT_FILE or SSL_CERT_DIR names no readable CA certificate: no https receiver can be trusted"
        );
    }
    let config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(store)
        .with_no_client_auth();
    (config, roots)
}

/// The root store of the host's certificates `host` (those `SSL_CERT_*` named, when
/// `named`): them, or the Mozilla roots when the host has none and named none.
fn roots(host: Vec<CertificateDer<'static>>, named: bool) -> (RootCertStore, Roots) {
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(host);
    if store.is_empty() && !named {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let n = store.len();
        return (store, Roots::Mozilla(n));
    }
    let n = store.len();
    (store, Roots::Host(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_certificate() -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ca.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        cert.der().clone()
    }

    #[test]
    fn a_host_with_a_ca_store_trusts_only_its_own() {
        let (store, roots) = roots(vec![a_certificate()], false);
        assert_eq!(roots, Roots::Host(1));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_host_without_a_ca_store_trusts_the_mozilla_roots() {
        let (store, roots) = roots(vec![], false);
        assert!(
            matches!(roots, Roots::Mozilla(n) if n > 100 && n == store.len()),
            "{roots:?}"
        );
    }

    #[test]
    fn an_ssl_cert_file_that_holds_nothing_trusts_no_one_rather_than_mozilla() {
        let (store, roots) = roots(vec![CertificateDer::from(vec![1, 2, 3])], true);
        assert_eq!(roots, Roots::Host(0));
        assert!(store.is_empty());
    }
}
