//! The five checks, one method each on [`Validator`].

use std::net::IpAddr;

use super::{Check, Status, Validator, Verdict, lookup, mx, records};
use crate::config::Tenant;
use crate::policy::{MAX_BODY_BYTES, Mode};
use crate::publish::{Publishing, sts_id, tenant_records};

/// What the policy-host check found: its verdict and the addresses the fetch uses.
pub(super) struct Host {
    pub(super) verdict: Verdict,
    pub(super) addresses: Vec<IpAddr>,
}

/// `a → b → c` for a CNAME chain starting at `name`.
fn chain_text(name: &str, chain: &[String]) -> String {
    std::iter::once(name)
        .chain(chain.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" → ")
}

fn list_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Validator {
    /// Check 1: `mta-sts.<domain>` is a CNAME (chain) to `public_hostname` or has an address
    /// among `public_addresses`.
    pub(super) async fn policy_host(&self, tenant: &Tenant) -> Host {
        let c = Check::PolicyHost;
        let host = &tenant.host;
        let (chain, ips) = tokio::join!(
            lookup::cname_chain(&self.resolver, host),
            lookup::addresses(&self.resolver, host)
        );
        let (chain, addresses) = match (chain, ips) {
            (Ok(chain), Ok(ips)) => (chain, ips),
            (Err(e), _) | (_, Err(e)) => {
                let verdict = Verdict::bad(
                    c,
                    Status::Error,
                    e,
                    "check the DNS of the domain; retry".into(),
                );
                return Host {
                    verdict,
                    addresses: Vec::new(),
                };
            }
        };
        let s = &self.settings;
        let observed = format!(
            "{} ({})",
            chain_text(host, &chain),
            if addresses.is_empty() {
                "no address".into()
            } else {
                list_ips(&addresses)
            }
        );
        let wanted = match (&s.public_hostname, s.public_addresses.is_empty()) {
            (Some(h), true) => format!("a CNAME {host} → {h}"),
            (Some(h), false) => format!(
                "a CNAME {host} → {h} or an address among {}",
                list_ips(&s.public_addresses)
            ),
            (None, false) => format!(
                "an A/AAAA record of {host} among {}",
                list_ips(&s.public_addresses)
            ),
            (None, true) => String::new(),
        };
        let verdict = if s
            .public_hostname
            .as_ref()
            .is_some_and(|h| chain.contains(h))
            || addresses.iter().any(|ip| s.public_addresses.contains(ip))
        {
            Verdict::ok(c, observed)
        } else if wanted.is_empty() {
            Verdict::bad(
                c,
                Status::Warning,
                observed,
                "set public_hostname or public_addresses in the server file so this can be checked"
                    .into(),
            )
        } else if chain.is_empty() && addresses.is_empty() {
            Verdict::bad(
                c,
                Status::Error,
                format!("{host} does not resolve"),
                format!("create {wanted}"),
            )
        } else {
            Verdict::bad(
                c,
                Status::Error,
                format!("points elsewhere: {observed}"),
                format!("replace it with {wanted}"),
            )
        };
        Host { verdict, addresses }
    }

    /// Check 2: the policy fetched from the resolved addresses is the body served now.
    pub(super) async fn policy_fetch(&self, tenant: &Tenant, addresses: Vec<IpAddr>) -> Verdict {
        let c = Check::PolicyFetch;
        if addresses.is_empty() {
            return Verdict::bad(
                c,
                Status::Error,
                format!("not fetched: {} has no address", tenant.host),
                "make the policy host resolve (see policy-host)".into(),
            );
        }
        let mut failures = Vec::new();
        for ip in addresses {
            match super::fetch::fetch(
                self.tls.clone(),
                &tenant.host,
                ip,
                self.settings.https_port,
                self.settings.timeout,
            )
            .await
            {
                Ok(fetched) => return fetched_verdict(tenant, &fetched),
                Err(e) => failures.push(e),
            }
        }
        let action = if failures.iter().any(|f| f.contains("certificate")) {
            format!("serve a certificate for {} from a trusted CA", tenant.host)
        } else {
            format!(
                "make https://{}/.well-known/mta-sts.txt reachable",
                tenant.host
            )
        };
        Verdict::bad(c, Status::Error, failures.join("; "), action)
    }

    /// Check 3: `_mta-sts.<domain>` after CNAMEs has exactly one valid `v=STSv1` record whose
    /// id is the served id.
    pub(super) async fn sts_record(&self, tenant: &Tenant) -> Verdict {
        let c = Check::StsRecord;
        let name = format!("_mta-sts.{}", tenant.domain);
        let want = format!("v=STSv1; id={}", sts_id(tenant));
        let found = async {
            let chain = lookup::cname_chain(&self.resolver, &name).await?;
            let last = chain.last().cloned().unwrap_or_else(|| name.clone());
            Ok::<_, String>((chain, lookup::txt(&self.resolver, &last).await?))
        };
        let (chain, txts) = match found.await {
            Ok(found) => found,
            Err(e) => {
                return Verdict::bad(
                    c,
                    Status::Error,
                    e,
                    "check the DNS of the domain; retry".into(),
                );
            }
        };
        let delegated = self.settings.delegated_zone.as_ref().is_some_and(|zone| {
            chain
                .first()
                .is_some_and(|t| *t == format!("{}._mta-sts.{zone}", tenant.domain))
        });
        let via = if delegated {
            format!(" (delegated: {})", chain_text(&name, &chain))
        } else if chain.is_empty() {
            String::new()
        } else {
            format!(" (via {})", chain_text(&name, &chain))
        };
        let sts: Vec<&String> = txts.iter().filter(|t| t.starts_with("v=STSv1")).collect();
        match sts.as_slice() {
            [] => Verdict::bad(
                c,
                Status::Error,
                format!("no v=STSv1 record at {name}{via}"),
                format!("publish {name} TXT \"{want}\""),
            ),
            [one] => match records::sts_id(one) {
                Err(why) => Verdict::bad(
                    c,
                    Status::Error,
                    format!("{one:?} {why}{via}"),
                    format!("replace it with \"{want}\""),
                ),
                Ok(id) if id == sts_id(tenant) => Verdict::ok(c, format!("{one}{via}")),
                Ok(id) => Verdict::bad(
                    c,
                    Status::Error,
                    format!(
                        "stale id: DNS has id={id}, the served policy has id={}{via}",
                        sts_id(tenant)
                    ),
                    if delegated {
                        "the built-in zone publishes the new id once the policy is served with a valid certificate; see `mta-stsd certs`".into()
                    } else {
                        format!(
                            "publish {name} TXT \"{want}\" (senders holding the old id never refetch)"
                        )
                    },
                ),
            },
            many => Verdict::bad(
                c,
                Status::Error,
                format!(
                    "{} v=STSv1 records at {name}{via}: {}",
                    many.len(),
                    many.iter()
                        .map(|t| format!("{t:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                format!("keep exactly one: \"{want}\" (with several, senders see no policy)"),
            ),
        }
    }

    /// Check 4: `_smtp._tls.<domain>` has exactly one valid `v=TLSRPTv1` record, with this
    /// server's endpoint when it publishes one.
    pub(super) async fn tlsrpt_record(
        &self,
        tenant: &Tenant,
        publishing: Publishing<'_>,
    ) -> Verdict {
        let c = Check::TlsRptRecord;
        let name = format!("_smtp._tls.{}", tenant.domain);
        let expected = tenant_records(tenant, publishing).tlsrpt;
        let endpoint = publishing
            .tlsrpt
            .and_then(|t| t.published_endpoint(&tenant.domain));
        let found = async {
            let chain = lookup::cname_chain(&self.resolver, &name).await?;
            let last = chain.last().cloned().unwrap_or_else(|| name.clone());
            lookup::txt(&self.resolver, &last).await
        };
        let txts = match found.await {
            Ok(found) => found,
            Err(e) => {
                return Verdict::bad(
                    c,
                    Status::Error,
                    e,
                    "check the DNS of the domain; retry".into(),
                );
            }
        };
        let rpt: Vec<&String> = txts
            .iter()
            .filter(|t| t.starts_with("v=TLSRPTv1"))
            .collect();
        let publish = |what: &str| match &expected {
            Some(r) => format!("{what} {name} TXT \"{}\"", r.value),
            None => "add rua: addresses to the tenant and publish the record `mta-stsd dns` prints"
                .into(),
        };
        match rpt.as_slice() {
            [] if expected.is_none() => Verdict::bad(
                c,
                Status::Warning,
                format!("no v=TLSRPTv1 record at {name}: senders send no TLS reports"),
                publish("publish"),
            ),
            [] => Verdict::bad(
                c,
                Status::Error,
                format!("no v=TLSRPTv1 record at {name}"),
                publish("publish"),
            ),
            [one] => match records::tlsrpt_rua(one) {
                Err(why) => Verdict::bad(
                    c,
                    Status::Error,
                    format!("{one:?} {why}"),
                    publish("replace it with"),
                ),
                Ok(rua) => match endpoint {
                    Some(ep) if !rua.iter().any(|u| u.eq_ignore_ascii_case(&ep)) => Verdict::bad(
                        c,
                        Status::Warning,
                        format!("{one} lacks this server's endpoint {ep}"),
                        publish("publish"),
                    ),
                    _ => Verdict::ok(c, one.to_string()),
                },
            },
            many => Verdict::bad(
                c,
                Status::Error,
                format!(
                    "{} v=TLSRPTv1 records at {name} (senders ignore them all)",
                    many.len()
                ),
                publish("keep exactly one:"),
            ),
        }
    }

    /// Check 5: every MX host is covered by a policy pattern and every pattern matches one.
    pub(super) async fn mx(&self, tenant: &Tenant) -> Verdict {
        let c = Check::Mx;
        let hosts = match lookup::mx(&self.resolver, &tenant.domain).await {
            Ok(Some(hosts)) if !hosts.is_empty() => hosts,
            Ok(Some(_)) => {
                return Verdict::bad(
                    c,
                    Status::Error,
                    format!("{} has no MX record", tenant.domain),
                    "publish the MX records, or retire the policy if the domain takes no mail"
                        .into(),
                );
            }
            Ok(None) => {
                return Verdict::bad(
                    c,
                    Status::Error,
                    format!("{} has a null MX (takes no mail)", tenant.domain),
                    "retire the policy: a domain without mail needs none".into(),
                );
            }
            Err(e) => {
                return Verdict::bad(
                    c,
                    Status::Error,
                    e,
                    "check the DNS of the domain; retry".into(),
                );
            }
        };
        mx_verdict(tenant, &hosts)
    }
}

/// The MX verdict from the hosts found.
fn mx_verdict(tenant: &Tenant, hosts: &[String]) -> Verdict {
    let c = Check::Mx;
    let patterns = &tenant.policy.mx;
    let drift = mx::drift(hosts, patterns);
    let observed = format!(
        "MX {}; policy mx: {}",
        hosts.join(", "),
        patterns.join(", ")
    );
    if !drift.uncovered.is_empty() {
        let hosts = drift.uncovered.join(", ");
        let (status, consequence) = match tenant.policy.mode {
            Mode::Enforce => (
                Status::Error,
                format!("senders enforcing the policy refuse to deliver to {hosts}"),
            ),
            Mode::Testing => (
                Status::Error,
                format!(
                    "in enforce mode, senders would refuse to deliver to {hosts}; do not switch to enforce"
                ),
            ),
            Mode::None => (
                Status::Warning,
                format!("a testing or enforce policy would not cover {hosts}"),
            ),
        };
        let unused = if drift.unused.is_empty() {
            String::new()
        } else {
            format!("; unused patterns: {}", drift.unused.join(", "))
        };
        return Verdict::bad(
            c,
            status,
            format!("not covered: {hosts}{unused} ({observed})"),
            format!(
                "{consequence}: add a matching mx: pattern to the tenant, or fix the MX records"
            ),
        );
    }
    if !drift.unused.is_empty() {
        return Verdict::bad(
            c,
            Status::Warning,
            format!(
                "patterns matching no MX: {} ({observed})",
                drift.unused.join(", ")
            ),
            "remove the stale mx: patterns from the tenant, or add the MX records they name".into(),
        );
    }
    Verdict::ok(c, observed)
}

/// The fetch verdict from what the server answered.
fn fetched_verdict(tenant: &Tenant, f: &super::fetch::Fetched) -> Verdict {
    let c = Check::PolicyFetch;
    let at = format!("from {}", f.addr);
    if (300..400).contains(&f.status) {
        return Verdict::bad(
            c,
            Status::Error,
            format!(
                "HTTP {} redirect to {} {at}",
                f.status,
                f.location.as_deref().unwrap_or("?")
            ),
            "serve the policy itself: senders do not follow redirects (RFC 8461 §3.3)".into(),
        );
    }
    if f.status != 200 {
        return Verdict::bad(
            c,
            Status::Error,
            format!("HTTP {} {at}", f.status),
            format!(
                "serve the policy at https://{}/.well-known/mta-sts.txt with status 200",
                tenant.host
            ),
        );
    }
    let media = f
        .content_type
        .as_deref()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "text/plain" {
        return Verdict::bad(
            c,
            Status::Error,
            format!(
                "Content-Type {:?} {at}",
                f.content_type.as_deref().unwrap_or("(none)")
            ),
            "serve the policy as text/plain".into(),
        );
    }
    let Some(body) = &f.body else {
        return Verdict::bad(
            c,
            Status::Error,
            format!("body over {MAX_BODY_BYTES} bytes {at}"),
            "serve the policy body; senders refuse one this long".into(),
        );
    };
    if body[..] != tenant.policy.body[..] {
        let id = crate::policy::policy_id(body);
        return Verdict::bad(c, Status::Error,
            format!("the body {at} (id {id}) is not the policy configured (id {})", tenant.policy.id),
            "reload the daemon (`mta-stsd` SIGHUP or POST /reload), or check that the policy host points at this server".into());
    }
    Verdict::ok(
        c,
        format!(
            "200 text/plain, {} bytes, id {} {at}",
            body.len(),
            tenant.policy.id
        ),
    )
}
