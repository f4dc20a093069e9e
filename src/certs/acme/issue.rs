//! One ACME order for one host: authorizations, challenge answers, CSR, certificate.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeHandle, ChallengeType, Identifier, NewOrder,
    OrderStatus, RetryPolicy,
};
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::client::AccountError;
use super::cluster::{Joined, Shared};
use super::dns01::{self, Answers};
use super::http01::Tokens;
use crate::certs::{CertError, CertResolver};
use crate::config::ChallengeKind;

/// First pause when polling an order; grows by half each time.
const POLL_FIRST_DELAY: Duration = Duration::from_millis(250);

/// A certificate fresh from the CA.
pub struct Issued {
    /// PEM chain, leaf first.
    pub chain_pem: String,
    /// PEM PKCS#8 key.
    pub key_pem: String,
    /// The order URL.
    pub order_url: String,
}

/// Where challenge answers are published while an order is open.
pub struct Responders<'a> {
    /// TLS-ALPN-01 answers (the HTTPS listener's resolver).
    pub resolver: &'a CertResolver,
    /// HTTP-01 answers.
    pub tokens: &'a Tokens,
    /// DNS-01 answers, and the built-in zone they are published in.
    pub dns01: &'a Answers,
    /// `dns.zone`, when DNS-01 is configured.
    pub dns01_zone: Option<&'a str>,
    /// In a cluster: where every answer is also shared, so any replica can answer the CA.
    pub(super) cluster: Option<&'a Joined>,
}

/// Removes a published challenge answer when the order is done, whatever the outcome.
enum Answer<'a> {
    TlsAlpn(&'a CertResolver, String),
    Http(&'a Tokens, String),
    Dns(&'a Answers, String, String),
}

impl Drop for Answer<'_> {
    fn drop(&mut self) {
        match self {
            Answer::TlsAlpn(resolver, host) => resolver.clear_challenge(host),
            Answer::Http(tokens, token) => tokens.remove(token),
            Answer::Dns(answers, name, value) => answers.remove(name, value),
        }
    }
}

fn acme_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::Dns01 => ChallengeType::Dns01,
    }
}

/// Runs one order for `host`. `on_order` is called once the CA accepted the new order (it
/// counts against the CA's limits from then on).
pub async fn issue(
    account: &Account,
    host: &str,
    challenges: &[ChallengeKind],
    timeout: Duration,
    responders: Responders<'_>,
    on_order: impl FnOnce(&str),
) -> Result<Issued, IssueError> {
    let identifiers = [Identifier::Dns(host.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    on_order(order.url());

    let answers = answer_challenges(&mut order, host, challenges, &responders).await?;
    let retries = RetryPolicy::new()
        .initial_delay(POLL_FIRST_DELAY)
        .backoff(1.5)
        .timeout(timeout);
    let status = order.poll_ready(&retries).await?;
    if status != OrderStatus::Ready {
        return Err(failed_challenge_detail(&mut order)
            .await
            .unwrap_or_else(|| IssueError::OrderNotReady {
                host: host.to_owned(),
                status,
            }));
    }
    drop(answers);
    finalize(order, host, &retries).await
}

/// Publishes an answer for every pending authorization and tells the CA to validate it. The
/// answers stay published while the returned guards live.
async fn answer_challenges<'r>(
    order: &mut instant_acme::Order,
    host: &str,
    challenges: &[ChallengeKind],
    responders: &Responders<'r>,
) -> Result<Vec<Answer<'r>>, IssueError> {
    let mut answers = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            status => {
                return Err(IssueError::Authorization {
                    host: host.to_owned(),
                    status,
                });
            }
        }
        let Some(kind) = challenges
            .iter()
            .copied()
            .find(|k| authz.challenges.iter().any(|c| c.r#type == acme_type(*k)))
        else {
            return Err(IssueError::NoChallenge {
                host: host.to_owned(),
                configured: challenges.to_vec(),
            });
        };
        let mut challenge = authz
            .challenge(acme_type(kind))
            .ok_or(IssueError::ChallengeGone)?;
        answers.push(publish_answer(&challenge, kind, host, responders)?);
        if let Some(cluster) = responders.cluster {
            let shared = Shared {
                host: host.to_owned(),
                kind,
                token: challenge.token.clone(),
                key_authorization: challenge.key_authorization().as_str().to_owned(),
            };
            // The CA may ask any replica: it is told to validate only once all can answer.
            cluster.share(shared).await.map_err(|e| IssueError::Share {
                host: host.to_owned(),
                error: e.to_string(),
            })?;
        }
        tracing::debug!(host, challenge = ?kind, "challenge answer published");
        challenge.set_ready().await?;
    }
    Ok(answers)
}

/// Serves the answer to one challenge until the returned guard drops.
fn publish_answer<'r>(
    challenge: &ChallengeHandle<'_>,
    kind: ChallengeKind,
    host: &str,
    responders: &Responders<'r>,
) -> Result<Answer<'r>, IssueError> {
    let key_authorization = challenge.key_authorization();
    Ok(match kind {
        ChallengeKind::TlsAlpn01 => {
            let key = challenge_certificate(host, key_authorization.digest().as_ref())?;
            responders.resolver.set_challenge(host, key);
            Answer::TlsAlpn(responders.resolver, host.to_owned())
        }
        ChallengeKind::Http01 => {
            responders
                .tokens
                .insert(&challenge.token, key_authorization.as_str());
            Answer::Http(responders.tokens, challenge.token.clone())
        }
        ChallengeKind::Dns01 => {
            let zone = responders.dns01_zone.ok_or(IssueError::NoZone)?;
            let name = dns01::target(host, zone);
            let value = key_authorization.dns_value();
            responders.dns01.insert(&name, &value);
            Answer::Dns(responders.dns01, name, value)
        }
    })
}

/// Sends a CSR for a fresh key and waits for the certificate.
async fn finalize(
    mut order: instant_acme::Order,
    host: &str,
    retries: &RetryPolicy,
) -> Result<Issued, IssueError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(IssueError::Key)?;
    let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(IssueError::Key)?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(IssueError::Key)?;
    order.finalize_csr(csr.der()).await?;
    let chain_pem = order.poll_certificate(retries).await?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
        order_url: order.url().to_owned(),
    })
}

/// The CA's reason for a failed validation, from the authorization's challenges.
async fn failed_challenge_detail(order: &mut instant_acme::Order) -> Option<IssueError> {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        for challenge in &state.challenges {
            if let Some(problem) = &challenge.error {
                return Some(IssueError::Validation {
                    kind: challenge.r#type.clone(),
                    problem: super::describe_problem(problem),
                });
            }
        }
    }
    None
}

/// The self-signed TLS-ALPN-01 certificate (RFC 8737 §3): the host as its only SAN and the
/// critical acmeIdentifier extension holding the SHA-256 of the key authorization. Served
/// through the resolver as a `CertifiedKey` built without rustls's key-consistency check,
/// which parses the certificate with webpki and rejects the critical extension.
pub(super) fn challenge_certificate(
    host: &str,
    digest: &[u8],
) -> Result<Arc<CertifiedKey>, IssueError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(IssueError::Key)?;
    let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(IssueError::Key)?;
    params.distinguished_name = DistinguishedName::new();
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(IssueError::Key)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing_key = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(IssueError::SigningKey)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing_key,
    )))
}

/// Why an attempt to obtain a certificate failed. The texts are logged and kept as the host's
/// last error, with the CA's problem detail where it sent one.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The account could not be restored or created.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The CA or the HTTP layer said no.
    #[error("{}", super::describe(.0))]
    Ca(instant_acme::Error),
    /// An authorization is neither pending nor valid (e.g. invalid, deactivated).
    #[error("authorization for {host} is {status:?}")]
    Authorization {
        /// The host ordered.
        host: String,
        /// The state the CA reported.
        status: AuthorizationStatus,
    },
    /// The CA offers none of the challenge types we answer.
    #[error("the CA offers none of the configured challenge types {configured:?} for {host}")]
    NoChallenge {
        /// The host ordered.
        host: String,
        /// The types the configuration allows.
        configured: Vec<ChallengeKind>,
    },
    /// DNS-01 was chosen without a built-in zone to answer it (the configuration forbids it).
    #[error("dns-01 needs the built-in DNS zone (dns:)")]
    NoZone,
    /// In a cluster, the challenge answer could not be shared with the other replicas; the
    /// CA was not asked to validate.
    #[error("cannot share the challenge answer for {host} with the other replicas: {error}")]
    Share {
        /// The host ordered.
        host: String,
        /// The store's error.
        error: String,
    },
    /// The chosen challenge vanished from the authorization.
    #[error("challenge disappeared")]
    ChallengeGone,
    /// The CA could not validate our answer.
    #[error("{kind:?} validation failed: {problem}")]
    Validation {
        /// The challenge type.
        kind: ChallengeType,
        /// The CA's problem, as [`super::describe_problem`] puts it.
        problem: String,
    },
    /// The order did not become ready, and no challenge says why.
    #[error("order for {host} became {status:?}")]
    OrderNotReady {
        /// The host ordered.
        host: String,
        /// The order's final state.
        status: OrderStatus,
    },
    /// A key, CSR or challenge certificate could not be made.
    #[error("{0}")]
    Key(rcgen::Error),
    /// The challenge certificate's key could not be loaded for signing.
    #[error("{0}")]
    SigningKey(rustls::Error),
    /// The whole order took longer than allowed.
    #[error("the order timed out")]
    Timeout,
    /// The certificate the CA sent cannot be served.
    #[error("the CA sent an unusable certificate: {0}")]
    BadCertificate(CertError),
}

// By hand rather than `#[from]`: the text already holds the CA's detail, so the error is not
// also offered as a source (that would print it twice in a `{:#}` chain).
impl From<instant_acme::Error> for IssueError {
    fn from(e: instant_acme::Error) -> Self {
        IssueError::Ca(e)
    }
}

impl IssueError {
    /// The CA no longer knows the account (a reset staging or test CA): the next order needs
    /// a new one.
    pub fn account_gone(&self) -> bool {
        matches!(
            self,
            IssueError::Ca(instant_acme::Error::Api(p))
                if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist")
        )
    }
}
