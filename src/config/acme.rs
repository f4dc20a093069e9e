//! The `acme:` section of the server file: CA, account, challenges, DNS preflight, scheduler.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::field::Dur;
use super::names::normalize_hostname;

/// Let's Encrypt production directory.
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt staging directory: same protocol, untrusted root, far higher limits.
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Default new orders per window: Let's Encrypt allows 300 new orders per account per 3 hours;
/// a third of that leaves room for manual orders and for a second instance.
const DEFAULT_ORDERS_PER_WINDOW: u32 = 100;
/// Default window of the order limit (Let's Encrypt's own window).
const DEFAULT_WINDOW: Duration = Duration::from_secs(3 * 3600);
/// Default orders in flight at once: each holds a challenge open on our listener.
const DEFAULT_MAX_CONCURRENT: usize = 4;
/// First retry after a failure. Let's Encrypt allows 5 failed validations per host per hour,
/// so 5, 10, 20, 40 minutes never reach it.
const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(5 * 60);
/// Longest wait between attempts for one host.
const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(12 * 3600);
/// How often a host whose DNS does not point here yet is looked at again.
const DEFAULT_PREFLIGHT_RECHECK: Duration = Duration::from_secs(15 * 60);
/// How long one order may take from creation to certificate.
const DEFAULT_ORDER_TIMEOUT: Duration = Duration::from_secs(120);
/// Renew at two thirds of the lifetime (30 days before expiry for a 90-day certificate).
const DEFAULT_RENEW_FRACTION: f64 = 2.0 / 3.0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    directory: Spanned<String>,
    #[serde(default)]
    contact: Vec<Spanned<String>>,
    #[serde(default)]
    eab: Option<Spanned<RawEab>>,
    #[serde(default)]
    trusted_roots: Vec<Spanned<String>>,
    #[serde(default)]
    challenges: Option<Spanned<Vec<Spanned<ChallengeKind>>>>,
    #[serde(default)]
    http_listen: Option<Spanned<String>>,
    #[serde(default)]
    preflight: RawPreflight,
    #[serde(default)]
    schedule: RawSchedule,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEab {
    key_id: String,
    hmac_key: String,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPreflight {
    enabled: Option<bool>,
    #[serde(default)]
    public_addresses: Vec<Spanned<String>>,
    #[serde(default)]
    nameservers: Vec<Spanned<String>>,
    recheck: Option<Dur>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    max_concurrent: Option<Spanned<usize>>,
    orders_per_window: Option<Spanned<u32>>,
    window: Option<Dur>,
    backoff_base: Option<Dur>,
    backoff_cap: Option<Dur>,
    renew_fraction: Option<Spanned<f64>>,
    order_timeout: Option<Dur>,
}

/// An ACME challenge type mta-stsd can answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
pub enum ChallengeKind {
    /// RFC 8737, answered on the HTTPS listener itself.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// RFC 8555 §8.3, answered on the plain HTTP listener (`http_listen`).
    #[serde(rename = "http-01")]
    Http01,
}

/// External Account Binding (RFC 8555 §7.3.4), required by ZeroSSL, Google and many
/// enterprise CAs.
#[derive(Clone, PartialEq, Eq)]
pub struct Eab {
    /// Key identifier given by the CA.
    pub key_id: String,
    /// The decoded HMAC key.
    pub hmac_key: Vec<u8>,
}

impl std::fmt::Debug for Eab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eab")
            .field("key_id", &self.key_id)
            .field("hmac_key", &"<redacted>")
            .finish()
    }
}

/// DNS preflight: only order for hosts that already point at this server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preflight {
    /// Off: order for every tenant straight away (a failed validation costs CA rate limits).
    pub enabled: bool,
    /// A CNAME to this name passes (the server file's `public_hostname`).
    pub public_hostname: Option<String>,
    /// An A/AAAA record with one of these addresses passes.
    pub public_addresses: Vec<IpAddr>,
    /// Name servers to ask; empty means the system resolver configuration.
    pub nameservers: Vec<SocketAddr>,
    /// How soon a host that failed preflight is checked again.
    pub recheck: Duration,
}

/// A fraction in billionths, so the configuration stays `Eq` and tiny test values survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fraction(pub u64);

impl Fraction {
    /// `part` of `whole` seconds.
    pub fn of(self, whole: i64) -> i64 {
        let v = i128::from(whole) * i128::from(self.0) / 1_000_000_000;
        i64::try_from(v).unwrap_or(i64::MAX)
    }
}

/// Pace of orders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Orders in flight at once.
    pub max_concurrent: usize,
    /// New orders allowed per `window`, across all tenants.
    pub orders_per_window: u32,
    /// Length of the sliding window of the order limit.
    pub window: Duration,
    /// Wait after the first failure; doubles with each further failure (with jitter).
    pub backoff_base: Duration,
    /// Longest wait after failures.
    pub backoff_cap: Duration,
    /// Renew when this fraction of the lifetime has passed (unless the CA's ARI says when).
    pub renew_fraction: Fraction,
    /// Longest time one order may take.
    pub order_timeout: Duration,
}

/// The validated `acme:` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeConfig {
    /// Directory URL of the CA.
    pub directory: String,
    /// Account contacts, as `mailto:` URLs.
    pub contact: Vec<String>,
    /// External Account Binding, when the CA requires it.
    pub eab: Option<Eab>,
    /// Extra PEM files trusted for the CA's API (beside the system roots).
    pub trusted_roots: Vec<PathBuf>,
    /// Challenge types, in order of preference.
    pub challenges: Vec<ChallengeKind>,
    /// Plain-HTTP listener for HTTP-01.
    pub http_listen: Option<SocketAddr>,
    /// DNS preflight settings.
    pub preflight: Preflight,
    /// Order pacing.
    pub schedule: Schedule,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            directory: LETSENCRYPT_STAGING.into(),
            contact: Vec::new(),
            eab: None,
            trusted_roots: Vec::new(),
            challenges: vec![ChallengeKind::TlsAlpn01],
            http_listen: None,
            preflight: Preflight {
                enabled: true,
                public_hostname: None,
                public_addresses: Vec::new(),
                nameservers: Vec::new(),
                recheck: DEFAULT_PREFLIGHT_RECHECK,
            },
            schedule: Schedule {
                max_concurrent: DEFAULT_MAX_CONCURRENT,
                orders_per_window: DEFAULT_ORDERS_PER_WINDOW,
                window: DEFAULT_WINDOW,
                backoff_base: DEFAULT_BACKOFF_BASE,
                backoff_cap: DEFAULT_BACKOFF_CAP,
                renew_fraction: Fraction((DEFAULT_RENEW_FRACTION * 1e9) as u64),
                order_timeout: DEFAULT_ORDER_TIMEOUT,
            },
        }
    }
}

/// Validates the raw section; every problem goes to `err(location, field, message)`.
pub(super) fn compile(
    raw: &RawAcme,
    public_hostname: Option<&str>,
    resolve: &dyn Fn(&str) -> PathBuf,
    err: &mut dyn FnMut(&Location, &str, String),
) -> AcmeConfig {
    let mut cfg = AcmeConfig::default();

    let dir = raw.directory.value.trim();
    cfg.directory = match dir {
        "letsencrypt" => LETSENCRYPT.into(),
        "letsencrypt-staging" => LETSENCRYPT_STAGING.into(),
        url if url.starts_with("https://") && url.len() > "https://".len() => url.into(),
        other => {
            err(
                &raw.directory.referenced,
                "acme.directory",
                format!(
                    "{other:?} is not an https:// URL, \"letsencrypt\" or \"letsencrypt-staging\""
                ),
            );
            String::new()
        }
    };

    for (i, c) in raw.contact.iter().enumerate() {
        let address = c.value.trim().trim_start_matches("mailto:");
        let valid = address
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && normalize_hostname(domain).is_ok());
        if valid {
            cfg.contact.push(format!("mailto:{address}"));
        } else {
            err(
                &c.referenced,
                &format!("acme.contact[{i}]"),
                format!("{:?} is not an e-mail address", c.value),
            );
        }
    }

    if let Some(eab) = &raw.eab {
        let key = eab.value.hmac_key.trim().trim_end_matches('=');
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(key) {
            Ok(hmac_key) if !hmac_key.is_empty() && !eab.value.key_id.is_empty() => {
                cfg.eab = Some(Eab {
                    key_id: eab.value.key_id.clone(),
                    hmac_key,
                })
            }
            Ok(_) => err(
                &eab.referenced,
                "acme.eab",
                "key_id and hmac_key must not be empty".into(),
            ),
            Err(e) => err(
                &eab.referenced,
                "acme.eab.hmac_key",
                format!("not base64url as the CA gives it: {e}"),
            ),
        }
    }

    for (i, root) in raw.trusted_roots.iter().enumerate() {
        let path = resolve(&root.value);
        if !path.is_file() {
            err(
                &root.referenced,
                &format!("acme.trusted_roots[{i}]"),
                format!("{} is not a readable file", path.display()),
            );
        }
        cfg.trusted_roots.push(path);
    }

    if let Some(list) = &raw.challenges {
        cfg.challenges.clear();
        for c in &list.value {
            if !cfg.challenges.contains(&c.value) {
                cfg.challenges.push(c.value);
            }
        }
        if cfg.challenges.is_empty() {
            err(
                &list.referenced,
                "acme.challenges",
                "list at least one of tls-alpn-01, http-01".into(),
            );
            cfg.challenges.push(ChallengeKind::TlsAlpn01);
        }
    }

    if let Some(listen) = &raw.http_listen {
        match listen.value.parse::<SocketAddr>() {
            Ok(addr) => cfg.http_listen = Some(addr),
            Err(_) => err(
                &listen.referenced,
                "acme.http_listen",
                format!(
                    "{:?} is not an address:port (e.g. \"0.0.0.0:80\")",
                    listen.value
                ),
            ),
        }
    }
    if cfg.challenges.contains(&ChallengeKind::Http01) && raw.http_listen.is_none() {
        let at = raw
            .challenges
            .as_ref()
            .map(|c| c.referenced)
            .unwrap_or(raw.directory.referenced);
        err(
            &at,
            "acme.challenges",
            "http-01 needs acme.http_listen (e.g. \"0.0.0.0:80\")".into(),
        );
    }

    let p = &raw.preflight;
    cfg.preflight.enabled = p.enabled.unwrap_or(true);
    cfg.preflight.public_hostname = public_hostname.map(str::to_owned);
    for (i, a) in p.public_addresses.iter().enumerate() {
        match a.value.trim().parse::<IpAddr>() {
            Ok(ip) => cfg.preflight.public_addresses.push(ip),
            Err(_) => err(
                &a.referenced,
                &format!("acme.preflight.public_addresses[{i}]"),
                format!("{:?} is not an IP address", a.value),
            ),
        }
    }
    for (i, ns) in p.nameservers.iter().enumerate() {
        let text = ns.value.trim();
        let parsed = text
            .parse::<SocketAddr>()
            .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
        match parsed {
            Ok(addr) => cfg.preflight.nameservers.push(addr),
            Err(_) => err(
                &ns.referenced,
                &format!("acme.preflight.nameservers[{i}]"),
                format!("{text:?} is not an IP address or address:port"),
            ),
        }
    }
    if let Some(Dur(d)) = p.recheck {
        cfg.preflight.recheck = d.max(Duration::from_millis(100));
    }
    if cfg.preflight.enabled
        && cfg.preflight.public_hostname.is_none()
        && cfg.preflight.public_addresses.is_empty()
    {
        err(
            &raw.directory.referenced,
            "acme.preflight",
            "DNS preflight needs public_hostname (top level) or acme.preflight.public_addresses \
             to know what \"points here\" means; or set acme.preflight.enabled: false"
                .into(),
        );
    }

    let s = &raw.schedule;
    let sched = &mut cfg.schedule;
    if let Some(v) = &s.max_concurrent {
        if v.value == 0 || v.value > 64 {
            err(
                &v.referenced,
                "acme.schedule.max_concurrent",
                format!("{} is outside 1..=64", v.value),
            );
        }
        sched.max_concurrent = v.value.clamp(1, 64);
    }
    if let Some(v) = &s.orders_per_window {
        if v.value == 0 {
            err(
                &v.referenced,
                "acme.schedule.orders_per_window",
                "must be at least 1".into(),
            );
        }
        sched.orders_per_window = v.value.max(1);
    }
    for (slot, value) in [
        (&mut sched.window, s.window),
        (&mut sched.backoff_base, s.backoff_base),
        (&mut sched.backoff_cap, s.backoff_cap),
        (&mut sched.order_timeout, s.order_timeout),
    ] {
        if let Some(Dur(d)) = value {
            *slot = d.max(Duration::from_millis(10));
        }
    }
    if sched.backoff_cap < sched.backoff_base {
        sched.backoff_cap = sched.backoff_base;
    }
    if let Some(v) = &s.renew_fraction {
        if !(v.value > 0.0 && v.value < 1.0) {
            err(
                &v.referenced,
                "acme.schedule.renew_fraction",
                format!("{} is not between 0 and 1 (exclusive)", v.value),
            );
        } else {
            sched.renew_fraction = Fraction(((v.value * 1e9) as u64).max(1));
        }
    }
    cfg
}
