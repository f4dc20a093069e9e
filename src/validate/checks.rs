//! The first five checks (the STARTTLS probe is in `starttls`), one method each on [`Validator`]: each asks DNS (or fetches), then a pure
//! function turns what it found into the verdict.

use std::net::IpAddr;

use super::fetch::Fetched;
use super::{Check, Settings, Status, Validator, Verdict, lookup, mx, records};
use crate::config::Tenant;
use crate::policy::{MAX_BODY_BYTES, Mode};
use crate::publish::{Publishing, Record, sts_id, tenant_records};

/// The action of a verdict whose DNS lookup failed.
const RETRY: &str = "check the DNS of the domain (its name servers answer?) and retry";

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

fn quoted(list: &[&String]) -> String {
    list.iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Validator {
    /// Check 1: `mta-sts.<domain>` is a CNAME (chain) to `public_hostname` or has an address
    /// among `public_addresses`.
    pub(super) async fn policy_host(&self, tenant: &Tenant) -> Host {
        let host = &tenant.host;
        let (chain, ips) = tokio::join!(
            lookup::cname_chain(&self.resolver, host),
            lookup::addresses(&self.resolver, host)
        );
        match (chain, ips) {
            (Ok(chain), Ok(addresses)) => Host {
                verdict: host_verdict(&self.settings, host, &chain, &addresses),
                addresses,
            },
            (Err(e), _) | (_, Err(e)) => Host {
                verdict: Verdict::error(Check::PolicyHost, e, RETRY),
                addresses: Vec::new(),
            },
        }
    }

    /// Check 2: the policy fetched from the resolved addresses is the body served now.
    pub(super) async fn policy_fetch(&self, tenant: &Tenant, addresses: Vec<IpAddr>) -> Verdict {
        let c = Check::PolicyFetch;
        if addresses.is_empty() {
            return Verdict::error(
                c,
                format!("not fetched: {} has no address", tenant.host),
                "make the policy host resolve (see policy-host)",
            );
        }
        let s = &self.settings;
        let mut failures = Vec::new();
        for ip in addresses {
            let tls = self.tls.clone();
            match super::fetch::fetch(tls, &tenant.host, ip, s.https_port, s.timeout).await {
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
        Verdict::error(c, failures.join("; "), action)
    }

    /// The CNAME chain from `name` and the TXT records at its end.
    async fn txt_after_cnames(&self, name: &str) -> Result<(Vec<String>, Vec<String>), String> {
        let chain = lookup::cname_chain(&self.resolver, name).await?;
        let last = chain.last().map_or(name, String::as_str);
        let txts = lookup::txt(&self.resolver, last).await?;
        Ok((chain, txts))
    }

    /// Check 3: `_mta-sts.<domain>` after CNAMEs has exactly one valid `v=STSv1` record whose
    /// id is the served id.
    pub(super) async fn sts_record(&self, tenant: &Tenant) -> Verdict {
        let name = format!("_mta-sts.{}", tenant.domain);
        match self.txt_after_cnames(&name).await {
            Ok((chain, txts)) => {
                let zone = self.settings.delegated_zone.as_deref();
                sts_verdict(tenant, &name, &chain, &txts, zone)
            }
            Err(e) => Verdict::error(Check::StsRecord, e, RETRY),
        }
    }

    /// Check 4: `_smtp._tls.<domain>` has exactly one valid `v=TLSRPTv1` record, with this
    /// server's endpoint when it publishes one.
    pub(super) async fn tlsrpt_record(&self, tenant: &Tenant, p: Publishing<'_>) -> Verdict {
        let name = format!("_smtp._tls.{}", tenant.domain);
        match self.txt_after_cnames(&name).await {
            Ok((_, txts)) => {
                let endpoint = p.tlsrpt.and_then(|t| t.published_endpoint(&tenant.domain));
                let expected = tenant_records(tenant, p).tlsrpt;
                tlsrpt_verdict(&name, &txts, expected.as_ref(), endpoint.as_deref())
            }
            Err(e) => Verdict::error(Check::TlsRptRecord, e, RETRY),
        }
    }

    /// Check 5: every MX host is covered by a policy pattern and every pattern matches one.
    /// Also returns the MX hosts found, for check 6.
    pub(super) async fn mx(&self, tenant: &Tenant) -> (Verdict, Vec<String>) {
        let d = &tenant.domain;
        match lookup::mx(&self.resolver, d).await {
            Ok(Some(hosts)) if !hosts.is_empty() => (mx_verdict(tenant, &hosts), hosts),
            other => (mx_missing(d, other), Vec::new()),
        }
    }
}

/// The MX verdict when no MX host was found (or DNS failed).
fn mx_missing(d: &str, found: Result<Option<Vec<String>>, String>) -> Verdict {
    let c = Check::Mx;
    match found {
        Ok(Some(_)) => Verdict::error(
            c,
            format!("{d} has no MX record"),
            "publish the MX records, or retire the policy if the domain takes no mail",
        ),
        Ok(None) => Verdict::error(
            c,
            format!("{d} has a null MX (it takes no mail)"),
            "retire the policy: a domain without mail needs none",
        ),
        Err(e) => Verdict::error(c, e, RETRY),
    }
}

/// The policy-host verdict from the CNAME chain and addresses found.
fn host_verdict(s: &Settings, host: &str, chain: &[String], addresses: &[IpAddr]) -> Verdict {
    let c = Check::PolicyHost;
    let ips = if addresses.is_empty() {
        "no address".into()
    } else {
        list_ips(addresses)
    };
    let observed = format!("{} ({ips})", chain_text(host, chain));
    let here = s
        .public_hostname
        .as_ref()
        .is_some_and(|h| chain.contains(h))
        || addresses.iter().any(|ip| s.public_addresses.contains(ip));
    let ours = list_ips(&s.public_addresses);
    let wanted = match (&s.public_hostname, s.public_addresses.is_empty()) {
        (Some(h), true) => format!("a CNAME {host} → {h}"),
        (Some(h), false) => format!("a CNAME {host} → {h} or an address among {ours}"),
        (None, false) => format!("an A/AAAA record of {host} among {ours}"),
        (None, true) => String::new(),
    };
    if here {
        Verdict::ok(c, observed)
    } else if wanted.is_empty() {
        Verdict::warning(
            c,
            observed,
            "set public_hostname or public_addresses in the server file so this can be checked",
        )
    } else if chain.is_empty() && addresses.is_empty() {
        Verdict::error(
            c,
            format!("{host} does not resolve"),
            format!("create {wanted}"),
        )
    } else {
        Verdict::error(
            c,
            format!("points elsewhere: {observed}"),
            format!("replace it with {wanted}"),
        )
    }
}

/// The `_mta-sts` verdict from the records at the end of `chain`; a chain whose first
/// target is the tenant's name in the delegated `zone` is reported as delegated.
fn sts_verdict(
    tenant: &Tenant,
    name: &str,
    chain: &[String],
    txts: &[String],
    zone: Option<&str>,
) -> Verdict {
    let c = Check::StsRecord;
    let served = sts_id(tenant);
    let want = format!("v=STSv1; id={served}");
    let delegated = zone
        .is_some_and(|zone| chain.first() == Some(&format!("{}._mta-sts.{zone}", tenant.domain)));
    let via = match (delegated, chain.is_empty()) {
        (true, _) => format!(" (delegated: {})", chain_text(name, chain)),
        (false, true) => String::new(),
        (false, false) => format!(" (via {})", chain_text(name, chain)),
    };
    let sts: Vec<&String> = txts.iter().filter(|t| t.starts_with("v=STSv1")).collect();
    let one = match sts.as_slice() {
        [] => {
            let observed = format!("no v=STSv1 record at {name}{via}");
            return Verdict::error(c, observed, format!("publish {name} TXT \"{want}\""));
        }
        [one] => one,
        many => {
            let observed = format!(
                "{} v=STSv1 records at {name}{via}: {}",
                many.len(),
                quoted(many)
            );
            let action =
                format!("keep exactly one: \"{want}\" (with several, senders see no policy)");
            return Verdict::error(c, observed, action);
        }
    };
    match records::sts_id(one) {
        Err(why) => Verdict::error(
            c,
            format!("{one:?} {why}{via}"),
            format!("replace it with \"{want}\""),
        ),
        Ok(id) if id == served => Verdict::ok(c, format!("{one}{via}")),
        Ok(id) => {
            let observed =
                format!("stale id: DNS has id={id}, the served policy has id={served}{via}");
            let action = if delegated {
                "the built-in zone answers the new id once the policy is served with a valid certificate: see `mta-stsd certs`".to_owned()
            } else {
                format!(
                    "publish {name} TXT \"{want}\" (senders holding the old id never fetch the new policy)"
                )
            };
            Verdict::error(c, observed, action)
        }
    }
}

/// The `_smtp._tls` verdict from the TXT records found, what `mta-stsd dns` prints for the
/// tenant and this server's endpoint when it publishes one.
fn tlsrpt_verdict(
    name: &str,
    txts: &[String],
    expected: Option<&Record>,
    endpoint: Option<&str>,
) -> Verdict {
    let c = Check::TlsRptRecord;
    let publish = |what: &str| match expected {
        Some(r) => format!("{what} {name} TXT \"{}\"", r.value),
        None => {
            "add tlsrpt.rua addresses to the tenant and publish the record `mta-stsd dns` prints"
                .into()
        }
    };
    let rpt: Vec<&String> = txts
        .iter()
        .filter(|t| t.starts_with("v=TLSRPTv1"))
        .collect();
    let one = match rpt.as_slice() {
        [] if expected.is_none() => {
            let observed = format!("no v=TLSRPTv1 record at {name}: senders send no TLS reports");
            return Verdict::warning(c, observed, publish("publish"));
        }
        [] => {
            return Verdict::error(
                c,
                format!("no v=TLSRPTv1 record at {name}"),
                publish("publish"),
            );
        }
        [one] => one,
        many => {
            let observed = format!(
                "{} v=TLSRPTv1 records at {name} (senders use none): {}",
                many.len(),
                quoted(many)
            );
            return Verdict::error(c, observed, publish("keep exactly one:"));
        }
    };
    match (records::tlsrpt_rua(one), endpoint) {
        (Err(why), _) => Verdict::error(c, format!("{one:?} {why}"), publish("replace it with")),
        (Ok(rua), Some(ep)) if !rua.iter().any(|u| u.eq_ignore_ascii_case(ep)) => Verdict::warning(
            c,
            format!("{one} lacks this server's endpoint {ep}"),
            publish("publish"),
        ),
        (Ok(_), _) => Verdict::ok(c, one.to_string()),
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
    if drift.uncovered.is_empty() && drift.unused.is_empty() {
        return Verdict::ok(c, observed);
    }
    if drift.uncovered.is_empty() {
        let unused = drift.unused.join(", ");
        return Verdict::warning(
            c,
            format!("patterns matching no MX: {unused} ({observed})"),
            "remove the stale mx: patterns from the tenant, or add the MX records they name",
        );
    }
    let hosts = drift.uncovered.join(", ");
    let (status, consequence) = match tenant.policy.mode {
        Mode::Enforce => (
            Status::Error,
            format!("senders enforcing the policy refuse to deliver to {hosts}"),
        ),
        Mode::Testing => (
            Status::Error,
            format!(
                "in enforce mode senders would refuse to deliver to {hosts}: do not switch to enforce yet"
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
    let action =
        format!("{consequence}; add a matching mx: pattern to the tenant, or fix the MX records");
    Verdict::bad(
        c,
        status,
        format!("not covered: {hosts}{unused} ({observed})"),
        action,
    )
}

/// The fetch verdict from what the server answered.
fn fetched_verdict(tenant: &Tenant, f: &Fetched) -> Verdict {
    let c = Check::PolicyFetch;
    let at = format!("from {}", f.addr);
    let body = match checked_body(tenant, f) {
        Ok(body) => body,
        Err((observed, action)) => return Verdict::error(c, format!("{observed} {at}"), action),
    };
    if body[..] != tenant.policy.body[..] {
        let id = crate::policy::policy_id(body);
        return Verdict::error(
            c,
            format!(
                "the body {at} (id {id}) is not the policy configured (id {})",
                tenant.policy.id
            ),
            "reload the daemon (SIGHUP or POST /reload), or check that the policy host points at this server",
        );
    }
    let observed = format!(
        "200 text/plain, {} bytes, id {} {at}",
        body.len(),
        tenant.policy.id
    );
    Verdict::ok(c, observed)
}

/// The body of a response a sender accepts, or (observed, action) of what is wrong.
fn checked_body<'f>(tenant: &Tenant, f: &'f Fetched) -> Result<&'f bytes::Bytes, (String, String)> {
    if (300..400).contains(&f.status) {
        let to = f.location.as_deref().unwrap_or("(no Location)");
        return Err((
            format!("HTTP {} redirect to {to}", f.status),
            "serve the policy itself: senders do not follow redirects (RFC 8461 §3.3)".into(),
        ));
    }
    if f.status != 200 {
        return Err((
            format!("HTTP {}", f.status),
            format!(
                "serve https://{}/.well-known/mta-sts.txt with status 200",
                tenant.host
            ),
        ));
    }
    let content_type = f.content_type.as_deref().unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("text/plain") {
        return Err((
            format!("Content-Type {content_type:?}"),
            "serve the policy as text/plain (RFC 8461 §3.2)".into(),
        ));
    }
    f.body.as_ref().ok_or_else(|| {
        (
            format!("body over {MAX_BODY_BYTES} bytes"),
            "shorten the policy: senders refuse a body this long".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(mode: &str) -> Tenant {
        let yaml = format!("domain: example.com\nmode: {mode}\nmx: [\"*.example.com\"]\n");
        let file = crate::config::parse_tenants(std::path::Path::new("t.yaml"), &yaml);
        file.tenants.into_iter().next().unwrap()
    }

    #[test]
    fn a_cname_into_the_delegated_zone_is_named_and_a_stale_id_there_waits_for_the_certificate() {
        let t = tenant("testing");
        let chain = vec!["example.com._mta-sts.sts.op.example".to_owned()];
        let good = vec![format!("v=STSv1; id={}", t.policy.id)];
        let zone = Some("sts.op.example");
        let v = sts_verdict(&t, "_mta-sts.example.com", &chain, &good, zone);
        assert_eq!(v.status, Status::Ok);
        assert!(
            v.observed.contains(
                "(delegated: _mta-sts.example.com → example.com._mta-sts.sts.op.example)"
            ),
            "{v:?}"
        );
        let stale = vec!["v=STSv1; id=old".to_owned()];
        let v = sts_verdict(&t, "_mta-sts.example.com", &chain, &stale, zone);
        assert!(v.observed.starts_with("stale id: DNS has id=old"), "{v:?}");
        assert!(v.action.unwrap().contains("valid certificate"));
        let v = sts_verdict(&t, "_mta-sts.example.com", &chain, &stale, None);
        assert!(v.observed.contains("(via "), "{v:?}");
    }

    #[test]
    fn records_not_starting_with_the_version_are_ignored_and_a_bad_one_is_an_error() {
        let t = tenant("testing");
        let noise = vec!["google-site-verification=x".to_owned()];
        let v = sts_verdict(&t, "_mta-sts.example.com", &[], &noise, None);
        assert_eq!(v.status, Status::Error);
        assert!(v.observed.starts_with("no v=STSv1 record"), "{v:?}");
        let bad = vec!["v=STSv1; id=has-dash".to_owned()];
        let v = sts_verdict(&t, "_mta-sts.example.com", &[], &bad, None);
        assert!(v.observed.contains("not 1 to 32 letters"), "{v:?}");
    }

    #[test]
    fn the_report_endpoint_missing_from_rua_is_a_warning() {
        let name = "_smtp._tls.example.com";
        let ep = "https://r.op.example/tlsrpt/example.com";
        let only_mail = vec!["v=TLSRPTv1; rua=mailto:r@example.com".to_owned()];
        let v = tlsrpt_verdict(name, &only_mail, None, Some(ep));
        assert_eq!(v.status, Status::Warning);
        assert!(v.observed.contains("lacks this server's endpoint"), "{v:?}");
        let both = vec![format!("v=TLSRPTv1; rua=mailto:r@example.com,{ep}")];
        assert_eq!(
            tlsrpt_verdict(name, &both, None, Some(ep)).status,
            Status::Ok
        );
        assert_eq!(
            tlsrpt_verdict(name, &[], None, None).status,
            Status::Warning
        );
        let two = vec![both[0].clone(), both[0].clone()];
        assert_eq!(tlsrpt_verdict(name, &two, None, None).status, Status::Error);
    }

    #[test]
    fn an_uncovered_mx_is_an_error_in_testing_and_enforce_and_a_warning_in_none() {
        let hosts = vec!["a.b.example.com".to_owned()];
        for (mode, status) in [
            ("testing", Status::Error),
            ("enforce", Status::Error),
            ("none", Status::Warning),
        ] {
            let v = mx_verdict(&tenant(mode), &hosts);
            assert_eq!(v.status, status, "{mode}: {v:?}");
            assert!(
                v.observed.starts_with("not covered: a.b.example.com"),
                "{v:?}"
            );
        }
        let ok = mx_verdict(&tenant("enforce"), &["mx1.example.com".to_owned()]);
        assert_eq!(ok.status, Status::Ok);
    }
}
