//! DKIM verification by mta-stsd itself (RFC 8460 §5.3), for MTAs that add no
//! `Authentication-Results`: the signatures of a raw message are checked against the keys
//! published in DNS, every lookup bounded by a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::ResolverOpts;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};

use super::normalize_domain;

/// How long one DNS query for a DKIM key may take before it is tried again.
pub const DKIM_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// Tries per query: a lost UDP packet is retried once.
const LOOKUP_ATTEMPTS: usize = 2;
/// All the lookups of one message together: a mail with many signatures cannot hold the
/// MTA's pipe longer than this.
pub const DKIM_VERIFY_DEADLINE: Duration = Duration::from_secs(15);

/// What verifying one message's signatures found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DkimVerdicts {
    /// Signing domains (`d=`, normalized) whose signature verified (mail-auth refuses `l=`,
    /// which signs a prefix of the body only).
    pub passed: Vec<String>,
    /// Every other signature as `dkim=<result> header.d=<domain> (<reason>)`.
    pub failed: Vec<String>,
    /// Some lookup failed for a reason that may go away (timeout, SERVFAIL).
    pub temporary: bool,
}

/// Verifies every DKIM signature of `raw`, asking `dns_servers` (or the system's resolvers).
pub fn verify_message(raw: &[u8], dns_servers: &[SocketAddr]) -> DkimVerdicts {
    let Some(message) = AuthenticatedMessage::parse(raw) else {
        return DkimVerdicts {
            failed: vec!["dkim=permerror (the message could not be parsed)".to_string()],
            ..DkimVerdicts::default()
        };
    };
    // The intake is synchronous and may run inside the daemon's runtime, so the lookups get a
    // runtime of their own on a scoped thread rather than blocking a worker of the caller's.
    std::thread::scope(|s| {
        s.spawn(|| run_verification(&message, dns_servers))
            .join()
            .unwrap_or_else(|_| temporary("the DKIM verifier panicked"))
    })
}

fn temporary(reason: &str) -> DkimVerdicts {
    DkimVerdicts {
        failed: vec![format!("dkim=temperror ({reason})")],
        temporary: true,
        ..DkimVerdicts::default()
    }
}

fn run_verification(
    message: &AuthenticatedMessage<'_>,
    dns_servers: &[SocketAddr],
) -> DkimVerdicts {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return temporary(&format!("starting the DNS runtime: {e}")),
    };
    runtime.block_on(async {
        let authenticator = match authenticator(dns_servers) {
            Ok(a) => a,
            Err(e) => return temporary(&format!("setting up the resolver: {e}")),
        };
        match tokio::time::timeout(DKIM_VERIFY_DEADLINE, authenticator.verify_dkim(message)).await {
            Ok(outputs) => collect(outputs.iter().map(|o| (o.result(), o.signature()))),
            Err(_) => temporary(&format!(
                "DKIM key lookups took over {} s",
                DKIM_VERIFY_DEADLINE.as_secs()
            )),
        }
    })
}

/// A resolver without a cache (one message per process) and with bounded queries.
fn authenticator(dns_servers: &[SocketAddr]) -> Result<MessageAuthenticator, String> {
    let mut opts = ResolverOpts::default();
    opts.timeout = DKIM_LOOKUP_TIMEOUT;
    opts.attempts = LOOKUP_ATTEMPTS;
    let config = if dns_servers.is_empty() {
        let (config, system) =
            hickory_resolver::system_conf::read_system_conf().map_err(|e| e.to_string())?;
        opts.ndots = system.ndots;
        config
    } else {
        crate::util::dns::resolver_config(dns_servers)
    };
    MessageAuthenticator::new(config, opts).map_err(|e| e.to_string())
}

fn collect<'a>(
    outputs: impl Iterator<Item = (&'a DkimResult, Option<&'a mail_auth::dkim::Signature>)>,
) -> DkimVerdicts {
    let mut verdicts = DkimVerdicts::default();
    for (result, signature) in outputs {
        let domain = signature.map_or_else(|| "?".to_string(), |s| normalize_domain(&s.d));
        let (name, reason) = match result {
            DkimResult::Pass => {
                verdicts.passed.push(domain);
                continue;
            }
            DkimResult::Neutral(e) => ("neutral", e.to_string()),
            DkimResult::Fail(e) => ("fail", e.to_string()),
            DkimResult::PermError(e) => ("permerror", e.to_string()),
            DkimResult::TempError(e) => {
                verdicts.temporary = true;
                ("temperror", e.to_string())
            }
            DkimResult::None => ("none", "no signature".to_string()),
        };
        verdicts
            .failed
            .push(format!("dkim={name} header.d={domain} ({reason})"));
    }
    verdicts
}
