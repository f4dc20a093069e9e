//! Validation: each tenant's DNS and policy seen from the outside, as a sender sees them.
//!
//! Five checks per tenant, each a [`Verdict`] (ok, warning or error, what was seen, what to
//! do): the policy host points here ([`Check::PolicyHost`]), the policy fetched over HTTPS is
//! the one served ([`Check::PolicyFetch`]), `_mta-sts` names the served id
//! ([`Check::StsRecord`]), `_smtp._tls` is valid ([`Check::TlsRptRecord`]) and the MX hosts
//! match the policy ([`Check::Mx`]), and every MX host passes the STARTTLS probe a sender
//! enforcing the policy makes ([`Check::MxStarttls`]). `mta-stsd validate` prints them; the
//! daemon's watchdog runs them on a schedule.

mod checks;
pub mod fetch;
pub mod lookup;
pub mod mx;
pub mod readiness;
pub mod records;
mod starttls;
pub mod watchdog;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;

pub use watchdog::Board;

use crate::config::{ServerConfig, Tenant};
use crate::publish::Publishing;

/// Which check a verdict belongs to; the names are the metric's `check` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// `mta-sts.<domain>` resolves to this service.
    PolicyHost,
    /// The policy fetched as a sender fetches it is the one served.
    PolicyFetch,
    /// `_mta-sts.<domain>`: one valid `v=STSv1` record with the served id.
    StsRecord,
    /// `_smtp._tls.<domain>`: one valid `v=TLSRPTv1` record.
    #[serde(rename = "tlsrpt-record")]
    TlsRptRecord,
    /// The MX hosts against the policy's `mx:` patterns.
    Mx,
    /// Each MX host's STARTTLS and certificate, as a sender enforcing the policy sees them.
    MxStarttls,
}

impl Check {
    /// Every check, in the order they run and print.
    pub const ALL: [Check; COUNT] = [
        Check::PolicyHost,
        Check::PolicyFetch,
        Check::StsRecord,
        Check::TlsRptRecord,
        Check::Mx,
        Check::MxStarttls,
    ];

    /// The label: `policy-host`, `policy-fetch`, `sts-record`, `tlsrpt-record`, `mx`,
    /// `mx-starttls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::PolicyHost => "policy-host",
            Check::PolicyFetch => "policy-fetch",
            Check::StsRecord => "sts-record",
            Check::TlsRptRecord => "tlsrpt-record",
            Check::Mx => "mx",
            Check::MxStarttls => "mx-starttls",
        }
    }
}

/// How many checks there are.
pub const COUNT: usize = 6;

/// How a check came out.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, but probably not as meant.
    Warning,
    /// Senders do not get (or will not get) the policy meant.
    Error,
}

impl Status {
    /// `ok`, `warning`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Error => "error",
        }
    }
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// The check.
    pub check: Check,
    /// Its status.
    pub status: Status,
    /// What was seen (records, addresses, the answer).
    pub observed: String,
    /// What to do about it; `None` when nothing needs doing.
    pub action: Option<String>,
}

impl Verdict {
    fn ok(check: Check, observed: String) -> Verdict {
        Verdict {
            check,
            status: Status::Ok,
            observed,
            action: None,
        }
    }

    fn bad(check: Check, status: Status, observed: String, action: String) -> Verdict {
        Verdict {
            check,
            status,
            observed,
            action: Some(action),
        }
    }

    fn error(check: Check, observed: String, action: impl Into<String>) -> Verdict {
        Verdict::bad(check, Status::Error, observed, action.into())
    }

    fn warning(check: Check, observed: String, action: impl Into<String>) -> Verdict {
        Verdict::bad(check, Status::Warning, observed, action.into())
    }
}

/// Every verdict for one tenant.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TenantReport {
    /// The tenant domain.
    pub domain: String,
    /// One verdict per check, in [`Check::ALL`] order.
    pub checks: Vec<Verdict>,
    /// When the checks ran, RFC 3339 UTC.
    pub checked_at: String,
}

impl TenantReport {
    /// The worst status of the checks.
    pub fn status(&self) -> Status {
        self.checks
            .iter()
            .map(|v| v.status)
            .max()
            .unwrap_or(Status::Ok)
    }
}

/// What "this service" and "how to look" mean, from the server file.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// A CNAME (chain) to this name means the policy host points here.
    pub public_hostname: Option<String>,
    /// An address among these means the policy host points here.
    pub public_addresses: Vec<IpAddr>,
    /// The built-in delegated zone (`dns.zone`), when configured.
    pub delegated_zone: Option<String>,
    /// Name servers to ask; empty means the system's.
    pub nameservers: Vec<SocketAddr>,
    /// Port the policy is fetched from.
    pub https_port: u16,
    /// Port of the MX STARTTLS probe (`validation.smtp_port`, `--smtp-port`).
    pub smtp_port: u16,
    /// Limit of each network step.
    pub timeout: Duration,
    /// Extra roots (only those are trusted when set).
    pub ca_file: Option<PathBuf>,
    /// Whether MX hosts are probed with STARTTLS (`validation.starttls`, `--no-starttls`).
    pub starttls: bool,
    /// The probe's EHLO name: `validation.ehlo_name`, else `public_hostname`, else the
    /// system's host name.
    pub ehlo_name: String,
    /// An MX host is probed at most once per this (the watchdog's interval).
    pub probe_interval: Duration,
}

impl Settings {
    /// The settings of a server file: `validation:`, with `acme.preflight.nameservers` when
    /// `validation.nameservers` is empty.
    pub fn of(server: &ServerConfig) -> Settings {
        let v = &server.validation;
        let mut nameservers = v.nameservers.clone();
        if nameservers.is_empty()
            && let crate::config::IssuerConfig::Acme(acme) = &server.issuer
        {
            nameservers = acme.preflight.nameservers.clone();
        }
        Settings {
            public_hostname: server.public_hostname.clone(),
            public_addresses: server.public_addresses.clone(),
            delegated_zone: server.dns.as_ref().map(|z| z.zone.clone()),
            nameservers,
            https_port: v.https_port,
            smtp_port: v.smtp_port,
            timeout: v.timeout,
            ca_file: v.ca_file.clone(),
            starttls: v.starttls,
            ehlo_name: v
                .ehlo_name
                .clone()
                .or_else(|| server.public_hostname.clone())
                .unwrap_or_else(starttls::system_host_name),
            probe_interval: v.interval,
        }
    }
}

/// Runs the checks; one per process (or per daemon), shared by every tenant's run.
pub struct Validator {
    settings: Settings,
    resolver: TokioResolver,
    tls: Arc<rustls::ClientConfig>,
    /// The STARTTLS prober and its latest outcomes; `None` when the probe is off, `Err` when
    /// it could not be set up (no trusted roots: the other checks still run).
    probes: Result<Option<starttls::Probes>, String>,
}

impl Validator {
    /// A validator with its resolver and TLS roots.
    pub fn new(settings: Settings) -> anyhow::Result<Validator> {
        Ok(Validator {
            resolver: lookup::resolver(&settings.nameservers, settings.timeout)?,
            tls: fetch::tls_config(settings.ca_file.as_deref())?,
            probes: starttls::Probes::new(&settings).map_err(|e| format!("{e:#}")),
            settings,
        })
    }

    /// Every check for `tenant` (the policy as served now), with the records `publishing`
    /// makes for it.
    pub async fn tenant(&self, tenant: &Tenant, publishing: Publishing<'_>) -> TenantReport {
        let checked_at = crate::util::format_unix(crate::util::unix_now());
        let host = self.policy_host(tenant).await;
        let (fetch, sts, tlsrpt, (mx, hosts)) = tokio::join!(
            self.policy_fetch(tenant, host.addresses.clone()),
            self.sts_record(tenant),
            self.tlsrpt_record(tenant, publishing),
            self.mx(tenant),
        );
        let starttls = self.mx_starttls(&hosts).await;
        TenantReport {
            domain: tenant.domain.clone(),
            checks: vec![host.verdict, fetch, sts, tlsrpt, mx, starttls],
            checked_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_are_the_same_in_json_and_labels() {
        for c in Check::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        for s in [Status::Ok, Status::Warning, Status::Error] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
