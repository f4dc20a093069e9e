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

#[derive(Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawValidation {
    enabled: Option<bool>,
    interval: Option<Dur>,
    timeout: Option<Dur>,
    #[schemars(with = "Option<usize>")]
    max_concurrent: Option<Spanned<usize>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    nameservers: Vec<Spanned<String>>,
    #[schemars(with = "Option<u16>")]
    https_port: Option<Spanned<u16>>,
    #[schemars(with = "Option<u16>")]
    smtp_port: Option<Spanned<u16>>,
    ca_file: Option<String>,
    starttls: Option<bool>,
    #[schemars(with = "Option<String>")]
    ehlo_name: Option<Spanned<String>>,
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
    /// PEM file of extra trusted roots for the policy fetch and the STARTTLS probe (private
    /// CAs, tests).
    pub ca_file: Option<PathBuf>,
    /// Whether the watchdog probes each MX host with STARTTLS (check `mx-starttls`).
    pub starttls: bool,
    /// The name the probe says in EHLO; `None` means `public_hostname`, else the host name.
    pub ehlo_name: Option<String>,
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
            starttls: true,
            ehlo_name: None,
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
        starttls: raw.starttls.unwrap_or(def.starttls),
        ehlo_name: raw.ehlo_name.as_ref().and_then(|n| ehlo_name(n, d)),
    }
}

/// `validation.ehlo_name`: a domain name or address literal, as EHLO takes (RFC 5321 §4.1.1.1).
fn ehlo_name(name: &Spanned<String>, d: &mut Diags) -> Option<String> {
    let text = name.value.trim();
    let ok = !text.is_empty() && text.len() <= 255 && text.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        return Some(text.to_owned());
    }
    d.error(
        &name.referenced,
        "validation.ehlo_name",
        format!("{text:?} is not a domain name or address literal"),
    );
    None
}

#[cfg(test)]
mod tests {
    use crate::config::parse_server_config;
    use std::path::Path;

    const BASE: &str = "listen: \"127.0.0.1:443\"\nstate_dir: s\nissuer: internal\n";

    #[test]
    fn absent_means_the_defaults() {
        let cfg = parse_server_config(Path::new("/c"), BASE).unwrap();
        assert_eq!(cfg.validation, super::ValidationConfig::default());
        assert!(cfg.public_addresses.is_empty());
    }

    #[test]
    fn every_key_is_read_and_paths_resolve_against_the_directory() {
        let yaml = format!(
            "{BASE}public_addresses: [\"192.0.2.1\", \"2001:db8::1\"]\nvalidation:\n  enabled: false\n  interval: 2h\n  timeout: 3s\n  max_concurrent: 2\n  nameservers: [\"127.0.0.1:5353\", \"10.0.0.1\"]\n  https_port: 8443\n  smtp_port: 2525\n  ca_file: roots.pem\n  starttls: false\n  ehlo_name: probe.example.net\n"
        );
        let cfg = parse_server_config(Path::new("/c"), &yaml).unwrap();
        let v = &cfg.validation;
        assert!(!v.enabled);
        assert_eq!(v.interval.as_secs(), 7200);
        assert_eq!(v.timeout.as_secs(), 3);
        assert_eq!(v.max_concurrent, 2);
        assert_eq!(v.nameservers.len(), 2);
        assert_eq!(v.nameservers[1].port(), 53);
        assert_eq!((v.https_port, v.smtp_port), (8443, 2525));
        assert_eq!(v.ca_file.as_deref(), Some(Path::new("/c/roots.pem")));
        assert_eq!(cfg.public_addresses.len(), 2);
        assert!(!v.starttls);
        assert_eq!(v.ehlo_name.as_deref(), Some("probe.example.net"));
    }

    #[test]
    fn bad_values_are_errors_at_their_field() {
        let yaml = format!(
            "{BASE}public_addresses: [\"mta\"]\nvalidation:\n  max_concurrent: 0\n  https_port: 0\n"
        );
        let errs: Vec<String> = parse_server_config(Path::new("/c"), &yaml)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs[0].contains(":4:") && errs[0].contains("public_addresses[0]"),
            "{errs:#?}"
        );
        assert!(
            errs[0].contains("\"mta\" is not an IP address"),
            "{errs:#?}"
        );
        assert!(errs[1].contains("validation.max_concurrent"), "{errs:#?}");
        assert!(errs[2].contains("validation.https_port"), "{errs:#?}");
    }

    #[test]
    fn top_level_addresses_also_satisfy_the_acme_preflight() {
        let yaml = "listen: \"127.0.0.1:443\"\nstate_dir: s\nissuer: acme\npublic_addresses: [\"192.0.2.1\"]\nacme:\n  directory: https://ca.example/dir\n  contact: [\"mailto:a@example.com\"]\n  preflight:\n    public_addresses: [\"192.0.2.2\"]\n";
        let cfg = parse_server_config(Path::new("/c"), yaml).unwrap_or_else(|e| panic!("{e:#?}"));
        let crate::config::IssuerConfig::Acme(acme) = &cfg.issuer else {
            panic!("acme");
        };
        let ips = |v: &[std::net::IpAddr]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            ips(&acme.preflight.public_addresses),
            ["192.0.2.2", "192.0.2.1"]
        );
        assert_eq!(ips(&cfg.public_addresses), ["192.0.2.1", "192.0.2.2"]);
    }
}
