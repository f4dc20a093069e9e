//! The `validation:` section of the server file: how `mta-stsd validate` and the daemon's
//! watchdog look at each tenant's DNS and policy from the outside.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::field::{Bounds, Diags, Dur, duration_or, nameserver, resolve};

/// Default time between two validations of one tenant.
pub const DEFAULT_VALIDATION_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest interval: below it the watchdog would be a DNS load generator.
const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Default limit of one network step (a DNS query, a connection, a response).
pub const DEFAULT_VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest step limit.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// Default number of tenants validated at once by the watchdog.
const DEFAULT_MAX_CONCURRENT: usize = 4;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawValidation {
    enabled: Option<bool>,
    interval: Option<Dur>,
    timeout: Option<Dur>,
    max_concurrent: Option<Spanned<usize>>,
    #[serde(default)]
    nameservers: Vec<Spanned<String>>,
    https_port: Option<Spanned<u16>>,
    smtp_port: Option<Spanned<u16>>,
    ca_file: Option<String>,
}

/// Validation settings (`validation:`), shared by `mta-stsd validate` and the watchdog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationConfig {
    /// Whether the daemon runs the watchdog.
    pub enabled: bool,
    /// Time between two validations of one tenant; the tenants are spread over it.
    pub interval: Duration,
    /// Limit of each network step.
    pub timeout: Duration,
    /// Tenants validated at once by the watchdog.
    pub max_concurrent: usize,
    /// Name servers to ask; empty means `acme.preflight.nameservers`, else the system's.
    pub nameservers: Vec<SocketAddr>,
    /// Port the policy is fetched from (443; another one only for tests).
    pub https_port: u16,
    /// Port of the STARTTLS probe (25).
    pub smtp_port: u16,
    /// PEM file of extra trusted roots for the policy fetch (private CAs, tests).
    pub ca_file: Option<PathBuf>,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            enabled: true,
            interval: DEFAULT_VALIDATION_INTERVAL,
            timeout: DEFAULT_VALIDATION_TIMEOUT,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            nameservers: Vec::new(),
            https_port: 443,
            smtp_port: 25,
            ca_file: None,
        }
    }
}

/// Compiles `validation:` (or its absence) over [`ValidationConfig::default`].
pub(super) fn compile_validation(
    raw: Option<&RawValidation>,
    dir: &Path,
    d: &mut Diags,
) -> ValidationConfig {
    let def = ValidationConfig::default();
    let Some(raw) = raw else {
        return def;
    };
    let port = |d: &mut Diags, v: Option<&Spanned<u16>>, field: &str, default: u16| {
        d.ranged(v, field, Bounds::AtLeast(1), default)
    };
    ValidationConfig {
        enabled: raw.enabled.unwrap_or(def.enabled),
        interval: duration_or(raw.interval, MIN_INTERVAL, def.interval),
        timeout: duration_or(raw.timeout, MIN_TIMEOUT, def.timeout),
        max_concurrent: d.ranged(
            raw.max_concurrent.as_ref(),
            "validation.max_concurrent",
            Bounds::Within(1, 256),
            def.max_concurrent,
        ),
        nameservers: d.list(&raw.nameservers, "validation.nameservers", nameserver),
        https_port: port(
            d,
            raw.https_port.as_ref(),
            "validation.https_port",
            def.https_port,
        ),
        smtp_port: port(
            d,
            raw.smtp_port.as_ref(),
            "validation.smtp_port",
            def.smtp_port,
        ),
        ca_file: raw.ca_file.as_deref().map(|f| resolve(dir, f)),
    }
}
