//! Certificates from PEM files, one folder per policy host (cert-manager, certbot, own PKI).

use std::io;
use std::path::{Path, PathBuf};

use super::{CertEntry, CertError, cert_covers_host};

/// Why the files of one host cannot be served; each text names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("{}: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        error: io::Error,
    },
    /// The two files do not make a usable certificate and key.
    #[error("{} / {}: {error}", .cert.display(), .key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong with them.
        error: CertError,
    },
    /// rustls holds no leaf for the loaded chain.
    #[error("{0}")]
    NoLeaf(rustls::Error),
    /// The leaf could not be read for its names.
    #[error(transparent)]
    Cert(CertError),
    /// The certificate does not name the host.
    #[error("{}: certificate is not valid for {host}", .path.display())]
    WrongHost {
        /// The certificate file.
        path: PathBuf,
        /// The host it should cover.
        host: String,
    },
    /// The certificate's validity has ended.
    #[error("{}: certificate expired at {}", .path.display(), crate::util::format_unix(*.not_after))]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// End of validity, Unix seconds.
        not_after: i64,
    },
    /// The certificate's validity has not begun.
    #[error("{}: certificate is not valid before {}", .path.display(), crate::util::format_unix(*.not_before))]
    NotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// Start of validity, Unix seconds.
        not_before: i64,
    },
}

/// The two files for `host` under `dir`.
pub fn paths(dir: &Path, host: &str, cert_file: &str, key_file: &str) -> (PathBuf, PathBuf) {
    let folder = dir.join(host);
    (folder.join(cert_file), folder.join(key_file))
}

/// Loads and checks the certificate for `host`: both files readable, PEM, key matches, valid
/// now and for `host`.
pub fn load(
    dir: &Path,
    host: &str,
    cert_file: &str,
    key_file: &str,
    now: i64,
) -> Result<CertEntry, LoadError> {
    let (cert_path, key_path) = paths(dir, host, cert_file, key_file);
    let read = |p: &Path| {
        std::fs::read(p).map_err(|error| LoadError::Read {
            path: p.to_path_buf(),
            error,
        })
    };
    let chain = read(&cert_path)?;
    let key = read(&key_path)?;
    let entry = CertEntry::from_pem(&chain, &key).map_err(|error| LoadError::Pair {
        cert: cert_path.clone(),
        key: key_path,
        error,
    })?;
    let leaf = entry.key.end_entity_cert().map_err(LoadError::NoLeaf)?;
    if !cert_covers_host(leaf, host).map_err(LoadError::Cert)? {
        return Err(LoadError::WrongHost {
            path: cert_path,
            host: host.to_owned(),
        });
    }
    if entry.info.not_after <= now {
        return Err(LoadError::Expired {
            path: cert_path,
            not_after: entry.info.not_after,
        });
    }
    if entry.info.not_before > now {
        return Err(LoadError::NotYetValid {
            path: cert_path,
            not_before: entry.info.not_before,
        });
    }
    Ok(entry)
}
