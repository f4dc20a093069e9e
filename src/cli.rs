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
                    // Only the running daemon knows (see `--admin`).
                    "ready": null,
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
