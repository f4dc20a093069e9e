//! The command line: `serve`, `check`, `dns`.

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
}

/// Runs a non-serving subcommand, writing to `out`; returns the exit code.
pub fn run_offline(command: &Command, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(_) => unreachable!("serve runs in the async runtime"),
        Command::Check(args) => check(&args.config, out),
        Command::Dns { config, json } => dns(&config.config, *json, out),
    }
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
