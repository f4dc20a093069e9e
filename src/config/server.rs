//! The server file, `mta-stsd.yaml`: listeners, state directory, certificate issuer, limits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::acme::RawAcme;
use super::names::normalize_hostname;
use super::{Diagnostic, yaml_diagnostic, yaml_options};

/// Name of the server file inside the configuration directory.
pub const SERVER_FILE: &str = "mta-stsd.yaml";
/// Default tenants folder inside the configuration directory.
pub const TENANTS_DIR: &str = "tenants";

/// A duration written as seconds (`30`) or with a unit (`500ms`, `10s`, `5m`, `1h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Dur(pub(super) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Dur;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as 30, \"500ms\", \"10s\", \"5m\" or \"1h\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(|s| Dur(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Parses `500ms`, `10s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (use e.g. \"10s\", \"500ms\", \"5m\")"))?;
    match unit.trim() {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        other => Err(format!(
            "unknown duration unit {other:?} (use ms, s, m or h)"
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Spanned<String>,
    state_dir: Spanned<String>,
    #[serde(default)]
    tenants_dir: Option<Spanned<String>>,
    #[serde(default)]
    public_hostname: Option<Spanned<String>>,
    issuer: Spanned<IssuerKind>,
    #[serde(default)]
    internal: Option<RawInternal>,
    #[serde(default)]
    files: Option<Spanned<RawFiles>>,
    #[serde(default)]
    acme: Option<Spanned<RawAcme>>,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum IssuerKind {
    Internal,
    Files,
    Acme,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInternal {
    #[serde(default)]
    leaf_validity_days: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    dir: String,
    #[serde(default)]
    cert_file: Option<String>,
    #[serde(default)]
    key_file: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<Spanned<usize>>,
    handshake_timeout: Option<Dur>,
    header_read_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
    max_connection_age: Option<Dur>,
    max_header_bytes: Option<Spanned<usize>>,
    shutdown_grace: Option<Dur>,
}

/// Connection limits. Defaults suit one instance serving many thousands of tenants on a
/// public address; each exists so a slow or hostile client costs a bounded amount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; further ones wait in the kernel backlog.
    pub max_connections: usize,
    /// Time for a client to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time for a client to send a complete HTTP/1.1 request head.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (also covers an h2
    /// client that never sends its preface).
    pub idle_timeout: Duration,
    /// Longest life of one connection, however busy.
    pub max_connection_age: Duration,
    /// Largest request head (HTTP/1.1) or header list (h2).
    pub max_header_bytes: usize,
    /// Time given to open connections to finish on shutdown.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connection_age: Duration::from_secs(300),
            max_header_bytes: 16 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Where tenant certificates come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssuerConfig {
    /// A local CA in the state directory issues one leaf per tenant (tests, first run, private
    /// deployments).
    Internal {
        /// Lifetime of each leaf.
        leaf_validity: Duration,
    },
    /// PEM files per host, e.g. from cert-manager: `<dir>/<host>/<cert_file>` and `<key_file>`.
    Files {
        /// Directory with one sub-directory per policy host.
        dir: PathBuf,
        /// Certificate chain file name (leaf first).
        cert_file: String,
        /// Private key file name.
        key_file: String,
    },
    /// An ACME CA (Let's Encrypt, ZeroSSL, step-ca, Pebble): one certificate per policy host.
    Acme(Box<super::acme::AcmeConfig>),
}

impl IssuerConfig {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            IssuerConfig::Internal { .. } => "internal",
            IssuerConfig::Files { .. } => "files",
            IssuerConfig::Acme(_) => "acme",
        }
    }
}

/// The validated server configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The configuration directory.
    pub dir: PathBuf,
    /// The server file.
    pub file: PathBuf,
    /// HTTPS listen address.
    pub listen: SocketAddr,
    /// State directory (CA, certificates, report database), absolute or relative to the cwd.
    pub state_dir: PathBuf,
    /// Folder of tenant files.
    pub tenants_dir: PathBuf,
    /// The host customers point `mta-sts.<domain>` at with a CNAME, if any.
    pub public_hostname: Option<String>,
    /// Certificate source.
    pub issuer: IssuerConfig,
    /// Connection limits.
    pub limits: Limits,
}

/// Loads `<dir>/mta-stsd.yaml`, returning every problem found.
pub fn load_server_config(dir: &Path) -> Result<ServerConfig, Vec<Diagnostic>> {
    let file = dir.join(SERVER_FILE);
    let text = std::fs::read_to_string(&file).map_err(|e| {
        vec![Diagnostic::error(
            &file,
            0,
            0,
            "",
            format!("cannot read server file: {e}"),
        )]
    })?;
    let raw: RawServer = serde_saphyr::from_str_with_options(&text, yaml_options())
        .map_err(|e| vec![yaml_diagnostic(&file, &text, &e)])?;
    let mut diags = Vec::new();
    let err =
        |diags: &mut Vec<Diagnostic>, at: &serde_saphyr::Location, field: &str, msg: String| {
            diags.push(Diagnostic::error(&file, at.line(), at.column(), field, msg));
        };

    let listen = raw.listen.value.parse::<SocketAddr>().unwrap_or_else(|_| {
        err(
            &mut diags,
            &raw.listen.referenced,
            "listen",
            format!(
                "{:?} is not an address:port (e.g. \"0.0.0.0:443\" or \"[::]:443\")",
                raw.listen.value
            ),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    let resolve = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    };
    if raw.state_dir.value.is_empty() {
        err(
            &mut diags,
            &raw.state_dir.referenced,
            "state_dir",
            "is empty".into(),
        );
    }
    let state_dir = resolve(&raw.state_dir.value);
    let tenants_dir = raw
        .tenants_dir
        .as_ref()
        .map(|t| resolve(&t.value))
        .unwrap_or_else(|| dir.join(TENANTS_DIR));
    let public_hostname = raw.public_hostname.as_ref().and_then(|h| {
        normalize_hostname(&h.value)
            .map_err(|why| err(&mut diags, &h.referenced, "public_hostname", why))
            .ok()
    });

    let issuer = match raw.issuer.value {
        IssuerKind::Internal => {
            let days = raw
                .internal
                .as_ref()
                .and_then(|i| i.leaf_validity_days.as_ref())
                .map(|d| {
                    if d.value == 0 || d.value > 825 {
                        err(
                            &mut diags,
                            &d.referenced,
                            "internal.leaf_validity_days",
                            format!("{} is outside 1..=825", d.value),
                        );
                    }
                    d.value
                })
                .unwrap_or(90);
            IssuerConfig::Internal {
                leaf_validity: Duration::from_secs(u64::from(days) * 86_400),
            }
        }
        IssuerKind::Files => match &raw.files {
            Some(files) => IssuerConfig::Files {
                dir: resolve(&files.value.dir),
                cert_file: files
                    .value
                    .cert_file
                    .clone()
                    .unwrap_or_else(|| "tls.crt".into()),
                key_file: files
                    .value
                    .key_file
                    .clone()
                    .unwrap_or_else(|| "tls.key".into()),
            },
            None => {
                err(
                    &mut diags,
                    &raw.issuer.referenced,
                    "files",
                    "issuer \"files\" needs a files: section with dir:".into(),
                );
                IssuerConfig::Files {
                    dir: PathBuf::new(),
                    cert_file: String::new(),
                    key_file: String::new(),
                }
            }
        },
        IssuerKind::Acme => match &raw.acme {
            Some(acme) => IssuerConfig::Acme(Box::new(super::acme::compile(
                &acme.value,
                public_hostname.as_deref(),
                &resolve,
                &mut |at, field, msg| err(&mut diags, at, field, msg),
            ))),
            None => {
                err(
                    &mut diags,
                    &raw.issuer.referenced,
                    "acme",
                    "issuer \"acme\" needs an acme: section with at least directory: and contact:"
                        .into(),
                );
                IssuerConfig::Acme(Box::default())
            }
        },
    };

    if raw.acme.is_some() && raw.issuer.value != IssuerKind::Acme {
        let at = &raw
            .acme
            .as_ref()
            .map(|a| a.referenced)
            .unwrap_or(raw.issuer.referenced);
        err(
            &mut diags,
            at,
            "acme",
            "an acme: section needs issuer: acme".into(),
        );
    }

    let mut limits = Limits::default();
    let l = &raw.limits;
    if let Some(v) = &l.max_connections {
        if v.value == 0 {
            err(
                &mut diags,
                &v.referenced,
                "limits.max_connections",
                "must be at least 1".into(),
            );
        }
        limits.max_connections = v.value.max(1);
    }
    if let Some(v) = &l.max_header_bytes {
        if v.value < 8192 {
            err(
                &mut diags,
                &v.referenced,
                "limits.max_header_bytes",
                "must be at least 8192".into(),
            );
        }
        limits.max_header_bytes = v.value.max(8192);
    }
    for (slot, value) in [
        (&mut limits.handshake_timeout, l.handshake_timeout),
        (&mut limits.header_read_timeout, l.header_read_timeout),
        (&mut limits.idle_timeout, l.idle_timeout),
        (&mut limits.max_connection_age, l.max_connection_age),
        (&mut limits.shutdown_grace, l.shutdown_grace),
    ] {
        if let Some(Dur(d)) = value {
            *slot = d.max(Duration::from_millis(10));
        }
    }

    if diags.is_empty() {
        Ok(ServerConfig {
            dir: dir.to_path_buf(),
            file,
            listen,
            state_dir,
            tenants_dir,
            public_hostname,
            issuer,
            limits,
        })
    } else {
        Err(diags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("7 days").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
