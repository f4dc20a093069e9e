//! The names of a tenant's records inside the delegated zone.
//!
//! `<domain>._mta-sts.<zone>` and `<domain>._smtp._tls.<zone>` (and, for DNS-01,
//! `mta-sts.<domain>._acme-challenge.<zone>`, see `certs::acme::dns01`): a tenant domain is LDH (no
//! `_`, see `config::normalize_hostname`), so the domain part can never contain `_mta-sts`
//! or `_tls` labels, the mapping is one-to-one and the two record kinds live in disjoint
//! subtrees. The customer's CNAMEs point at exactly these names.

use hickory_server::proto::rr::Name;

use crate::certs::acme::dns01;
use crate::config::{IssuerConfig, ServerConfig};
use crate::publish::{Record, RecordType};

/// The label below the zone under which every `_mta-sts` target lives.
pub const STS_LABEL: &str = "_mta-sts";
/// The labels below the zone under which every `_smtp._tls` target lives.
pub const TLSRPT_LABELS: &str = "_smtp._tls";

/// Which of a tenant's two TXT records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `v=STSv1; id=…`, gated on readiness.
    Sts,
    /// `v=TLSRPTv1; rua=…`.
    TlsRpt,
}

/// `<domain>._mta-sts.<zone>` or `<domain>._smtp._tls.<zone>`, absolute, without the dot.
pub fn target(kind: Kind, domain: &str, zone: &str) -> String {
    match kind {
        Kind::Sts => format!("{domain}.{STS_LABEL}.{zone}"),
        Kind::TlsRpt => format!("{domain}.{TLSRPT_LABELS}.{zone}"),
    }
}

/// [`target`] as a wire name; an error when the result is longer than DNS allows (a
/// 253-octet domain under a long zone), which the caller reports for that tenant.
pub fn target_name(kind: Kind, domain: &str, zone: &str) -> Result<Name, String> {
    let text = target(kind, domain, zone);
    let mut name = Name::from_ascii(&text).map_err(|e| format!("{text}: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

/// The CNAMEs a customer of `server`'s delegated zone creates once (empty without `dns:`);
/// see [`cnames`].
pub fn customer_cnames(server: &ServerConfig, domain: &str) -> Vec<Record> {
    let Some(dns) = &server.dns else {
        return Vec::new();
    };
    let dns01 = matches!(&server.issuer, IssuerConfig::Acme(a) if a.dns01_zone.is_some());
    cnames(domain, &dns.zone, server.public_hostname.as_deref(), dns01)
}

/// The CNAMEs a customer creates once in their own zone: `mta-sts.<domain>` to the policy
/// host (when `public_hostname` is set), `_mta-sts.<domain>` and `_smtp._tls.<domain>` into
/// the delegated zone, and with `dns01` `_acme-challenge.mta-sts.<domain>` too (so a
/// certificate can be issued before `mta-sts.<domain>` points here). `_smtp._tls` is printed
/// even for a tenant without TLS-RPT addresses: its target then answers NXDOMAIN, which
/// senders read as "no TLS-RPT", and adding addresses later needs no DNS change.
pub fn cnames(domain: &str, zone: &str, public_hostname: Option<&str>, dns01: bool) -> Vec<Record> {
    let cname = |name: String, target: String| Record {
        name,
        rtype: RecordType::Cname,
        value: target,
    };
    let mut out = Vec::with_capacity(4);
    if let Some(host) = public_hostname {
        out.push(cname(format!("mta-sts.{domain}."), format!("{host}.")));
    }
    out.push(cname(
        format!("{STS_LABEL}.{domain}."),
        format!("{}.", target(Kind::Sts, domain, zone)),
    ));
    out.push(cname(
        format!("{TLSRPT_LABELS}.{domain}."),
        format!("{}.", target(Kind::TlsRpt, domain, zone)),
    ));
    if dns01 {
        let host = format!("mta-sts.{domain}");
        out.push(cname(
            format!("{}.", dns01::challenge_name(&host)),
            format!("{}.", dns01::target(&host, zone)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_the_documented_names() {
        let zone = "sts.operator.example";
        assert_eq!(
            target(Kind::Sts, "example.com", zone),
            "example.com._mta-sts.sts.operator.example"
        );
        assert_eq!(
            target(Kind::TlsRpt, "example.com", zone),
            "example.com._smtp._tls.sts.operator.example"
        );
        let name = target_name(Kind::Sts, "Mail.Example.COM", zone).unwrap();
        assert!(name.is_fqdn());
        assert_eq!(name.num_labels(), 7);
    }

    #[test]
    fn different_domains_and_kinds_never_share_a_name() {
        let zone = "z.example";
        let domains = ["a.com", "b.a.com", "a.com.b", "sts.z.example", "x-y.com"];
        let mut seen = std::collections::HashSet::new();
        for d in domains {
            for k in [Kind::Sts, Kind::TlsRpt] {
                let n = target_name(k, d, zone).unwrap().to_lowercase();
                assert!(seen.insert(n.to_string()), "{d} {k:?} collides");
            }
        }
    }

    #[test]
    fn the_customer_cnames_point_at_the_targets() {
        let lines: Vec<String> = cnames(
            "example.com",
            "sts.op.example",
            Some("sts.op.example"),
            true,
        )
        .iter()
        .map(Record::zone_line)
        .collect();
        assert_eq!(
            lines,
            [
                "mta-sts.example.com. IN CNAME sts.op.example.",
                "_mta-sts.example.com. IN CNAME example.com._mta-sts.sts.op.example.",
                "_smtp._tls.example.com. IN CNAME example.com._smtp._tls.sts.op.example.",
                "_acme-challenge.mta-sts.example.com. IN CNAME mta-sts.example.com._acme-challenge.sts.op.example.",
            ]
        );
        assert_eq!(cnames("example.com", "z.example", None, false).len(), 2);
    }

    #[test]
    fn a_name_too_long_for_dns_is_an_error() {
        let long = format!(
            "{}.{}.com",
            vec!["a".repeat(63); 3].join("."),
            "b".repeat(40)
        );
        assert!(target_name(Kind::Sts, &long, "sts.operator.example").is_err());
    }
}
