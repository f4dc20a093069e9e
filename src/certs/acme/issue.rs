//! One ACME order for one host: authorizations, challenge answers, CSR, certificate.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::http01::Tokens;
use crate::certs::CertResolver;
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
}

/// Removes a published challenge answer when the order is done, whatever the outcome.
enum Answer<'a> {
    TlsAlpn(&'a CertResolver, String),
    Http(&'a Tokens, String),
}

impl Drop for Answer<'_> {
    fn drop(&mut self) {
        match self {
            Answer::TlsAlpn(resolver, host) => resolver.clear_challenge(host),
            Answer::Http(tokens, token) => tokens.remove(token),
        }
    }
}

fn acme_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        ChallengeKind::Http01 => ChallengeType::Http01,
    }
}

/// Runs one order for `host`. `on_order` is called once the CA accepted the new order (it
/// counts against the CA's limits from then on). Errors are `instant_acme` errors or a
/// one-line description.
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

    let mut answers = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => {
                return Err(IssueError::Text(format!(
                    "authorization for {host} is {other:?}"
                )));
            }
        }
        let Some(kind) = challenges
            .iter()
            .copied()
            .find(|k| authz.challenges.iter().any(|c| c.r#type == acme_type(*k)))
        else {
            return Err(IssueError::Text(format!(
                "the CA offers none of the configured challenge types {challenges:?} for {host}"
            )));
        };
        let mut challenge = authz
            .challenge(acme_type(kind))
            .ok_or_else(|| IssueError::Text("challenge disappeared".into()))?;
        let key_authorization = challenge.key_authorization();
        match kind {
            ChallengeKind::TlsAlpn01 => {
                let key = challenge_certificate(host, key_authorization.digest().as_ref())?;
                responders.resolver.set_challenge(host, key);
                answers.push(Answer::TlsAlpn(responders.resolver, host.to_owned()));
            }
            ChallengeKind::Http01 => {
                responders
                    .tokens
                    .insert(&challenge.token, key_authorization.as_str());
                answers.push(Answer::Http(responders.tokens, challenge.token.clone()));
            }
        }
        tracing::debug!(host, challenge = ?kind, "challenge answer published");
        challenge.set_ready().await?;
    }

    let retries = RetryPolicy::new()
        .initial_delay(POLL_FIRST_DELAY)
        .backoff(1.5)
        .timeout(timeout);
    let status = order.poll_ready(&retries).await?;
    if status != OrderStatus::Ready {
        return Err(IssueError::Text(
            failed_challenge_detail(&mut order)
                .await
                .unwrap_or_else(|| format!("order for {host} became {status:?}")),
        ));
    }
    drop(answers);

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(text)?;
    let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(text)?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(text)?;
    order.finalize_csr(csr.der()).await?;
    let chain_pem = order.poll_certificate(&retries).await?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
        order_url: order.url().to_owned(),
    })
}

/// The CA's reason for a failed validation, from the authorization's challenges.
async fn failed_challenge_detail(order: &mut instant_acme::Order) -> Option<String> {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        for challenge in &state.challenges {
            if let Some(problem) = &challenge.error {
                return Some(format!(
                    "{:?} validation failed: {}",
                    challenge.r#type,
                    super::describe_problem(problem)
                ));
            }
        }
    }
    None
}

/// The self-signed TLS-ALPN-01 certificate (RFC 8737 §3): the host as its only SAN and the
/// critical acmeIdentifier extension holding the SHA-256 of the key authorization. Served
/// through the resolver as a `CertifiedKey` built without rustls's key-consistency check,
/// which parses the certificate with webpki and rejects the critical extension.
fn challenge_certificate(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, IssueError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(text)?;
    let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(text)?;
    params.distinguished_name = DistinguishedName::new();
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(text)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing_key = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(text)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing_key,
    )))
}

fn text(e: impl std::fmt::Display) -> IssueError {
    IssueError::Text(e.to_string())
}

/// Why an order failed.
#[derive(Debug)]
pub enum IssueError {
    /// The CA or the HTTP layer said no.
    Acme(instant_acme::Error),
    /// Our own description.
    Text(String),
}

impl From<instant_acme::Error> for IssueError {
    fn from(e: instant_acme::Error) -> Self {
        IssueError::Acme(e)
    }
}
