//! The `dns:` section: the built-in authoritative server for the zone the operator delegates
//! to mta-stsd, so customers point three CNAMEs into it once and ids follow policy edits.

use std::net::SocketAddr;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::field::{Bounds, Diags};
use super::names::normalize_hostname;

/// Default TTL of a tenant's TXT records: short, so a new id reaches resolvers within minutes
/// of being ready (RFC 8461 §8.1 leaves the caching to the record's TTL).
pub const DEFAULT_DNS_TTL: u32 = 300;
/// Longest tenant TXT TTL accepted: a day; longer would hold a stale id past any policy edit.
const MAX_DNS_TTL: u32 = 86_400;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    #[schemars(with = "String")]
    listen: Spanned<String>,
    #[schemars(with = "String")]
    zone: Spanned<String>,
    #[schemars(with = "Vec<String>")]
    nameservers: Spanned<Vec<Spanned<String>>>,
    #[schemars(with = "String")]
    hostmaster: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    ttl: Option<Spanned<u32>>,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    per_second: Option<Spanned<u32>>,
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    burst: Option<Spanned<u32>>,
}

/// Default UDP answers per second to one source network (/24 or /56), after the burst.
pub const DEFAULT_DNS_RATE: u32 = 200;
/// Default burst of UDP answers to one source network.
pub const DEFAULT_DNS_BURST: u32 = 1000;

/// The built-in DNS server's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// UDP and TCP listen address (the same port for both).
    pub listen: SocketAddr,
    /// The delegated zone, lowercase A-labels without the trailing dot.
    pub zone: String,
    /// The zone's name servers (NS at the apex; the first is the SOA's primary).
    pub nameservers: Vec<String>,
    /// The SOA's responsible mailbox, as a host name (`hostmaster.operator.example`).
    pub hostmaster: String,
    /// TTL of the tenants' TXT records, in seconds.
    pub ttl: u32,
    /// UDP answers per second to one source network after the burst; 0 turns the limit off
    /// (a resolver farm behind one /24, or a load test).
    pub rate_per_second: u32,
    /// Answers one source network may get at once before the rate applies.
    pub rate_burst: u32,
}

/// Compiles `dns:`; each bad value is an error naming its field.
pub(super) fn compile_dns(raw: &RawDns, d: &mut Diags) -> DnsConfig {
    let listen = d
        .address(
            &raw.listen,
            "dns.listen",
            "\"[::]:53\" or \"127.0.0.1:5353\"",
        )
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut host = |value: &Spanned<String>, field: &str| {
        normalize_hostname(&value.value)
            .map_err(|why| d.error(&value.referenced, field, why))
            .unwrap_or_default()
    };
    let zone = host(&raw.zone, "dns.zone");
    let hostmaster = host(&raw.hostmaster, "dns.hostmaster");
    let nameservers = d.unique_list(
        &raw.nameservers.value,
        "dns.nameservers",
        "name server",
        normalize_hostname,
    );
    // The zone answers no address records, so a name server inside it could be reached only
    // through glue and would answer NXDOMAIN for its own name (a lame delegation).
    for (i, (item, ns)) in raw.nameservers.value.iter().zip(&nameservers).enumerate() {
        if !zone.is_empty() && (*ns == zone || ns.ends_with(&format!(".{zone}"))) {
            let message = format!(
                "{ns:?} lies inside dns.zone, which has no address records; use a name outside it"
            );
            d.error(&item.referenced, &format!("dns.nameservers[{i}]"), message);
        }
    }
    if raw.nameservers.value.is_empty() {
        d.error(
            &raw.nameservers.referenced,
            "dns.nameservers",
            "is empty; name at least one server the parent zone delegates to".into(),
        );
    }
    let ttl = d.ranged(
        raw.ttl.as_ref(),
        "dns.ttl",
        Bounds::Within(1, MAX_DNS_TTL),
        DEFAULT_DNS_TTL,
    );
    let (rate_per_second, rate_burst) = compile_rate_limit(raw.rate_limit.as_ref(), d);
    DnsConfig {
        listen,
        zone,
        nameservers,
        hostmaster,
        ttl,
        rate_per_second,
        rate_burst,
    }
}

/// `dns.rate_limit`: answers per second (0: no limit) and burst per source network.
fn compile_rate_limit(limit: Option<&RawRateLimit>, d: &mut Diags) -> (u32, u32) {
    let per_second = d.ranged(
        limit.and_then(|l| l.per_second.as_ref()),
        "dns.rate_limit.per_second",
        Bounds::Within(0, 10_000_000),
        DEFAULT_DNS_RATE,
    );
    let burst = d.ranged(
        limit.and_then(|l| l.burst.as_ref()),
        "dns.rate_limit.burst",
        Bounds::Within(1, 10_000_000),
        DEFAULT_DNS_BURST,
    );
    (per_second, burst)
}
