//! Where issued certificates, their keys, the ACME account and per-host status live.
//!
//! Behind the small [`CertStore`] trait so a later cluster mode can keep them in PostgreSQL;
//! [`FileStore`] is the first implementation. Its layout, readable by other processes
//! (a sidecar, `mta-stsd certs`, backup tools):
//!
//! ```text
//! <state_dir>/acme/account.json          ACME account (key + URL), 0600
//! <state_dir>/certs/<host>/fullchain.pem leaf first, then the CA chain, 0644
//! <state_dir>/certs/<host>/privkey.pem   PKCS#8 key, 0600
//! <state_dir>/certs/<host>/meta.json     issuer facts (directory, order URL, issued at)
//! <state_dir>/certs/<host>/status.json   last state, error and next attempt
//! ```
//! Every file is written atomically (temp + fsync + rename), the key before the chain so a
//! crash never leaves a chain without its key.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CertState;
use crate::fsutil::{PRIVATE_MODE, PUBLIC_MODE, create_private_dir, write_atomic};

/// A certificate as stored: PEM chain, PEM key and facts about its issuance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCert {
    /// Leaf first, then intermediates.
    pub chain_pem: String,
    /// PKCS#8 private key.
    pub key_pem: String,
    /// Where it came from.
    pub meta: CertMeta,
}

/// Facts about an issuance that the certificate itself does not hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertMeta {
    /// Directory URL of the CA that issued it.
    pub directory: String,
    /// The order URL, for support tickets with the CA.
    #[serde(default)]
    pub order_url: Option<String>,
    /// When it was obtained, Unix seconds.
    pub issued_at: i64,
}

/// The last known status of a host, kept so `mta-stsd certs` can show it without the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// State at the time of writing.
    pub state: CertState,
    /// Last error, with the CA's detail.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Next attempt, Unix seconds.
    #[serde(default)]
    pub next_attempt: Option<i64>,
    /// When this record was written, Unix seconds.
    pub updated: i64,
}

/// Storage of the ACME account, certificates and per-host status.
pub trait CertStore: Send + Sync {
    /// The stored account document, if any.
    fn load_account(&self) -> io::Result<Option<Vec<u8>>>;
    /// Replaces the account document (secret: the account key is inside).
    fn save_account(&self, document: &[u8]) -> io::Result<()>;
    /// Every host that has something stored.
    fn hosts(&self) -> io::Result<Vec<String>>;
    /// The certificate of `host`, if one is stored.
    fn load_cert(&self, host: &str) -> io::Result<Option<StoredCert>>;
    /// Stores the certificate of `host`, replacing the previous one.
    fn save_cert(&self, host: &str, cert: &StoredCert) -> io::Result<()>;
    /// The last status written for `host`.
    fn load_status(&self, host: &str) -> io::Result<Option<StatusRecord>>;
    /// Records the status of `host`.
    fn save_status(&self, host: &str, status: &StatusRecord) -> io::Result<()>;

    /// Every stored certificate's host and [`CertMeta::issued_at`]: what a replica compares
    /// with the certificates it holds to read only the changed ones. This default reads every
    /// certificate; a shared store answers from an index.
    fn issued(&self) -> io::Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        for host in self.hosts()? {
            if let Some(cert) = self.load_cert(&host)? {
                out.push((host, cert.meta.issued_at));
            }
        }
        Ok(out)
    }

    /// Every stored status, by host (read by a replica that becomes the issuer).
    fn statuses(&self) -> io::Result<Vec<(String, StatusRecord)>> {
        let mut out = Vec::new();
        for host in self.hosts()? {
            if let Some(status) = self.load_status(&host)? {
                out.push((host, status));
            }
        }
        Ok(out)
    }

    /// When the orders placed since `since` (Unix seconds) were placed, as far as the store
    /// can tell, so a new issuer in a cluster counts them against `orders_per_window`. A store
    /// only one process uses keeps none (that process knows its own): the default is empty.
    fn recent_orders(&self, since: i64) -> io::Result<Vec<i64>> {
        let _ = since;
        Ok(Vec::new())
    }
}

/// [`CertStore`] on the local file system under the state directory.
#[derive(Clone, Debug)]
pub struct FileStore {
    root: PathBuf,
}

const ACCOUNT_FILE: &str = "acme/account.json";
const CERTS_DIR: &str = "certs";
const CHAIN_FILE: &str = "fullchain.pem";
const KEY_FILE: &str = "privkey.pem";
const META_FILE: &str = "meta.json";
const STATUS_FILE: &str = "status.json";

impl FileStore {
    /// A store rooted at the state directory.
    pub fn new(state_dir: &Path) -> Self {
        FileStore {
            root: state_dir.to_path_buf(),
        }
    }

    /// The folder of one host. Hosts come from validated tenant config, but a name that could
    /// leave the folder is refused anyway.
    fn host_dir(&self, host: &str) -> io::Result<PathBuf> {
        let safe = !host.is_empty()
            && !host.starts_with('.')
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !safe {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a host name"),
            ));
        }
        Ok(self.root.join(CERTS_DIR).join(host))
    }

    /// The chain and key paths of `host` (for operators and sidecars).
    pub fn cert_paths(&self, host: &str) -> io::Result<(PathBuf, PathBuf)> {
        let dir = self.host_dir(host)?;
        Ok((dir.join(CHAIN_FILE), dir.join(KEY_FILE)))
    }
}

/// Reads a file, `None` when it does not exist.
fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

fn json_error(path: &Path, e: serde_json::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
    )
}

fn utf8(path: &Path, bytes: Vec<u8>) -> io::Result<String> {
    String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not UTF-8 PEM", path.display()),
        )
    })
}

impl CertStore for FileStore {
    fn load_account(&self) -> io::Result<Option<Vec<u8>>> {
        read_optional(&self.root.join(ACCOUNT_FILE))
    }

    fn save_account(&self, document: &[u8]) -> io::Result<()> {
        let path = self.root.join(ACCOUNT_FILE);
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        write_atomic(&path, document, PRIVATE_MODE)
    }

    fn hosts(&self) -> io::Result<Vec<String>> {
        let dir = self.root.join(CERTS_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut hosts = Vec::new();
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir()
                && let Some(name) = entry.file_name().to_str()
                && !name.starts_with('.')
            {
                hosts.push(name.to_owned());
            }
        }
        hosts.sort();
        Ok(hosts)
    }

    fn load_cert(&self, host: &str) -> io::Result<Option<StoredCert>> {
        let dir = self.host_dir(host)?;
        let (chain_path, key_path) = (dir.join(CHAIN_FILE), dir.join(KEY_FILE));
        let (Some(chain), Some(key)) = (read_optional(&chain_path)?, read_optional(&key_path)?)
        else {
            return Ok(None);
        };
        let meta_path = dir.join(META_FILE);
        let meta = match read_optional(&meta_path)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| json_error(&meta_path, e))?,
            None => CertMeta::default(),
        };
        Ok(Some(StoredCert {
            chain_pem: utf8(&chain_path, chain)?,
            key_pem: utf8(&key_path, key)?,
            meta,
        }))
    }

    fn save_cert(&self, host: &str, cert: &StoredCert) -> io::Result<()> {
        let dir = self.host_dir(host)?;
        create_private_dir(&dir)?;
        let meta = serde_json::to_vec_pretty(&cert.meta).map_err(io::Error::other)?;
        write_atomic(&dir.join(KEY_FILE), cert.key_pem.as_bytes(), PRIVATE_MODE)?;
        write_atomic(
            &dir.join(CHAIN_FILE),
            cert.chain_pem.as_bytes(),
            PUBLIC_MODE,
        )?;
        write_atomic(&dir.join(META_FILE), &meta, PUBLIC_MODE)
    }

    fn load_status(&self, host: &str) -> io::Result<Option<StatusRecord>> {
        let path = self.host_dir(host)?.join(STATUS_FILE);
        match read_optional(&path)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| json_error(&path, e)),
            None => Ok(None),
        }
    }

    fn save_status(&self, host: &str, status: &StatusRecord) -> io::Result<()> {
        let dir = self.host_dir(host)?;
        create_private_dir(&dir)?;
        let bytes = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
        write_atomic(&dir.join(STATUS_FILE), &bytes, PUBLIC_MODE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_with_private_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        assert!(store.load_cert("mta-sts.example.com").unwrap().is_none());
        let cert = StoredCert {
            chain_pem: "chain".into(),
            key_pem: "key".into(),
            meta: CertMeta {
                directory: "https://ca/dir".into(),
                order_url: Some("https://ca/order/1".into()),
                issued_at: 42,
            },
        };
        store.save_cert("mta-sts.example.com", &cert).unwrap();
        assert_eq!(store.load_cert("mta-sts.example.com").unwrap(), Some(cert));
        let (_, key) = store.cert_paths("mta-sts.example.com").unwrap();
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(store.hosts().unwrap(), vec!["mta-sts.example.com"]);

        store.save_account(b"{}").unwrap();
        let account = dir.path().join(ACCOUNT_FILE);
        let mode = std::fs::metadata(account).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn refuses_names_that_leave_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        for bad in ["../x", "a/b", "", ".."] {
            assert!(store.load_cert(bad).is_err(), "{bad:?}");
        }
    }
}
