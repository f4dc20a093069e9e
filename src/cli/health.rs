//! `mta-stsd health`: asks a running daemon's admin listener whether it is ready (or alive),
//! so a container health check needs nothing but the binary itself (no curl in the image).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Options of `health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The admin listener, e.g. `http://127.0.0.1:9180`.
    #[arg(
        long,
        value_name = "URL",
        env = "MTA_STSD_ADMIN_URL",
        default_value = "http://127.0.0.1:9180"
    )]
    pub admin: String,
    /// What to ask: `ready` (`/readyz`: the HTTPS listener is serving) or `live`
    /// (`/healthz`: the process answers at all).
    #[arg(long, value_enum, default_value_t = Probe::Ready)]
    pub probe: Probe,
    /// Give up after this long (`5s`, `500ms`); no answer in time is a failure.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = crate::util::parse_duration)]
    pub timeout: Duration,
    /// File holding the admin bearer token. The probes need none; send it when a proxy in
    /// front of the admin listener asks for it.
    #[arg(long, value_name = "FILE", env = "MTA_STSD_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// The two probes of the admin listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Probe {
    /// `/readyz`: 200 once the HTTPS listener serves.
    Ready,
    /// `/healthz`: 200 while the process runs.
    Live,
}

impl Probe {
    fn path(self) -> &'static str {
        match self {
            Probe::Ready => "/readyz",
            Probe::Live => "/healthz",
        }
    }
}

/// Exit 0 with the daemon's answer on `out` when the probe answers 200; an error (exit 1,
/// the reason on stderr) when it answers anything else, nothing listens, or time runs out.
pub(super) fn health(args: &HealthArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let token = args
        .token_file
        .as_deref()
        .map(crate::admin::read_token)
        .transpose()?;
    let path = args.probe.path();
    let body = super::admin_client::get_blocking(&args.admin, path, token.as_deref(), args.timeout)
        .map_err(|e| e.context(format!("health check of {}{path} failed", args.admin)))?;
    writeln!(
        out,
        "{}{path}: {}",
        args.admin.trim_end_matches('/'),
        String::from_utf8_lossy(&body).trim()
    )?;
    Ok(ExitCode::SUCCESS)
}
