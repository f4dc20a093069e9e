//! TLS-RPT reports on the command line: `ingest-mail` and `reports` (`show`).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::ReportsArgs;
use crate::config::ServerConfig;
use crate::util::parse_since;

/// `ingest-mail`: never fails with anything but a sysexits code, so a pipe transport always
/// knows whether to bounce (65) or retry (75).
pub(super) fn ingest_mail(dir: &Path, maildir: Option<&Path>, out: &mut dyn Write) -> ExitCode {
    use crate::tlsrpt::mail::{EX_DATAERR, EX_TEMPFAIL};
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
    let store = match crate::tlsrpt::SqliteStore::open(&server.tlsrpt.database) {
        Ok(store) => store,
        Err(e) => {
            eprintln!(
                "mta-stsd: error: opening {}: {e}",
                server.tlsrpt.database.display()
            );
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    let domains: std::collections::HashSet<String> =
        set.tenants.iter().map(|t| t.domain.clone()).collect();
    let is_tenant = |d: &str| domains.contains(d);
    let intake = crate::tlsrpt::MailIntake {
        store: &store,
        limits: server.tlsrpt.limits,
        auth: &server.tlsrpt.mail,
        is_tenant: &is_tenant,
    };
    let now = time::OffsetDateTime::now_utc();
    // A report for a domain whose tenant file is broken right now is deferred, not bounced:
    // the operator may fix the file before the MTA gives up.
    let code_of = |e: &crate::tlsrpt::MailError| match e {
        crate::tlsrpt::MailError::Report(crate::tlsrpt::ReportError::UnknownDomain(_))
            if set.has_errors() =>
        {
            EX_TEMPFAIL
        }
        other => other.exit_code(),
    };
    if let Some(maildir) = maildir {
        let summary = match crate::tlsrpt::process_maildir(maildir, &intake, now) {
            Ok(summary) => summary,
            Err(e) => {
                eprintln!(
                    "mta-stsd: error: reading Maildir {}: {e}",
                    maildir.display()
                );
                return ExitCode::from(EX_TEMPFAIL);
            }
        };
        for (path, receipt) in &summary.handled {
            let _ = writeln!(out, "{}: {}", path.display(), receipt_line(receipt));
        }
        for (path, err) in &summary.failed {
            eprintln!("{}: not stored: {err}", path.display());
        }
        let _ = writeln!(
            out,
            "{}: {} handled, {} left in place",
            maildir.display(),
            summary.handled.len(),
            summary.failed.len()
        );
        let code = summary
            .failed
            .iter()
            .map(|(_, e)| code_of(e))
            .fold(0u8, |acc, c| match (acc, c) {
                (EX_TEMPFAIL, _) | (_, EX_TEMPFAIL) => EX_TEMPFAIL,
                (0, c) => c,
                (acc, _) => acc,
            });
        return ExitCode::from(code);
    }
    let limit = crate::tlsrpt::mail::max_message_size(&server.tlsrpt.limits);
    let mut raw = Vec::new();
    let read = std::io::Read::read_to_end(
        &mut std::io::Read::take(std::io::stdin().lock(), limit as u64 + 1),
        &mut raw,
    );
    if let Err(e) = read {
        eprintln!("mta-stsd: error: reading stdin: {e}");
        return ExitCode::from(EX_TEMPFAIL);
    }
    if raw.len() > limit {
        eprintln!("mta-stsd: message larger than {limit} bytes: not a report");
        return ExitCode::from(EX_DATAERR);
    }
    match crate::tlsrpt::ingest_message(&raw, &intake, now) {
        Ok(receipt) => {
            let _ = writeln!(out, "{}", receipt_line(&receipt));
            ExitCode::from(receipt.exit_code())
        }
        Err(e) => {
            eprintln!("mta-stsd: report not stored: {e}");
            ExitCode::from(code_of(&e))
        }
    }
}

fn receipt_line(r: &crate::tlsrpt::MailReceipt) -> String {
    let what = match r.outcome {
        crate::tlsrpt::InsertOutcome::Inserted => "stored",
        crate::tlsrpt::InsertOutcome::Duplicate => "duplicate (already stored)",
    };
    let mut line = format!(
        "{what}: report {:?} from {:?} for {}",
        r.report_id, r.organization, r.tenant
    );
    for note in &r.notes {
        line.push_str("; ");
        line.push_str(note);
    }
    line
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
        let domain = crate::tlsrpt::report::normalize_domain(domain);
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
        let data = match &store {
            Some(store) => crate::tlsrpt::ReportStore::summary(store, &t.domain, since)?,
            None => Default::default(),
        };
        summaries.push(crate::tlsrpt::summarize(
            &t.domain,
            crate::tlsrpt::service::summary_mode(t.policy.mode),
            &data,
            since,
            now,
            &verdict,
        ));
    }
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &summaries)?;
        writeln!(out)?;
    } else {
        out.write_all(crate::tlsrpt::render_table(&summaries).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the report database for reading, or `None` (with a note on stderr) when none exists
/// yet: a read-only command must not create it, possibly owned by the wrong user.
fn open_existing_store(
    server: &ServerConfig,
) -> anyhow::Result<Option<crate::tlsrpt::SqliteStore>> {
    let path = &server.tlsrpt.database;
    if !path.exists() {
        eprintln!(
            "mta-stsd: no report database at {} yet: no reports received",
            path.display()
        );
        return Ok(None);
    }
    crate::tlsrpt::SqliteStore::open(path)
        .map(Some)
        .with_context(|| format!("opening the report database {}", path.display()))
}

pub(super) fn reports_show(
    dir: &Path,
    report_id: &str,
    organization: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let server = crate::reload::load_server(dir)?;
    let mut found = match open_existing_store(&server)? {
        Some(store) => crate::tlsrpt::ReportStore::get(&store, report_id)?,
        None => Vec::new(),
    };
    if let Some(org) = organization {
        found.retain(|r| r.organization == org);
    }
    let record = match found.as_slice() {
        [] => anyhow::bail!("no stored report with report-id {report_id:?}"),
        [one] => one,
        many => {
            let orgs: Vec<String> = many
                .iter()
                .map(|r| format!("{:?}", r.organization))
                .collect();
            anyhow::bail!(
                "{} organizations used report-id {report_id:?}: {}; pick one with --organization",
                many.len(),
                orgs.join(", ")
            )
        }
    };
    let value: serde_json::Value = serde_json::from_slice(&record.raw_json)
        .context("the stored report is not JSON (database corrupt?)")?;
    serde_json::to_writer_pretty(&mut *out, &value)?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}
