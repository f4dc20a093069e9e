//! Certificates: the per-handshake resolver and the sources that publish into it.
//!
//! The TLS handshake only ever reads [`CertResolver`] (SNI → certificate, one map read).
//! Issuers (the internal CA, PEM files, and ACME) obtain certificates elsewhere and
//! [`CertResolver::publish`] them; a new certificate takes effect for the next handshake.

pub mod acme;
pub mod files;
pub mod internal;
pub mod provider;
pub mod queue;
pub mod store;

use std::sync::{Arc, RwLock};

use crate::util::hash::{FastMap, shrink_sparse};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::error::X509Error;

pub use provider::{CertBoard, CertProvider, CertState, CertStatus, HostChanges};

/// ALPN protocol of the ACME TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// What an operator needs to know about a served certificate.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CertInfo {
    /// Issuer common name (or the whole issuer DN when it has none).
    pub issuer: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

/// A certificate ready to serve.
#[derive(Debug)]
pub struct CertEntry {
    /// Chain and signing key for rustls.
    pub key: Arc<CertifiedKey>,
    /// Parsed facts about the leaf.
    pub info: CertInfo,
}

/// Why a certificate or key cannot be served. The texts are what operators see in logs, in
/// `mta-stsd check` and in a host's last error.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The chain holds no certificate.
    #[error("no certificate in the chain")]
    EmptyChain,
    /// The PEM text holds no CERTIFICATE block.
    #[error("no CERTIFICATE block found")]
    NoPemCertificate,
    /// A CERTIFICATE block is malformed.
    #[error("bad PEM certificate: {0}")]
    BadPem(pem::Error),
    /// No private key could be read from the PEM text.
    #[error("no usable private key: {0}")]
    BadKey(pem::Error),
    /// The key belongs to another certificate.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// rustls refused the key or the chain for another reason.
    #[error("unusable key or certificate: {0}")]
    Unusable(rustls::Error),
    /// The DER is not an X.509 certificate.
    #[error("cannot parse certificate: {0}")]
    Parse(x509_parser::nom::Err<X509Error>),
    /// The subjectAltName extension is malformed.
    #[error("bad subjectAltName: {0}")]
    BadSan(X509Error),
}

impl CertEntry {
    /// Builds an entry from a chain (leaf first) and a private key, checking they match.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, CertError> {
        let leaf = chain.first().ok_or(CertError::EmptyChain)?;
        let info = cert_info(leaf)?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => CertError::KeyMismatch,
            other => CertError::Unusable(other),
        })?;
        Ok(CertEntry {
            key: Arc::new(certified),
            info,
        })
    }

    /// Builds an entry from PEM text: the chain (leaf first) and a private key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, CertError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(CertError::BadPem)?;
        if chain.is_empty() {
            return Err(CertError::NoPemCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(CertError::BadKey)?;
        CertEntry::new(chain, key)
    }
}

/// Reads issuer, serial and validity from a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(CertError::Parse)?;
    let issuer = cert
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| cert.issuer().to_string());
    Ok(CertInfo {
        issuer,
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Whether the certificate's SAN DNS names cover `host` (exact or one-label wildcard).
pub fn cert_covers_host(der: &[u8], host: &str) -> Result<bool, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(CertError::Parse)?;
    let san = cert.subject_alternative_name().map_err(CertError::BadSan)?;
    let Some(san) = san else { return Ok(false) };
    Ok(san.value.general_names.iter().any(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(n) => {
            crate::policy::mx_matches(&n.to_ascii_lowercase(), host)
        }
        _ => false,
    }))
}

/// SNI → certificate, read on every handshake and written by issuers.
///
/// A `RwLock` over a map: handshakes take the read lock for one lookup; writes (a new or
/// renewed certificate) are rare and brief. Hosts are stored lowercase.
#[derive(Debug, Default)]
pub struct CertResolver {
    certs: RwLock<FastMap<String, Arc<CertEntry>>>,
    challenges: RwLock<FastMap<String, Arc<CertifiedKey>>>,
}

impl CertResolver {
    /// An empty resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `entry` for `host` from the next handshake on.
    pub fn publish(&self, host: &str, entry: CertEntry) {
        self.publish_shared(host, Arc::new(entry));
    }

    /// Like [`CertResolver::publish`], for an entry the issuer keeps too.
    pub fn publish_shared(&self, host: &str, entry: Arc<CertEntry>) {
        let mut map = self.certs.write().unwrap_or_else(|e| e.into_inner());
        map.insert(host.to_ascii_lowercase(), entry);
    }

    /// Stops serving `host`.
    pub fn remove(&self, host: &str) {
        let mut map = self.certs.write().unwrap_or_else(|e| e.into_inner());
        map.remove(&host.to_ascii_lowercase());
        shrink_sparse(&mut map);
    }

    /// The certificate served for `host`, if any.
    pub fn get(&self, host: &str) -> Option<Arc<CertEntry>> {
        let map = self.certs.read().unwrap_or_else(|e| e.into_inner());
        map.get(host).cloned()
    }

    /// Whether a certificate is published for `host`.
    pub fn contains(&self, host: &str) -> bool {
        let map = self.certs.read().unwrap_or_else(|e| e.into_inner());
        map.contains_key(host)
    }

    /// Number of published certificates.
    pub fn len(&self) -> usize {
        self.certs.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no certificate is published.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Answers TLS-ALPN-01 for `host` with `key` until [`CertResolver::clear_challenge`].
    pub fn set_challenge(&self, host: &str, key: Arc<CertifiedKey>) {
        let mut map = self.challenges.write().unwrap_or_else(|e| e.into_inner());
        map.insert(host.to_ascii_lowercase(), key);
    }

    /// Removes a TLS-ALPN-01 answer.
    pub fn clear_challenge(&self, host: &str) {
        let mut map = self.challenges.write().unwrap_or_else(|e| e.into_inner());
        map.remove(&host.to_ascii_lowercase());
    }

    /// Whether a handshake for `host` (with or without the ACME ALPN) has something to serve.
    pub fn can_serve(&self, host: &str, acme_alpn: bool) -> bool {
        if acme_alpn {
            let map = self.challenges.read().unwrap_or_else(|e| e.into_inner());
            map.contains_key(host)
        } else {
            self.contains(host)
        }
    }
}

/// Whether a ClientHello offers only the ACME challenge protocol (RFC 8737 §3).
pub fn offers_acme_alpn(hello: &ClientHello<'_>) -> bool {
    hello
        .alpn()
        .map(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN))
        .unwrap_or(false)
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        if offers_acme_alpn(&hello) {
            let map = self.challenges.read().unwrap_or_else(|e| e.into_inner());
            return map.get(&name).cloned();
        }
        self.get(&name).map(|entry| entry.key.clone())
    }
}

/// Marks `host` valid (until t = 10 000) on `board`: the readiness rules' tests need a
/// certificate that counts as served.
#[cfg(test)]
pub(crate) fn mark_valid_for_tests(board: &CertBoard, host: &str) {
    let mut status = CertStatus::new(CertState::Valid, "internal");
    status.cert = Some(CertInfo {
        issuer: "ca".into(),
        serial: "01".into(),
        not_before: 0,
        not_after: 10_000,
    });
    board.set(host, status);
}
