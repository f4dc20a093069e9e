//! DNS preflight: does `mta-sts.<domain>` point at this server yet? Checked before every order
//! so a customer who has not added the CNAME costs no CA rate limit (failed validations are
//! limited per host and per account).

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::config::acme::Preflight;

/// Time limit of one DNS query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Looks names up and compares them with what "this server" means.
pub struct Checker {
    resolver: TokioResolver,
    public_hostname: Option<String>,
    public_addresses: Vec<IpAddr>,
}

impl Checker {
    /// A checker using the configured name servers, or the system's.
    pub fn new(cfg: &Preflight) -> anyhow::Result<Self> {
        let mut builder = if cfg.nameservers.is_empty() {
            TokioResolver::builder_tokio()?
        } else {
            TokioResolver::builder_with_config(
                crate::util::dns::resolver_config(&cfg.nameservers),
                TokioRuntimeProvider::default(),
            )
        };
        let opts = builder.options_mut();
        // Every check must see the DNS as it is now: a customer who just added the CNAME should
        // not wait out a cached NXDOMAIN.
        opts.cache_size = 0;
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = 2;
        Ok(Checker {
            resolver: builder.build()?,
            public_hostname: cfg.public_hostname.clone(),
            public_addresses: cfg.public_addresses.clone(),
        })
    }

    /// `Ok(what matched)` when `host` points here, the reason otherwise.
    pub async fn check(&self, host: &str) -> Result<String, PreflightError> {
        let fqdn = format!("{host}.");
        let lookup_failed = |error| PreflightError::Lookup {
            host: host.to_owned(),
            error,
        };
        let mut found = Vec::new();
        if let Some(target) = &self.public_hostname {
            for name in self.cnames(host).await? {
                if &name == target {
                    return Ok(format!("CNAME {name}"));
                }
                found.push(format!("CNAME {name}"));
            }
        }
        if !self.public_addresses.is_empty() {
            match self.resolver.lookup_ip(fqdn.as_str()).await {
                Ok(ips) => {
                    for ip in ips.iter() {
                        if self.public_addresses.contains(&ip) {
                            return Ok(format!("address {ip}"));
                        }
                        found.push(ip.to_string());
                    }
                }
                Err(e) if e.is_no_records_found() => {}
                Err(e) => return Err(lookup_failed(e)),
            }
        }
        Err(PreflightError::Elsewhere {
            host: host.to_owned(),
            found,
            wanted: self.wanted(),
        })
    }

    /// `Ok` when `name` is a CNAME to `target` (DNS-01's challenge delegation), the reason
    /// otherwise.
    pub async fn cname_to(&self, name: &str, target: &str) -> Result<(), PreflightError> {
        let found = self.cnames(name).await?;
        if found.iter().any(|n| n == target) {
            return Ok(());
        }
        Err(PreflightError::Elsewhere {
            host: name.to_owned(),
            found: found.into_iter().map(|n| format!("CNAME {n}")).collect(),
            wanted: format!("a CNAME to {target}"),
        })
    }

    /// The CNAME targets of `host` (lower case, no final dot), empty when it has none.
    async fn cnames(&self, host: &str) -> Result<Vec<String>, PreflightError> {
        let fqdn = format!("{host}.");
        match self.resolver.lookup(fqdn.as_str(), RecordType::CNAME).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::CNAME(name) => {
                        Some(name.to_ascii().trim_end_matches('.').to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(error) => Err(PreflightError::Lookup {
                host: host.to_owned(),
                error,
            }),
        }
    }

    /// What the host should point at, for the error text.
    fn wanted(&self) -> String {
        match (&self.public_hostname, self.public_addresses.is_empty()) {
            (Some(h), true) => format!("a CNAME to {h}"),
            (Some(h), false) => format!("a CNAME to {h} or one of {:?}", self.public_addresses),
            (None, _) => format!("one of {:?}", self.public_addresses),
        }
    }
}

/// Why a host does not point at this server (yet); stored as the host's last error.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The resolver failed (rather than finding no record).
    #[error("DNS lookup of {host} failed: {error}")]
    Lookup {
        /// The host looked up.
        host: String,
        /// What the resolver said.
        error: NetError,
    },
    /// The host resolves to something else, or to nothing.
    #[error("{}", elsewhere(.host, .found, .wanted))]
    Elsewhere {
        /// The host looked up.
        host: String,
        /// The CNAMEs and addresses found, empty when it does not resolve.
        found: Vec<String>,
        /// What it should point at.
        wanted: String,
    },
}

fn elsewhere(host: &str, found: &[String], wanted: &str) -> String {
    if found.is_empty() {
        format!("{host} does not resolve; it needs {wanted}")
    } else {
        format!(
            "{host} resolves to {} instead of {wanted}",
            found.join(", ")
        )
    }
}
