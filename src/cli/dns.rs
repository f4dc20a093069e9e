//! `mta-stsd dns`: the DNS records to publish, from the configuration or the running daemon.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use std::sync::Arc;

use crate::config::{DnsConfig, IssuerConfig, ServerConfig, Tenant};
use crate::dns::names::customer_cnames;
use crate::publish::{Publishing, Record, tenant_records};

pub(super) fn dns(dir: &Path, json: bool, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let (server, set) = crate::reload::load(dir)?;
    for d in set.diagnostics.iter().filter(|d| d.is_error()) {
        eprintln!("{d}");
    }
    let mut tenants = set.tenants.clone();
    tenants.sort_by(|a, b| a.domain.cmp(&b.domain));
    if json {
        json_list(&server, &tenants, out)?;
    } else if let Some(zone) = &server.dns {
        delegation_lines(&server, zone, &tenants, out)?;
    } else {
        zone_lines(&server, &tenants, out)?;
    }
    Ok(if set.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One object per tenant; with `dns:` configured, also the CNAMEs the customer creates.
fn json_list(
    server: &ServerConfig,
    tenants: &[Arc<Tenant>],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let publishing = Publishing::of(server);
    let list: Vec<_> = tenants
        .iter()
        .map(|t| {
            let mut entry = serde_json::json!({
                "domain": t.domain,
                "policy_host": t.host,
                "mode": t.policy.mode,
                "id": t.policy.id,
                // Only the running daemon knows (see `--admin`).
                "ready": null,
                "records": tenant_records(t, publishing).list(),
                "retirement": t.retiring.map(|r| serde_json::json!({
                    "state": "retiring", "since": r.since, "until": r.until, "file_removed": r.orphan,
                })),
            });
            if server.dns.is_some() {
                entry["cnames"] = serde_json::json!(customer_cnames(server, &t.domain));
            }
            entry
        })
        .collect();
    serde_json::to_writer_pretty(&mut *out, &list)?;
    writeln!(out)?;
    Ok(())
}

/// The records the operator publishes by hand, as zone-file lines.
fn zone_lines(
    server: &ServerConfig,
    tenants: &[Arc<Tenant>],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let publishing = Publishing::of(server);
    writeln!(
        out,
        "; DNS records for {} tenant(s) of {}",
        tenants.len(),
        server.file.display()
    )?;
    if publishing.public_hostname.is_none() {
        writeln!(
            out,
            "; set public_hostname in the server file to also print the mta-sts CNAME records"
        )?;
    }
    for t in tenants {
        if let Some(r) = t.retiring {
            writeln!(out, "{}", retiring_note(&t.domain, r.until))?;
        }
        for r in tenant_records(t, publishing).list() {
            writeln!(out, "{}", r.zone_line())?;
        }
    }
    Ok(())
}

/// The comment before a retiring tenant's records (RFC 8461 §8.3).
fn retiring_note(domain: &str, until: i64) -> String {
    format!(
        "; {domain}: retiring: serves mode none until {}; remove these records after that (mta-stsd forget {domain} ends it now)",
        crate::util::format_unix(until)
    )
}

/// Delegation mode: the parent zone's NS records once, then each customer's CNAMEs. The TXT
/// records themselves are answered by the built-in server, ids gated on readiness.
fn delegation_lines(
    server: &ServerConfig,
    zone: &DnsConfig,
    tenants: &[Arc<Tenant>],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let public_hostname = server.public_hostname.as_deref();
    writeln!(
        out,
        "; Delegated zone {}: mta-stsd answers every tenant's TXT records ({}), a new id once its policy is served with a valid certificate",
        zone.zone, zone.listen
    )?;
    writeln!(
        out,
        "; Once, in the parent zone: delegate {} to the name servers that reach mta-stsd",
        zone.zone
    )?;
    for ns in &zone.nameservers {
        writeln!(out, "{}. IN NS {ns}.", zone.zone)?;
    }
    writeln!(
        out,
        "; and for each name server an A/AAAA record with the public address of dns.listen"
    )?;
    writeln!(
        out,
        "; Per tenant, once, in the customer's zone ({} tenant(s))",
        tenants.len()
    )?;
    if public_hostname.is_none() {
        writeln!(
            out,
            "; set public_hostname in the server file to also print the mta-sts CNAME records"
        )?;
    }
    if matches!(&server.issuer, IssuerConfig::Acme(a) if a.dns01_zone.is_some()) {
        writeln!(
            out,
            "; the _acme-challenge CNAME lets mta-stsd obtain the certificate by DNS-01 before mta-sts points here (create it first when migrating)"
        )?;
    }
    for t in tenants {
        if let Some(r) = t.retiring {
            writeln!(out, "{}", retiring_note(&t.domain, r.until))?;
        }
        for r in customer_cnames(server, &t.domain) {
            writeln!(out, "{}", r.zone_line())?;
        }
    }
    Ok(())
}

/// Time allowed for the admin API to answer `dns --admin`.
const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Every tenant of the running state, page by page (the cursor is the last domain, an
/// A-label, so it needs no escaping).
fn all_tenants(url: &str, token: Option<&str>) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut tenants = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!(
                "/api/v1/tenants?limit={}&cursor={c}",
                crate::admin::MAX_LIMIT
            ),
            None => format!("/api/v1/tenants?limit={}", crate::admin::MAX_LIMIT),
        };
        let body = super::admin_client::get_blocking(url, &path, token, ADMIN_TIMEOUT)?;
        let mut page: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| anyhow::anyhow!("{url}: the answer is not JSON: {e}"))?;
        if let Some(list) = page["tenants"].as_array_mut() {
            tenants.append(list);
        }
        match page["next_cursor"].as_str() {
            Some(next) if cursor.as_deref() != Some(next) => cursor = Some(next.to_owned()),
            _ => return Ok(tenants),
        }
    }
}

/// `dns --admin`: the records of the running state, with readiness.
pub(super) fn dns_from_admin(
    url: &str,
    token_file: Option<&Path>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let token = token_file.map(crate::admin::read_token).transpose()?;
    let tenants = all_tenants(url, token.as_deref())?;
    if json {
        admin_json(&tenants, out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "; DNS records for {} tenant(s) served by {url}",
        tenants.len()
    )?;
    for t in &tenants {
        if let Some(until) = t["retirement"]["until"].as_i64() {
            writeln!(
                out,
                "{}",
                retiring_note(t["domain"].as_str().unwrap_or(""), until)
            )?;
        }
        if t["delegated"].is_object() {
            delegated_from_admin(url, t, out)?;
            continue;
        }
        let ready = t["ready"].as_bool().unwrap_or(false);
        let records: Vec<Record> = serde_json::from_value(t["records"].clone())
            .map_err(|e| anyhow::anyhow!("{url}: a tenant's records are not DNS records: {e}"))?;
        for r in &records {
            let line = r.zone_line();
            if !ready && r.name.starts_with("_mta-sts.") {
                let state = t["certificate"]["state"].as_str().unwrap_or("none");
                writeln!(
                    out,
                    "; not ready (certificate: {state}); publish once ready: {line}"
                )?;
            } else {
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `dns --admin --json`: the running state's records, one object per tenant.
fn admin_json(tenants: &[serde_json::Value], out: &mut dyn Write) -> anyhow::Result<()> {
    let out_list: Vec<_> = tenants
        .iter()
        .map(|t| {
            serde_json::json!({
                "domain": t["domain"],
                "policy_host": t["policy_host"],
                "mode": t["mode"],
                "id": t["id"],
                "ready": t["ready"],
                "records": t["records"],
                "delegated": t["delegated"],
                "retirement": t["retirement"],
            })
        })
        .collect();
    serde_json::to_writer_pretty(&mut *out, &out_list)?;
    writeln!(out)?;
    Ok(())
}

/// One tenant of a daemon with a delegated zone: the customer's CNAMEs, and what the zone
/// answers when it is not yet in step with the served policy.
fn delegated_from_admin(
    url: &str,
    t: &serde_json::Value,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let view = &t["delegated"];
    let cnames: Vec<Record> = serde_json::from_value(view["cnames"].clone())
        .map_err(|e| anyhow::anyhow!("{url}: a tenant's CNAMEs are not DNS records: {e}"))?;
    for r in &cnames {
        writeln!(out, "{}", r.zone_line())?;
    }
    if view["mta_sts"]["in_step"].as_bool() != Some(true) {
        let domain = t["domain"].as_str().unwrap_or("");
        let served = t["id"].as_str().unwrap_or("");
        match view["mta_sts"]["answered_id"].as_str() {
            Some(old) => writeln!(
                out,
                "; {domain}: the zone answers id {old}; id {served} follows once its policy is served with a valid certificate"
            )?,
            None => writeln!(
                out,
                "; {domain}: no _mta-sts record yet; id {served} is answered once its policy is served with a valid certificate"
            )?,
        }
    }
    Ok(())
}
