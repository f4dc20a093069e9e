//! The HTTP client instant-acme talks through, and the one persisted ACME account.
//!
//! Our own client (rather than instant-acme's default) so that the CA's API can be trusted
//! through extra roots (Pebble, step-ca, a corporate CA) beside the system roots, every request
//! has a time limit, and a `Retry-After` on a 429/503 answer is seen by the scheduler (instant-acme
//! drops the headers of error answers).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, BodyWrapper, BytesResponse, ExternalAccountKey, HttpClient,
    NewAccount,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::certs::store::CertStore;
use crate::config::AcmeConfig;

/// Time limit of one HTTP request to the CA.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The `Retry-After` the CA last sent with a 429 or 503, shared with the scheduler.
pub type RetryAfterSlot = Arc<Mutex<Option<SystemTime>>>;

/// HTTPS client for the CA's API.
#[derive(Clone)]
pub struct CaClient {
    http: HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    retry_after: RetryAfterSlot,
}

impl CaClient {
    /// A client trusting the system roots plus `extra_roots` (PEM files).
    pub fn new(extra_roots: &[PathBuf], retry_after: RetryAfterSlot) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A system bundle may hold a certificate rustls cannot use; skip it like curl does.
            let _ = roots.add(cert);
        }
        for path in extra_roots {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading ACME trusted root {}", path.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "{}: no CERTIFICATE block found",
                path.display()
            );
            for cert in certs {
                roots
                    .add(cert)
                    .with_context(|| format!("{}: unusable root certificate", path.display()))?;
            }
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "no trusted roots for the ACME API: install ca-certificates or set acme.trusted_roots"
        );
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        Ok(CaClient {
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
            retry_after,
        })
    }
}

impl HttpClient for CaClient {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.http.request(req);
        let slot = self.retry_after.clone();
        Box::pin(async move {
            let rsp = tokio::time::timeout(REQUEST_TIMEOUT, fut)
                .await
                .map_err(|_| instant_acme::Error::Str("the CA did not answer within 30 s"))?
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let status = rsp.status().as_u16();
            if (status == 429 || status == 503)
                && let Some(at) = retry_after(rsp.headers())
            {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
            }
            Ok(BytesResponse::from(rsp))
        })
    }
}

/// Parses `Retry-After`: delay seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(headers: &http::HeaderMap) -> Option<SystemTime> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    match value.parse::<u64>() {
        Ok(secs) => Some(SystemTime::now() + Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(value).ok(),
    }
}

/// The account file: which CA it belongs to, and instant-acme's credentials (key + URL).
#[derive(Serialize, Deserialize)]
struct AccountFile {
    directory: String,
    credentials: AccountCredentials,
}

/// Why the account could not be restored or created.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The store could not be read.
    #[error("reading the ACME account: {0}")]
    Read(std::io::Error),
    /// The stored document is not an account file.
    #[error("the stored ACME account is unreadable: {0}")]
    Unreadable(serde_json::Error),
    /// The CA refused the stored credentials.
    #[error("restoring the ACME account: {}", super::describe(.0))]
    Restore(instant_acme::Error),
    /// The CA refused a new account.
    #[error("creating the ACME account: {}", super::describe(.0))]
    Create(instant_acme::Error),
    /// The new account could not be written as JSON.
    #[error("{0}")]
    Serialize(serde_json::Error),
    /// The new account could not be stored.
    #[error("storing the ACME account: {0}")]
    Store(std::io::Error),
}

/// Loads the stored account for the configured CA, or creates one and stores it first thing
/// (Let's Encrypt allows only a few new accounts per IP address per hours).
pub async fn load_or_create_account(
    cfg: &AcmeConfig,
    store: &dyn CertStore,
    client: &CaClient,
    force_new: bool,
) -> Result<Account, AccountError> {
    if !force_new && let Some(bytes) = store.load_account().map_err(AccountError::Read)? {
        let file: AccountFile = serde_json::from_slice(&bytes).map_err(AccountError::Unreadable)?;
        if file.directory == cfg.directory {
            return Account::builder_with_http(Box::new(client.clone()))
                .from_credentials(file.credentials)
                .await
                .map_err(AccountError::Restore);
        }
        tracing::warn!(
            stored = %file.directory,
            configured = %cfg.directory,
            "the stored ACME account belongs to another CA; creating one for the configured CA"
        );
    }
    let contact: Vec<&str> = cfg.contact.iter().map(String::as_str).collect();
    let eab = cfg
        .eab
        .as_ref()
        .map(|e| ExternalAccountKey::new(e.key_id.clone(), &e.hmac_key));
    let (account, credentials) = Account::builder_with_http(Box::new(client.clone()))
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            cfg.directory.clone(),
            eab.as_ref(),
        )
        .await
        .map_err(AccountError::Create)?;
    let file = AccountFile {
        directory: cfg.directory.clone(),
        credentials,
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(AccountError::Serialize)?;
    store.save_account(&bytes).map_err(AccountError::Store)?;
    tracing::info!(account = %account.id(), directory = %cfg.directory, "created the ACME account");
    Ok(account)
}
