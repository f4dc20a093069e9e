//! `mta-stsd certs`: every tenant's certificate state from the state directory (or, in cluster
//! mode, the cluster's PostgreSQL store), as a table.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::certs::store::{CertStore, FileStore};
use crate::config::IssuerConfig;

/// One row of `mta-stsd certs`.
struct CertRow {
    host: String,
    state: String,
    issuer: String,
    serial: String,
    not_after: String,
    next_attempt: String,
    last_error: String,
}

pub(super) fn certs(dir: &Path, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let (server, set) = crate::reload::load(dir)?;
    let now = crate::util::unix_now();
    // The report host gets its certificate from the same issuer as the tenants.
    let report_host = server.tlsrpt.report_host.as_deref();
    let configured: BTreeSet<String> = set
        .tenants
        .iter()
        .map(|t| t.host.clone())
        .chain(report_host.map(str::to_owned))
        .collect();
    let mut rows = match &server.issuer {
        IssuerConfig::Acme(_) => match &server.postgres {
            // In cluster mode the certificates are the cluster's, not this host's files.
            Some(pg) => {
                let db = std::sync::Arc::new(crate::pgstore::open_existing(pg)?);
                acme_rows(
                    &crate::pgstore::certs::PgCertStore::new(db),
                    configured,
                    now,
                )?
            }
            None => acme_rows(&FileStore::new(&server.state_dir), configured, now)?,
        },
        IssuerConfig::Files {
            dir: files_dir,
            cert_file,
            key_file,
        } => configured
            .into_iter()
            .map(|host| {
                let loaded = crate::certs::files::load(files_dir, &host, cert_file, key_file, now);
                let (state, info, error) = match loaded {
                    Ok(entry) => ("valid", Some(entry.info), String::new()),
                    Err(e) => ("error", None, e.to_string()),
                };
                row(host, state.to_owned(), info, None, error)
            })
            .collect(),
        IssuerConfig::Internal { .. } => {
            writeln!(
                out,
                "issuer internal: leaves are issued in memory at every start; nothing is stored to show"
            )?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    for row in rows
        .iter_mut()
        .filter(|r| Some(r.host.as_str()) == report_host)
    {
        row.host.push_str(" (report host)");
    }
    print_table(&rows, out)?;
    Ok(if rows.iter().any(CertRow::needs_attention) {
        ExitCode::from(super::EXIT_NEEDS_ATTENTION)
    } else {
        ExitCode::SUCCESS
    })
}

/// States that need the operator: the issuer gave up or is waiting out a failure, or the
/// certificate on disk has run out. Pending and dns-not-ready are a new tenant's normal way.
const ATTENTION_STATES: [&str; 3] = ["error", "backoff", EXPIRED];

/// Shown instead of `valid`/`renewing` when the stored certificate has run out since the
/// issuer wrote its status (the daemon is down or stuck).
const EXPIRED: &str = "expired";

impl CertRow {
    fn needs_attention(&self) -> bool {
        ATTENTION_STATES.contains(&self.state.as_str())
    }
}

/// One row per configured or stored host: what the ACME issuer last stored for it.
fn acme_rows(
    store: &dyn CertStore,
    configured: BTreeSet<String>,
    now: i64,
) -> anyhow::Result<Vec<CertRow>> {
    let mut hosts = configured.clone();
    hosts.extend(store.hosts()?);
    let mut rows = Vec::with_capacity(hosts.len());
    for host in hosts {
        let info = match store.load_cert(&host) {
            Ok(Some(stored)) => crate::certs::CertEntry::from_pem(
                stored.chain_pem.as_bytes(),
                stored.key_pem.as_bytes(),
            )
            .map(|e| e.info)
            .map_err(|e| format!("stored certificate unusable: {e}")),
            Ok(None) => Err(String::new()),
            Err(e) => Err(e.to_string()),
        };
        let status = store.load_status(&host).ok().flatten();
        let state = if !configured.contains(&host) {
            "removed".to_owned()
        } else if let Some(s) = &status {
            s.state.as_str().to_owned()
        } else if info.as_ref().is_ok_and(|i| i.not_after > now) {
            "valid".to_owned()
        } else {
            "pending".to_owned()
        };
        let ran_out = info.as_ref().is_ok_and(|i| i.not_after <= now);
        let state = if ran_out && matches!(state.as_str(), "valid" | "renewing" | "pending") {
            EXPIRED.to_owned()
        } else {
            state
        };
        let last_error = status
            .as_ref()
            .and_then(|s| s.last_error.clone())
            .or_else(|| info.as_ref().err().filter(|e| !e.is_empty()).cloned())
            .unwrap_or_default();
        let next_attempt = status.and_then(|s| s.next_attempt);
        rows.push(row(host, state, info.ok(), next_attempt, last_error));
    }
    Ok(rows)
}

fn row(
    host: String,
    state: String,
    info: Option<crate::certs::CertInfo>,
    next_attempt: Option<i64>,
    last_error: String,
) -> CertRow {
    let fmt = |t: Option<i64>| {
        t.map(crate::util::format_unix)
            .unwrap_or_else(|| "-".into())
    };
    CertRow {
        host,
        state,
        issuer: info
            .as_ref()
            .map(|i| i.issuer.clone())
            .unwrap_or_else(|| "-".into()),
        serial: info
            .as_ref()
            .map(|i| i.serial.clone())
            .unwrap_or_else(|| "-".into()),
        not_after: fmt(info.as_ref().map(|i| i.not_after)),
        next_attempt: fmt(next_attempt),
        last_error: if last_error.is_empty() {
            "-".into()
        } else {
            last_error
        },
    }
}

fn print_table(rows: &[CertRow], out: &mut dyn Write) -> std::io::Result<()> {
    let header = [
        "HOST",
        "STATE",
        "ISSUER",
        "SERIAL",
        "NOT_AFTER",
        "NEXT_ATTEMPT",
        "LAST_ERROR",
    ];
    let cells: Vec<[&str; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.host.as_str(),
                r.state.as_str(),
                r.issuer.as_str(),
                r.serial.as_str(),
                r.not_after.as_str(),
                r.next_attempt.as_str(),
                r.last_error.as_str(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    for row in std::iter::once(&header).chain(cells.iter()) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
