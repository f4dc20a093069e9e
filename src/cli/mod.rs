//! The command line: `serve`, `check`, `dns`, `certs`, `ingest-mail`, `reports`, `validate`,
//! `forget`, and around them `health`, `completions`, `man`.

mod admin_client;
mod certs;
mod check;
mod dns;
mod generate;
mod health;
mod reports;
mod retire;
mod validate;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::logging::LogFormat;
use crate::tlsrpt::VerdictStatus;
pub use health::{HealthArgs, Probe};

/// Exit status of `reports` and `certs` when something shown needs attention. Not 2: clap
/// exits 2 on a usage error, and a script must tell "fix me" from "called wrongly".
pub const EXIT_NEEDS_ATTENTION: u8 = 3;

/// Hosted MTA-STS policy server: serves `https://mta-sts.<domain>/.well-known/mta-sts.txt` for
/// many tenant domains, with a certificate per tenant, and tells you the DNS records to publish.
#[derive(Debug, Parser)]
#[command(
    name = "mta-stsd",
    version = crate::util::build::LONG_VERSION,
    propagate_version = true
)]
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
    /// `public_hostname`. With a `dns:` section (delegation mode): the parent zone's NS
    /// records once, and per tenant the CNAMEs the customer creates into the built-in zone.
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
    /// Confirm the immediate removal of a tenant being retired (its file was deleted, or it
    /// says `retire: true`): the running daemon stops serving it at once instead of at the
    /// end of its retirement window, and prints the records to remove.
    Forget {
        /// The tenant's domain.
        domain: String,
        /// The running daemon's admin listener, e.g. `http://127.0.0.1:9180`.
        #[arg(long, value_name = "URL", env = "MTA_STSD_ADMIN_URL")]
        admin: String,
        /// File holding the admin bearer token.
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
    /// gets a warning when failures appear, and "no reports" when none arrived in the window.
    /// `reports show <report-id>` prints one report.
    ///
    /// Exit status: 0 when no tenant shown needs attention, 3 when a tenant shown needs
    /// attention (an enforcing tenant with failures: WARNING), 1 when the command could not
    /// run (configuration, database), 2 on a command-line usage error.
    #[command(args_conflicts_with_subcommands = true)]
    Reports(ReportsArgs),
    /// Print every tenant's certificate state from the state directory, as a table.
    ///
    /// Works without a running daemon: reads the certificates and the last status the ACME
    /// issuer stored (state, next attempt, last error with the CA's detail); in cluster mode
    /// (`store: postgres:`) from the cluster's database, whose schema it never migrates. A
    /// certificate that ran out since the issuer last wrote its status shows as `expired`.
    ///
    /// Exit status: 0 when every certificate is fine or on its way (valid, renewing, pending,
    /// dns-not-ready), 3 when a certificate needs attention (error, backoff or expired), 1 when
    /// the command could not run, 2 on a command-line usage error.
    Certs(ConfigArg),
    /// Check every tenant from the outside, as a sender sees it; one verdict per check.
    ///
    /// The checks: policy-host (`mta-sts.<domain>` is a CNAME to public_hostname or has an
    /// address in public_addresses), policy-fetch (HTTPS to that address with SNI
    /// `mta-sts.<domain>`, certificate verified, 200 without redirect, text/plain, at most
    /// 64 KiB, the body configured now), sts-record (`_mta-sts.<domain>` after CNAMEs: exactly
    /// one valid `v=STSv1` record with the served id), tlsrpt-record (`_smtp._tls.<domain>`:
    /// exactly one `v=TLSRPTv1` with a valid rua, including this server's endpoint when
    /// published), mx (every MX host covered by an mx: pattern, every pattern matching an
    /// MX host) and mx-starttls (each MX host probed on --smtp-port with STARTTLS: an error
    /// names the TLS-RPT result-type a sender would report, no answer is a warning). Each verdict is ok, warning or error with what was seen and what to do.
    ///
    /// Exit status: 0 when no check is an error (warnings allowed), 3 when one is, 1 when the
    /// command could not run, 2 on a command-line usage error.
    Validate(ValidateArgs),
    /// Ask a running daemon's admin listener whether it serves (for container health checks).
    ///
    /// GET `/readyz` (or `/healthz` with `--probe live`) on the admin listener. Exit status 0
    /// when it answers 200, 1 when it answers otherwise, nothing listens or no answer comes
    /// within `--timeout`; the reason goes to stderr.
    Health(HealthArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    ///
    /// bash: `mta-stsd completions bash > /usr/share/bash-completion/completions/mta-stsd`;
    /// zsh: into a directory of `$fpath` as `_mta-stsd`; fish:
    /// `~/.config/fish/completions/mta-stsd.fish` or `/usr/share/fish/vendor_completions.d/`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page mta-stsd(1) as roff to stdout (`mta-stsd man | man -l -`).
    Man {
        /// Write mta-stsd.1 and one page per subcommand (mta-stsd-serve.1, …) into this
        /// directory instead, e.g. `/usr/local/share/man/man1`.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the JSON Schema (draft 2020-12) of a tenant file or of the server file.
    ///
    /// Generated from the types the daemon parses with; the same files are in the
    /// repository's `schema/` directory. Editors with the YAML language server validate and
    /// complete a tenant file whose first line is
    /// `# yaml-language-server: $schema=<URL or path of tenant.schema.json>`.
    Schema {
        /// Which file's schema.
        #[arg(value_enum)]
        kind: SchemaKind,
    },
}

/// The files `schema` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    /// A tenant file (`tenants/*.yaml`): one tenant or a list of tenants.
    Tenant,
    /// The server file (`mta-stsd.yaml`).
    Server,
}

/// Options of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Configuration directory.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this tenant domain; repeat for several. Default: every tenant.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Vec<String>,
    /// Print JSON (one object per tenant, every field) instead of one line per check.
    #[arg(long)]
    pub json: bool,
    /// Ask this name server (repeatable) instead of validation.nameservers or the system's.
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_nameserver)]
    pub nameserver: Vec<std::net::SocketAddr>,
    /// Fetch policies from this port instead of validation.https_port (443); for tests.
    #[arg(long, value_name = "N")]
    pub https_port: Option<u16>,
    /// Port of the MX STARTTLS probe instead of validation.smtp_port (25).
    #[arg(long, value_name = "N")]
    pub smtp_port: Option<u16>,
    /// Do not probe the MX hosts with STARTTLS (check mx-starttls), whatever
    /// validation.starttls says.
    #[arg(long)]
    pub no_starttls: bool,
    /// Trust only the roots in this PEM file for the policy fetch (default: validation.ca_file,
    /// else the system's roots).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// `IP` (port 53) or `IP:PORT`.
fn parse_nameserver(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse::<std::net::SocketAddr>()
        .or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("{text:?} is not an IP address or IP:PORT"))
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
    /// Only tenants with this verdict; repeat or separate by commas for several
    /// (`--verdict warning,no-reports`).
    #[arg(long, value_name = "VERDICT", value_enum, value_delimiter = ',')]
    pub verdict: Vec<VerdictFilter>,
}

/// The verdicts `reports --verdict` selects, named like the table's labels; the JSON's
/// `verdict.status` names are accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerdictFilter {
    /// Testing, clean coverage: can switch to enforce.
    #[value(alias = "ready-to-enforce")]
    Ready,
    /// Testing, something blocks enforcing.
    NotReady,
    /// Enforcing, reports without failures.
    #[value(alias = "healthy")]
    Ok,
    /// Enforcing, senders report failures.
    Warning,
    /// Enforcing, no report in the window.
    NoReports,
    /// Mode none.
    NotApplicable,
}

impl VerdictFilter {
    /// The summary status this filter selects.
    pub fn status(self) -> VerdictStatus {
        match self {
            VerdictFilter::Ready => VerdictStatus::ReadyToEnforce,
            VerdictFilter::NotReady => VerdictStatus::NotReady,
            VerdictFilter::Ok => VerdictStatus::Healthy,
            VerdictFilter::Warning => VerdictStatus::Warning,
            VerdictFilter::NoReports => VerdictStatus::NoReports,
            VerdictFilter::NotApplicable => VerdictStatus::NotApplicable,
        }
    }
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
        Command::Check(args) => check::check(&args.config, out),
        Command::Dns {
            admin: Some(url),
            json,
            token_file,
            ..
        } => dns::dns_from_admin(url, token_file.as_deref(), *json, out),
        Command::Dns { config, json, .. } => dns::dns(&config.config, *json, out),
        Command::Forget {
            domain,
            admin,
            token_file,
        } => retire::forget(admin, token_file.as_deref(), domain, out),
        Command::IngestMail { config, maildir } => Ok(reports::ingest_mail(
            &config.config,
            maildir.as_deref(),
            out,
        )),
        Command::Reports(args) => match &args.show {
            Some(ReportsCommand::Show {
                report_id,
                organization,
                config,
            }) => reports::reports_show(&config.config, report_id, organization.as_deref(), out),
            None => reports::reports(args, out),
        },
        Command::Certs(args) => certs::certs(&args.config, out),
        Command::Validate(args) => validate::validate(args, out),
        Command::Health(args) => health::health(args, out),
        Command::Completions { shell } => generate::completions(*shell, out),
        Command::Man { dir } => generate::man(dir.as_deref(), out),
        Command::Schema { kind } => generate::schema(*kind, out),
    }
}
