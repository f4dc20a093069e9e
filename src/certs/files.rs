//! Certificates from PEM files, one folder per policy host (cert-manager, certbot, own PKI).

use std::path::{Path, PathBuf};

use super::{CertEntry, cert_covers_host};

/// The two files for `host` under `dir`.
pub fn paths(dir: &Path, host: &str, cert_file: &str, key_file: &str) -> (PathBuf, PathBuf) {
    let folder = dir.join(host);
    (folder.join(cert_file), folder.join(key_file))
}

/// Loads and checks the certificate for `host`: both files readable, PEM, key matches, valid
/// now and for `host`. The error names the file and the problem.
pub fn load(
    dir: &Path,
    host: &str,
    cert_file: &str,
    key_file: &str,
    now: i64,
) -> Result<CertEntry, String> {
    let (cert_path, key_path) = paths(dir, host, cert_file, key_file);
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let chain = read(&cert_path)?;
    let key = read(&key_path)?;
    let entry = CertEntry::from_pem(&chain, &key)
        .map_err(|why| format!("{} / {}: {why}", cert_path.display(), key_path.display()))?;
    let leaf = entry.key.end_entity_cert().map_err(|e| e.to_string())?;
    if !cert_covers_host(leaf, host)? {
        return Err(format!(
            "{}: certificate is not valid for {host}",
            cert_path.display()
        ));
    }
    if entry.info.not_after <= now {
        return Err(format!(
            "{}: certificate expired at {}",
            cert_path.display(),
            crate::util::format_unix(entry.info.not_after)
        ));
    }
    if entry.info.not_before > now {
        return Err(format!(
            "{}: certificate is not valid before {}",
            cert_path.display(),
            crate::util::format_unix(entry.info.not_before)
        ));
    }
    Ok(entry)
}
