//! The internal CA: a local ECDSA P-256 authority kept in the state directory that issues one
//! leaf per policy host. It stands in for ACME on a first run, in tests and in private setups.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use super::CertEntry;
use crate::fsutil::{PRIVATE_MODE, PUBLIC_MODE, create_private_dir, write_atomic};

/// Common name of the CA; shown by clients as the issuer.
pub const CA_NAME: &str = "mta-stsd internal CA";
/// CA lifetime: long, because every client that trusts it would have to re-import it.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Leaves start an hour in the past to tolerate clock skew between server and clients.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The CA files inside the state directory.
pub fn ca_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = state_dir.join("ca");
    (dir.join("ca.crt"), dir.join("ca.key"))
}

/// A loaded or freshly created CA.
pub struct InternalCa {
    issuer: Issuer<'static, KeyPair>,
    cert_path: PathBuf,
    leaf_validity: Duration,
}

impl InternalCa {
    /// Loads the CA from the state directory, creating it on first run. A directory with only
    /// one of the two files is an error rather than a silent new CA that clients don't trust.
    pub fn load_or_create(state_dir: &Path, leaf_validity: Duration) -> anyhow::Result<Self> {
        let (cert_path, key_path) = ca_paths(state_dir);
        let issuer = match (cert_path.exists(), key_path.exists()) {
            (true, true) => load(&cert_path, &key_path)?,
            (false, false) => create(&cert_path, &key_path)?,
            (true, false) => bail!(
                "{} exists but {} is missing; restore the key or remove both to create a new CA",
                cert_path.display(),
                key_path.display()
            ),
            (false, true) => bail!(
                "{} exists but {} is missing; restore the certificate or remove both to create a new CA",
                key_path.display(),
                cert_path.display()
            ),
        };
        Ok(InternalCa {
            issuer,
            cert_path,
            leaf_validity,
        })
    }

    /// Where clients find the CA certificate to trust (`curl --cacert`).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Issues a leaf for `host` with a fresh P-256 key. Keys stay in memory: a restart issues
    /// new leaves, which clients accept because they trust the CA, not the leaf.
    pub fn issue(&self, host: &str) -> anyhow::Result<CertEntry> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![host.to_owned()])
            .with_context(|| format!("bad host name {host:?}"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + self.leaf_validity;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(CertEntry::new(vec![cert.der().clone()], key_der)?)
    }
}

fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let cert_pem = std::fs::read_to_string(cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    let key_pem = std::fs::read_to_string(key_path)
        .with_context(|| format!("reading {}", key_path.display()))?;
    let key = KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{}: not a usable private key", key_path.display()))?;
    let der = CertificateDer::from_pem_slice_compat(cert_pem.as_bytes())
        .with_context(|| format!("{}: no CERTIFICATE block", cert_path.display()))?;
    let info = super::cert_info(&der)?;
    if info.not_after < OffsetDateTime::now_utc().unix_timestamp() {
        bail!(
            "{}: the internal CA expired; remove {} and {} to create a new one",
            cert_path.display(),
            cert_path.display(),
            key_path.display()
        );
    }
    let issuer = Issuer::from_ca_cert_der(&der, key)
        .with_context(|| format!("{}: not a usable CA certificate", cert_path.display()))?;
    Ok(issuer)
}

fn create(cert_path: &Path, key_path: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let dir = cert_path.parent().context("CA path has no parent")?;
    create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key)?;
    // Key first: a crash between the two writes leaves a key without a certificate, which
    // load_or_create reports instead of silently minting a CA nobody trusts.
    write_atomic(key_path, key.serialize_pem().as_bytes(), PRIVATE_MODE)
        .with_context(|| format!("writing {}", key_path.display()))?;
    write_atomic(cert_path, cert.pem().as_bytes(), PUBLIC_MODE)
        .with_context(|| format!("writing {}", cert_path.display()))?;
    tracing::info!(ca = %cert_path.display(), "created the internal CA");
    Ok(Issuer::new(params, key))
}

/// Helper so a PEM file with text around the block still loads.
trait FromPemCompat: Sized {
    fn from_pem_slice_compat(pem: &[u8]) -> anyhow::Result<Self>;
}

impl FromPemCompat for CertificateDer<'static> {
    fn from_pem_slice_compat(pem: &[u8]) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::pem_slice_iter(pem)
            .next()
            .context("no certificate")?
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}
