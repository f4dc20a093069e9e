//! TLS-RPT reports on the command line: `ingest-mail` and `reports` (`show`).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::ReportsArgs;
use crate::config::ServerConfig;
use crate::tlsrpt::ReportStore;
use crate::util::parse_since;

/// `ingest-mail`: never fails with anything but a sysexits code, so a pipe transport always
/// knows whether to bounce (65) or retry (75).
pub(super) fn ingest_mail(dir: &Path, maildir: Option<&Path>, out: &mut dyn Write) -> ExitCode {
    use crate::tlsrpt::mail::EX_TEMPFAIL;
    let (server, set) = match crate::reload::load(dir) {
        Ok(loaded) => loaded,
        Err(e) => {
            // The message stays queued until the operator fixes the configuration.
            eprintln!("mta-stsd: error: {e:#}");
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    // Mail may arrive before the daemon ever ran.
    if let Err(e) = crate::fsutil::create_private_dir(&server.state_dir) {
        eprintln!(
            "mta-stsd: error: creating state directory {}: {e}",
            server.state_dir.display()
        );
        return ExitCode::from(EX_TEMPFAIL);
    }
    let domains: std::collections::HashSet<String> =
        set.tenants.iter().map(|t| t.domain.clone()).collect();
    let tenants = crate::tlsrpt::mail::MailTenants {
        is_tenant: &|d| domains.contains(d),
        incomplete: set.has_errors(),
    };
    let store = match open_store(&server) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("mta-stsd: error: {e:#}");
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    ExitCode::from(crate::tlsrpt::mail::ingest_command(
        store.as_ref(),
        &server.tlsrpt,
        &tenants,
        maildir,
        &mut std::io::stdin().lock(),
        out,
        &mut std::io::stderr(),
    ))
}

/// The report store a command writes to: the cluster's in PostgreSQL in cluster mode, else
/// the SQLite database (created if need be: mail may arrive before the daemon ever ran).
fn open_store(server: &ServerConfig) -> anyhow::Result<Arc<dyn ReportStore>> {
    if let Some(pg) = &server.postgres {
        let db = Arc::new(crate::pgstore::open_existing(pg)?);
        return Ok(Arc::new(crate::pgstore::reports::PgReportStore::new(db)));
    }
    let path = &server.tlsrpt.database;
    crate::tlsrpt::open_store(&server.tlsrpt).with_context(|| format!("opening {}", path.display()))
}

pub(super) fn reports(args: &ReportsArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let (server, set) = crate::reload::load(&args.config.config)?;
    for d in set.diagnostics.iter().filter(|d| d.is_error()) {
        eprintln!("{d}");
    }
    let now = time::OffsetDateTime::now_utc();
    // Whole seconds: the window start is printed.
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let since = match &args.since {
        Some(text) => parse_since(text, now).map_err(|e| anyhow::anyhow!("--since: {e}"))?,
        None => now - time::Duration::days(i64::from(server.tlsrpt.min_days_for_enforce)),
    };
    let mut tenants = set.tenants.clone();
    tenants.sort_by(|a, b| a.domain.cmp(&b.domain));
    if let Some(domain) = &args.domain {
        let domain = typed_domain(domain).map_err(|why| anyhow::anyhow!("--domain: {why}"))?;
        tenants.retain(|t| t.domain == domain);
        if tenants.is_empty() {
            anyhow::bail!("{domain} is not a tenant of {}", server.file.display());
        }
    }
    let store = open_existing_store(&server)?;
    let verdict = crate::tlsrpt::VerdictConfig {
        min_days: server.tlsrpt.min_days_for_enforce,
    };
    let mut summaries = Vec::with_capacity(tenants.len());
    for t in &tenants {
        summaries.push(crate::tlsrpt::tenant_summary(
            store.as_deref(),
            &t.domain,
            t.policy.mode,
            since,
            now,
            &verdict,
        )?);
    }
    // Offline there is no validation to combine with: say so rather than imply it passed.
    for s in &mut summaries {
        let not_run = crate::validate::readiness::NOT_RUN_OFFLINE;
        crate::validate::readiness::gate(&mut s.verdict, None, not_run);
    }
    if !args.verdict.is_empty() {
        summaries.retain(|s| args.verdict.iter().any(|v| v.status() == s.verdict.status));
    }
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &summaries)?;
        writeln!(out)?;
    } else {
        out.write_all(crate::tlsrpt::render_table(&summaries).as_bytes())?;
    }
    // Only what was shown counts: `--verdict ready` is a question, not a health check.
    Ok(
        if summaries.iter().any(|s| s.verdict.status.needs_attention()) {
            ExitCode::from(super::EXIT_NEEDS_ATTENTION)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// A domain as typed on the command line, as the A-labels tenants are stored under: a U-label
/// (`müller.example`), capitals and a trailing dot are all the same tenant.
fn typed_domain(typed: &str) -> Result<String, String> {
    let typed = typed.trim();
    crate::config::normalize_hostname(typed.strip_suffix('.').unwrap_or(typed))
}

/// Opens the report database for reading, or `None` (with a note on stderr) when none exists
/// yet: a read-only command must not create it, possibly owned by the wrong user. In cluster
/// mode the reports are the cluster's, in PostgreSQL.
fn open_existing_store(server: &ServerConfig) -> anyhow::Result<Option<Arc<dyn ReportStore>>> {
    if server.postgres.is_some() {
        return open_store(server).map(Some);
    }
    let path = &server.tlsrpt.database;
    let store = crate::tlsrpt::open_existing_store(&server.tlsrpt)
        .with_context(|| format!("opening the report database {}", path.display()))?;
    if store.is_none() {
        eprintln!(
            "mta-stsd: no report database at {} yet: no reports received",
            path.display()
        );
    }
    Ok(store)
}

pub(super) fn reports_show(
    dir: &Path,
    report_id: &str,
    organization: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let server = crate::reload::load_server(dir)?;
    let mut found = match open_existing_store(&server)? {
        Some(store) => store.get(report_id)?,
        None => Vec::new(),
    };
    if let Some(org) = organization {
        found.retain(|r| r.organization == org);
    }
    // A report naming several tenants is stored once per tenant: the same content, shown once.
    let mut seen = std::collections::BTreeSet::new();
    found.retain(|r| seen.insert((r.organization.clone(), r.digest.clone())));
    let orgs: std::collections::BTreeSet<&str> =
        found.iter().map(|r| r.organization.as_str()).collect();
    match (found.as_slice(), orgs.len()) {
        ([], _) => anyhow::bail!("no stored report with report-id {report_id:?}"),
        ([one], _) => show_one(one, out),
        (_, 1) => show_conflicting(&found, out),
        (_, n) => {
            let orgs: Vec<String> = orgs.iter().map(|o| format!("{o:?}")).collect();
            anyhow::bail!(
                "{n} organizations used report-id {report_id:?}: {}; pick one with --organization",
                orgs.join(", ")
            )
        }
    }
}

/// One stored report: its JSON on stdout, how it arrived on stderr.
fn show_one(record: &crate::tlsrpt::ReportRecord, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    eprintln!("mta-stsd: {}", provenance(record));
    serde_json::to_writer_pretty(&mut *out, &report_json(record)?)?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}

/// Reports of one organization and report-id with different content: one may be forged, so
/// every one is shown, as a JSON array of {received, source, signing-domain, report}.
fn show_conflicting(
    records: &[crate::tlsrpt::ReportRecord],
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    eprintln!(
        "mta-stsd: {} different reports are stored under this organization and report-id \
         (conflicting: one may be forged):",
        records.len()
    );
    let mut all = Vec::with_capacity(records.len());
    for r in records {
        eprintln!("  {}", provenance(r));
        all.push(serde_json::json!({
            "received": r.received.format(&time::format_description::well_known::Rfc3339)?,
            "source": r.source.as_str(),
            "signing-domain": r.signing_domain,
            "submitter-mismatch": r.submitter_mismatch,
            "report": report_json(r)?,
        }));
    }
    serde_json::to_writer_pretty(&mut *out, &all)?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}

fn report_json(record: &crate::tlsrpt::ReportRecord) -> anyhow::Result<serde_json::Value> {
    serde_json::from_slice(&record.raw_json)
        .context("the stored report is not JSON (database corrupt?)")
}

/// How a stored report arrived, for a person reading `reports show`.
fn provenance(r: &crate::tlsrpt::ReportRecord) -> String {
    let signer = match (&r.signing_domain, r.submitter_mismatch) {
        (Some(d), false) => format!(", DKIM signing domain {d}"),
        (Some(d), true) => format!(
            ", DKIM signing domain {d} (flagged: the submitter or contact-info is not of it)"
        ),
        (None, _) => ", not DKIM-verified".to_string(),
    };
    let received = r
        .received
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let conflict = if r.conflict { ", CONFLICTING" } else { "" };
    format!(
        "{:?} report received {received} by {}{signer}{conflict}",
        r.organization,
        r.source.as_str()
    )
}
