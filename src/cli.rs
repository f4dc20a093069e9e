//! The command line: `serve`, `check`, `dns`, `certs`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, IssuerConfig, ServerConfig, TenantSet};
use crate::policy::zone_quote;

/// Hosted MTA-STS policy server: serves `https://mta-sts.<domain>/.well-known/mta-sts.txt` for
/// many tenant domains, with a certificate per tenant, and tells you the DNS records to publish.
#[derive(Debug, Parser)]
#[command(name = "mta-stsd", version, propagate_version = true)]
pub struct Cli {
    /// Log format: human-readable lines or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "MTA_STSD_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info`, `debug`, `mta_stsd=debug,rustls=warn` (RUST_LOG syntax).
    #[arg(long, global = true, default_value = "info", env = "MTA_STSD_LOG")]
    pub log_level: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The configuration directory option shared by every subcommand.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration directory: holds mta-stsd.yaml and the tenants/ folder.
    #[arg(
        long,
        short = 'c',
        value_name = "DIR",
        env = "MTA_STSD_CONFIG",
        default_value = "/etc/mta-stsd"
    )]
    pub config: PathBuf,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve policies over HTTPS until SIGTERM or SIGINT.
    ///
    /// Tenants whose files have errors are skipped and reported; the others are served.
    Serve(ConfigArg),
    /// Validate the server file and every tenant file; print every error and warning.
    ///
    /// Exit status 0 when there is no error (warnings allowed), 1 otherwise.
    Check(ConfigArg),
    /// Print the DNS records to publish for every tenant, as zone-file lines.
    ///
    /// `_mta-sts.<domain>` TXT with the policy id, `_smtp._tls.<domain>` TXT when the tenant
    /// has TLS-RPT addresses, and `mta-sts.<domain>` CNAME when the server file sets
    /// `public_hostname`.
    Dns {
        /// Configuration directory.
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON (one object per tenant) instead of zone-file lines.
        #[arg(long)]
        json: bool,
    },
    /// Print every tenant's certificate state from the state directory, as a table.
    ///
    /// Works without a running daemon: reads the certificates and the last status the ACME
    /// issuer stored (state, next attempt, last error with the CA's detail).
    Certs(ConfigArg),
}

/// Runs a non-serving subcommand, writing to `out`; returns the exit code.
pub fn run_offline(command: &Command, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(_) => unreachable!("serve runs in the async runtime"),
        Command::Check(args) => check(&args.config, out),
        Command::Dns { config, json } => dns(&config.config, *json, out),
        Command::Certs(args) => certs(&args.config, out),
    }
}

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

fn certs(dir: &Path, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    use crate::certs::store::{CertStore, FileStore};
    let (server, set) = crate::daemon::load(dir)?;
    let now = crate::util::unix_now();
    let configured: std::collections::BTreeSet<String> =
        set.tenants.iter().map(|t| t.host.clone()).collect();
    let mut rows = Vec::new();
    match &server.issuer {
        IssuerConfig::Acme(_) => {
            let store = FileStore::new(&server.state_dir);
            let mut hosts = configured.clone();
            hosts.extend(store.hosts()?);
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
                let last_error = status
                    .as_ref()
                    .and_then(|s| s.last_error.clone())
                    .or_else(|| info.as_ref().err().filter(|e| !e.is_empty()).cloned())
                    .unwrap_or_default();
                rows.push(row(
                    host,
                    state,
                    info.ok(),
                    status.and_then(|s| s.next_attempt),
                    last_error,
                ));
            }
        }
        IssuerConfig::Files {
            dir: files_dir,
            cert_file,
            key_file,
        } => {
            for host in configured {
                let loaded = crate::certs::files::load(files_dir, &host, cert_file, key_file, now);
                let (state, info, error) = match loaded {
                    Ok(entry) => ("valid", Some(entry.info), String::new()),
                    Err(e) => ("error", None, e),
                };
                rows.push(row(host, state.to_owned(), info, None, error));
            }
        }
        IssuerConfig::Internal { .. } => {
            writeln!(
                out,
                "issuer internal: leaves are issued in memory at every start; nothing is stored to show"
            )?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    print_table(&rows, out)?;
    Ok(ExitCode::SUCCESS)
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

fn check(dir: &Path, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let server = match config::load_server_config(dir) {
        Ok(server) => server,
        Err(diags) => {
            for d in &diags {
                writeln!(out, "{d}")?;
            }
            writeln!(
                out,
                "{}: server configuration has {} error(s)",
                dir.join(config::SERVER_FILE).display(),
                diags.len()
            )?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let files = match config::load_tenant_dir(&server.tenants_dir) {
        Ok(files) => files,
        Err(diag) => {
            writeln!(out, "{diag}")?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let file_count = files.len();
    let set = config::assemble(files);
    let mut errors = 0usize;
    let mut warnings = 0usize;
    for d in &set.diagnostics {
        writeln!(out, "{d}")?;
        if d.is_error() {
            errors += 1
        } else {
            warnings += 1
        }
    }
    for line in certificate_problems(&server, &set) {
        writeln!(out, "{line}")?;
        errors += 1;
    }
    writeln!(
        out,
        "checked {} and {file_count} tenant file(s): {} tenant(s) valid, {errors} error(s), {warnings} warning(s)",
        server.file.display(),
        set.tenants.len()
    )?;
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// With `issuer: files`, a tenant without a usable certificate is an error `check` reports.
fn certificate_problems(server: &ServerConfig, set: &TenantSet) -> Vec<String> {
    let IssuerConfig::Files {
        dir,
        cert_file,
        key_file,
    } = &server.issuer
    else {
        return Vec::new();
    };
    let now = crate::util::unix_now();
    set.tenants
        .iter()
        .filter_map(|t| {
            crate::certs::files::load(dir, &t.host, cert_file, key_file, now)
                .err()
                .map(|why| {
                    format!(
                        "{}: error: certificate for {}: {why}",
                        t.source.display(),
                        t.host
                    )
                })
        })
        .collect()
}

/// One DNS record.
#[derive(Debug, serde::Serialize)]
pub struct Record {
    /// Owner name, absolute with the trailing dot.
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub rtype: &'static str,
    /// Record data (unquoted TXT value or CNAME target).
    pub value: String,
}

impl Record {
    /// The zone-file line.
    pub fn zone_line(&self) -> String {
        match self.rtype {
            "TXT" => format!("{} IN TXT {}", self.name, zone_quote(&self.value)),
            _ => format!("{} IN {} {}", self.name, self.rtype, self.value),
        }
    }
}

/// The records one tenant needs.
pub fn tenant_records(tenant: &config::Tenant, public_hostname: Option<&str>) -> Vec<Record> {
    let mut records = vec![Record {
        name: format!("_mta-sts.{}.", tenant.domain),
        rtype: "TXT",
        value: tenant.policy.txt_value(),
    }];
    if let Some(value) = tenant.tlsrpt_txt_value() {
        records.push(Record {
            name: format!("_smtp._tls.{}.", tenant.domain),
            rtype: "TXT",
            value,
        });
    }
    if let Some(target) = public_hostname {
        records.push(Record {
            name: format!("{}.", tenant.host),
            rtype: "CNAME",
            value: format!("{target}."),
        });
    }
    records
}

fn dns(dir: &Path, json: bool, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let (server, set) = crate::daemon::load(dir)?;
    for d in set.diagnostics.iter().filter(|d| d.is_error()) {
        eprintln!("{d}");
    }
    let mut tenants = set.tenants.clone();
    tenants.sort_by(|a, b| a.domain.cmp(&b.domain));
    let public = server.public_hostname.as_deref();
    if json {
        let list: Vec<_> = tenants
            .iter()
            .map(|t| {
                serde_json::json!({
                    "domain": t.domain,
                    "policy_host": t.host,
                    "mode": t.policy.mode,
                    "id": t.policy.id,
                    "records": tenant_records(t, public),
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &list)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "; DNS records for {} tenant(s) of {}",
            tenants.len(),
            server.file.display()
        )?;
        if public.is_none() {
            writeln!(
                out,
                "; set public_hostname in the server file to also print the mta-sts CNAME records"
            )?;
        }
        for t in &tenants {
            for r in tenant_records(t, public) {
                writeln!(out, "{}", r.zone_line())?;
            }
        }
    }
    Ok(if set.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
