//! The command line: `serve`, `check`, `dns`, `certs`, `ingest-mail`, `reports`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
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
        /// Read the running daemon's state from its admin listener (e.g.
        /// `http://127.0.0.1:9180`) instead of the configuration directory. Adds whether each
        /// tenant is ready (its policy served with a valid certificate); in zone output the
        /// `_mta-sts` record of a tenant that is not ready yet is commented out.
        #[arg(long, value_name = "URL", env = "MTA_STSD_ADMIN_URL")]
        admin: Option<String>,
        /// File holding the admin bearer token (with `--admin`).
        #[arg(long, value_name = "FILE", env = "MTA_STSD_ADMIN_TOKEN_FILE")]
        token_file: Option<PathBuf>,
    },
    /// Store one TLS-RPT report mail read from stdin, or every new message of a Maildir.
    ///
    /// Reads one RFC 5322 message on stdin (for a Postfix pipe transport, procmail or a
    /// fetchmail MDA), finds the application/tlsrpt+gzip or +json part (multipart/report with
    /// report-type=tlsrpt, or an attachment named *.json or *.json.gz), checks the DKIM verdict
    /// of a trusted Authentication-Results header (tlsrpt.mail in the server file), routes the
    /// report to its tenant by the JSON's policy-domain and stores it (a duplicate is a success).
    ///
    /// With --maildir, processes DIR/new and the unseen messages of DIR/cur; each handled
    /// message moves to cur/ with the S (seen) flag, failed ones stay where they are.
    ///
    /// Exit status (sysexits): 0 stored or duplicate, 65 not an acceptable report (the MTA
    /// bounces it), 75 temporary failure such as a locked database or a broken configuration
    /// (the MTA keeps the message queued).
    IngestMail {
        /// Configuration directory.
        #[command(flatten)]
        config: ConfigArg,
        /// Process this Maildir instead of reading stdin.
        #[arg(long, value_name = "DIR")]
        maildir: Option<PathBuf>,
    },
    /// Summarize the stored TLS-RPT reports per tenant, with the "ready to enforce" verdict.
    ///
    /// For each tenant: reports and reporting organizations, successful and failed sessions,
    /// failure rate, failures by result-type and by receiving MX, and the verdict: a testing
    /// tenant is "ready to enforce" when reports cover at least tlsrpt.min_days_for_enforce
    /// days with no sts failure caused by the certificate or the MX list; an enforcing tenant
    /// gets a warning when failures appear. `reports show <report-id>` prints one report.
    #[command(args_conflicts_with_subcommands = true)]
    Reports(ReportsArgs),
    /// Print every tenant's certificate state from the state directory, as a table.
    ///
    /// Works without a running daemon: reads the certificates and the last status the ACME
    /// issuer stored (state, next attempt, last error with the CA's detail).
    Certs(ConfigArg),
}

/// Options of `reports`.
#[derive(Debug, Args)]
pub struct ReportsArgs {
    /// `show <report-id>`.
    #[command(subcommand)]
    pub show: Option<ReportsCommand>,
    /// Configuration directory.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this tenant domain.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Window: reports whose period ends after this: `7d`, `24h`, `2w`, or a date
    /// `2025-03-01` (UTC). Default: tlsrpt.min_days_for_enforce days (7 unless configured).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Print JSON (one object per tenant) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Subcommands of `reports`.
#[derive(Debug, Subcommand)]
pub enum ReportsCommand {
    /// Print one stored report, as received, as pretty JSON.
    Show {
        /// The report's `report-id`.
        report_id: String,
        /// The `organization-name`, when several organizations used the same report-id.
        #[arg(long, value_name = "NAME")]
        organization: Option<String>,
        /// Configuration directory.
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Runs a non-serving subcommand, writing to `out`; returns the exit code.
pub fn run_offline(command: &Command, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(_) => unreachable!("serve runs in the async runtime"),
        Command::Check(args) => check(&args.config, out),
        Command::Dns {
            admin: Some(url),
            json,
            token_file,
            ..
        } => dns_from_admin(url, token_file.as_deref(), *json, out),
        Command::Dns { config, json, .. } => dns(&config.config, *json, out),
        Command::IngestMail { config, maildir } => {
            Ok(ingest_mail(&config.config, maildir.as_deref(), out))
        }
        Command::Reports(args) => match &args.show {
            Some(ReportsCommand::Show {
                report_id,
                organization,
                config,
            }) => reports_show(&config.config, report_id, organization.as_deref(), out),
            None => reports(args, out),
        },
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

/// The records one tenant needs. `report_endpoint` is the server's HTTPS report URI for this
/// tenant when the server file publishes it: it joins the tenant's own rua addresses, and the
/// `_smtp._tls` record is printed even for a tenant without any.
pub fn tenant_records(
    tenant: &config::Tenant,
    public_hostname: Option<&str>,
    report_endpoint: Option<&str>,
) -> Vec<Record> {
    let mut records = vec![Record {
        name: format!("_mta-sts.{}.", tenant.domain),
        rtype: "TXT",
        value: tenant.policy.txt_value(),
    }];
    let mut rua = tenant.rua.clone();
    if let Some(uri) = report_endpoint
        && !rua.iter().any(|u| u.eq_ignore_ascii_case(uri))
    {
        rua.push(uri.to_owned());
    }
    if let Some(value) = crate::policy::tlsrpt_txt_value(&rua) {
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
                    // Only the running daemon knows (see `--admin`).
                    "ready": null,
                    "records": tenant_records(t, public, server.tlsrpt.published_endpoint(&t.domain).as_deref()),
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
            let endpoint = server.tlsrpt.published_endpoint(&t.domain);
            for r in tenant_records(t, public, endpoint.as_deref()) {
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

/// `ingest-mail`: never fails with anything but a sysexits code, so a pipe transport always
/// knows whether to bounce (65) or retry (75).
fn ingest_mail(dir: &Path, maildir: Option<&Path>, out: &mut dyn Write) -> ExitCode {
    use crate::tlsrpt::mail::EX_TEMPFAIL;
    let (server, set) = match crate::daemon::load(dir) {
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
    ExitCode::from(crate::tlsrpt::mail::ingest_command(
        &server.tlsrpt,
        &tenants,
        maildir,
        &mut std::io::stdin().lock(),
        out,
        &mut std::io::stderr(),
    ))
}

/// Parses `--since`: `7d`, `24h`, `2w` back from `now`, or a UTC date `YYYY-MM-DD`.
pub fn parse_since(text: &str, now: time::OffsetDateTime) -> Result<time::OffsetDateTime, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a window: use e.g. 7d, 24h, 2w or 2025-03-01");
    if let Some(unit) = text.chars().last().filter(|c| c.is_ascii_alphabetic()) {
        let n: i64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
        if !(0..=36_500).contains(&n) {
            return Err(bad());
        }
        let span = match unit {
            'h' => time::Duration::hours(n),
            'd' => time::Duration::days(n),
            'w' => time::Duration::weeks(n),
            _ => return Err(bad()),
        };
        return Ok(now - span);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| bad())
}

fn reports(args: &ReportsArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let (server, set) = crate::daemon::load(&args.config.config)?;
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
        summaries.push(crate::tlsrpt::tenant_summary(
            store.as_deref(),
            &t.domain,
            t.policy.mode,
            since,
            now,
            &verdict,
        )?);
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
) -> anyhow::Result<Option<std::sync::Arc<dyn crate::tlsrpt::ReportStore>>> {
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

fn reports_show(
    dir: &Path,
    report_id: &str,
    organization: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let server = config::load_server_config(dir).map_err(|diags| {
        let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid server configuration:\n{}", lines.join("\n"))
    })?;
    let mut found = match open_existing_store(&server)? {
        Some(store) => store.get(report_id)?,
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

/// Time allowed for the admin API to answer `dns --admin`.
const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `dns --admin`: the records of the running state, with readiness.
fn dns_from_admin(
    url: &str,
    token_file: Option<&Path>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let token = token_file.map(crate::admin::read_token).transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = runtime.block_on(async {
        tokio::time::timeout(
            ADMIN_TIMEOUT,
            admin_get(url, "/api/v1/tenants", token.as_deref()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no answer within {ADMIN_TIMEOUT:?}"))?
    })?;
    let list: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("{url}: the answer is not JSON: {e}"))?;
    let tenants = list["tenants"].as_array().cloned().unwrap_or_default();
    if json {
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
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &out_list)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "; DNS records for {} tenant(s) served by {url}",
        tenants.len()
    )?;
    for t in &tenants {
        let ready = t["ready"].as_bool().unwrap_or(false);
        for r in t["records"].as_array().into_iter().flatten() {
            let name = r["name"].as_str().unwrap_or_default();
            let rtype = r["type"].as_str().unwrap_or_default();
            let value = r["value"].as_str().unwrap_or_default();
            let line = if rtype == "TXT" {
                format!("{name} IN TXT {}", zone_quote(value))
            } else {
                format!("{name} IN {rtype} {value}")
            };
            if !ready && name.starts_with("_mta-sts.") {
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

/// A GET to a plain-HTTP admin URL (`http://host:port`); the body of a 200 answer.
async fn admin_get(base: &str, path: &str, token: Option<&str>) -> anyhow::Result<Vec<u8>> {
    use http_body_util::BodyExt;
    let uri: http::Uri = base
        .parse()
        .map_err(|e| anyhow::anyhow!("{base:?} is not a URL: {e}"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "{base}: the admin listener speaks plain http://"
    );
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow::anyhow!("{base}: no host:port"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| anyhow::anyhow!("connecting to {authority}: {e}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let prefix = uri.path().trim_end_matches('/');
    let mut req = http::Request::get(format!("{prefix}{path}"))
        .header(http::header::HOST, authority.as_str());
    if let Some(token) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let resp = send
        .send_request(req.body(http_body_util::Empty::<bytes::Bytes>::new())?)
        .await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes().to_vec();
    anyhow::ensure!(
        status.is_success(),
        "{base}{path}: {status}: {}",
        String::from_utf8_lossy(&body).trim()
    );
    Ok(body)
}
