//! The DNS questions the checks ask, answered as a sender's resolver answers them, with every
//! CNAME on the way kept so a verdict can show the chain.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

/// Longest CNAME chain followed; resolvers give up at about this length too.
const MAX_CHAIN: usize = 8;

/// A resolver that asks now (no cache) within `timeout` per query.
pub fn resolver(nameservers: &[SocketAddr], timeout: Duration) -> anyhow::Result<TokioResolver> {
    let mut builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        TokioResolver::builder_with_config(
            crate::util::dns::resolver_config(nameservers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts = builder.options_mut();
    // A check must see the DNS as it is now, not as it was an hour ago.
    opts.cache_size = 0;
    opts.timeout = timeout;
    opts.attempts = 2;
    Ok(builder.build()?)
}

/// The lower-case name without the trailing dot.
fn plain(name: &hickory_resolver::proto::rr::Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// Answers of one query of `rtype` at `name`; no record (NXDOMAIN or NODATA) is empty.
async fn answers(r: &TokioResolver, name: &str, rtype: RecordType) -> Result<Vec<RData>, String> {
    match r.lookup(format!("{name}."), rtype).await {
        Ok(lookup) => Ok(lookup
            .answers()
            .iter()
            .filter(|rec| rec.record_type() == rtype)
            .map(|rec| rec.data.clone())
            .collect()),
        Err(e) if e.is_no_records_found() => Ok(Vec::new()),
        Err(e) => Err(format!("DNS lookup of {name} {rtype} failed: {e}")),
    }
}

/// The CNAME targets from `name` on, in order (empty when `name` is no alias).
pub async fn cname_chain(r: &TokioResolver, name: &str) -> Result<Vec<String>, String> {
    let mut chain: Vec<String> = Vec::new();
    let mut current = name.to_ascii_lowercase();
    while chain.len() < MAX_CHAIN {
        let next = answers(r, &current, RecordType::CNAME)
            .await?
            .into_iter()
            .find_map(|d| match d {
                RData::CNAME(target) => Some(plain(&target.0)),
                _ => None,
            });
        match next {
            Some(target) if !chain.contains(&target) => {
                chain.push(target.clone());
                current = target;
            }
            _ => break,
        }
    }
    Ok(chain)
}

/// The A and AAAA addresses of `name`, after CNAMEs.
pub async fn addresses(r: &TokioResolver, name: &str) -> Result<Vec<IpAddr>, String> {
    match r.lookup_ip(format!("{name}.")).await {
        Ok(ips) => Ok(ips.iter().collect()),
        Err(e) if e.is_no_records_found() => Ok(Vec::new()),
        Err(e) => Err(format!("DNS lookup of {name} failed: {e}")),
    }
}

/// The TXT records at `name` (the last name of its CNAME chain), each one's strings joined.
pub async fn txt(r: &TokioResolver, name: &str) -> Result<Vec<String>, String> {
    Ok(answers(r, name, RecordType::TXT)
        .await?
        .into_iter()
        .filter_map(|d| match d {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect())
}

/// The MX exchanges of `name` by preference; `None` for a null MX (RFC 7505: `0 .`).
pub async fn mx(r: &TokioResolver, name: &str) -> Result<Option<Vec<String>>, String> {
    let mut list: Vec<(u16, String)> = answers(r, name, RecordType::MX)
        .await?
        .into_iter()
        .filter_map(|d| match d {
            RData::MX(mx) => Some((mx.preference, plain(&mx.exchange))),
            _ => None,
        })
        .collect();
    list.sort();
    list.dedup();
    if list.iter().any(|(_, host)| host.is_empty()) {
        return Ok(None);
    }
    Ok(Some(list.into_iter().map(|(_, h)| h).collect()))
}
