//! The `acme:` section of the server file: CA, account, challenges, DNS preflight, scheduler.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::field::{Bounds, Diags, Dur, duration_or, nameserver, resolve};
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
/// Largest `max_concurrent` accepted.
const MAX_CONCURRENT: usize = 64;
/// Shortest pacing timer; shorter values are raised to it rather than spinning.
const MIN_TIMER: Duration = Duration::from_millis(10);
/// Shortest preflight recheck; shorter values are raised to it rather than asking DNS in a loop.
const MIN_RECHECK: Duration = Duration::from_millis(100);
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
/// [`DEFAULT_RENEW_FRACTION`] in billionths.
const DEFAULT_FRACTION: Fraction = Fraction((DEFAULT_RENEW_FRACTION * 1e9) as u64);

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    #[schemars(with = "String")]
    directory: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    contact: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<RawEab>")]
    eab: Option<Spanned<RawEab>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    trusted_roots: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<Vec<ChallengeKind>>")]
    challenges: Option<Spanned<Vec<Spanned<ChallengeKind>>>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    http_listen: Option<Spanned<String>>,
    #[serde(default)]
    preflight: RawPreflight,
    #[serde(default)]
    schedule: RawSchedule,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawEab {
    key_id: String,
    hmac_key: String,
}

#[derive(Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawPreflight {
    enabled: Option<bool>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    public_addresses: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    nameservers: Vec<Spanned<String>>,
    recheck: Option<Dur>,
}

#[derive(Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[schemars(with = "Option<usize>")]
    max_concurrent: Option<Spanned<usize>>,
    #[schemars(with = "Option<u32>")]
    orders_per_window: Option<Spanned<u32>>,
    window: Option<Dur>,
    backoff_base: Option<Dur>,
    backoff_cap: Option<Dur>,
    #[schemars(with = "Option<f64>")]
    renew_fraction: Option<Spanned<f64>>,
    order_timeout: Option<Dur>,
}

/// An ACME challenge type mta-stsd can answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, schemars::JsonSchema)]
pub enum ChallengeKind {
    /// RFC 8737, answered on the HTTPS listener itself.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// RFC 8555 §8.3, answered on the plain HTTP listener (`http_listen`).
    #[serde(rename = "http-01")]
    Http01,
    /// RFC 8555 §8.4, answered by the built-in DNS zone (`dns:`) for a host whose
    /// `_acme-challenge` name the customer has pointed (CNAME) into that zone.
    #[serde(rename = "dns-01")]
    Dns01,
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
    /// The built-in zone DNS-01 answers are published in (`dns.zone`), when `dns-01` is
    /// among the challenges.
    pub dns01_zone: Option<String>,
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
                renew_fraction: DEFAULT_FRACTION,
                order_timeout: DEFAULT_ORDER_TIMEOUT,
            },
            dns01_zone: None,
        }
    }
}

/// Validates the raw section, part by part in file order; every problem goes to `d`.
pub(super) fn compile(
    raw: &RawAcme,
    public_hostname: Option<&str>,
    public_addresses: &[IpAddr],
    dir: &Path,
    d: &mut Diags,
) -> AcmeConfig {
    let directory = compile_directory(&raw.directory, d);
    let contact = d.list(&raw.contact, "acme.contact", contact_url);
    let eab = raw.eab.as_ref().and_then(|eab| compile_eab(eab, d));
    let trusted_roots = compile_trusted_roots(&raw.trusted_roots, dir, d);
    let challenges = compile_challenges(raw.challenges.as_ref(), d);
    let http_listen = compile_http_listen(raw, &challenges, d);
    // DNS-01 alone never needs the host to point here, only its challenge CNAME.
    let needed = challenges != [ChallengeKind::Dns01];
    let preflight = compile_preflight(
        &raw.preflight,
        public_hostname,
        public_addresses,
        &raw.directory,
        needed,
        d,
    );
    let schedule = compile_schedule(&raw.schedule, d);
    AcmeConfig {
        directory,
        contact,
        eab,
        trusted_roots,
        challenges,
        http_listen,
        preflight,
        schedule,
        dns01_zone: None,
    }
}

/// DNS-01 is answered by the built-in zone: it needs a `dns:` section, whose zone it records.
pub(super) fn link_dns01(raw: &RawAcme, acme: &mut AcmeConfig, zone: Option<&str>, d: &mut Diags) {
    if !acme.challenges.contains(&ChallengeKind::Dns01) {
        return;
    }
    match zone {
        Some(zone) => acme.dns01_zone = Some(zone.to_owned()),
        None => challenge_error(
            raw,
            "dns-01 is answered by the built-in DNS zone: it needs a dns: section",
            d,
        ),
    }
}

/// A directory URL or one of the Let's Encrypt aliases.
fn compile_directory(raw: &Spanned<String>, d: &mut Diags) -> String {
    match raw.value.trim() {
        "letsencrypt" => LETSENCRYPT.into(),
        "letsencrypt-staging" => LETSENCRYPT_STAGING.into(),
        url if url.starts_with("https://") && url.len() > "https://".len() => url.into(),
        other => {
            d.error(
                &raw.referenced,
                "acme.directory",
                format!(
                    "{other:?} is not an https:// URL, \"letsencrypt\" or \"letsencrypt-staging\""
                ),
            );
            String::new()
        }
    }
}

/// An account contact as the CA wants it, `mailto:` with or without the prefix written.
fn contact_url(text: &str) -> Result<String, String> {
    let address = text.trim().trim_start_matches("mailto:");
    let valid = address
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && normalize_hostname(domain).is_ok());
    if valid {
        Ok(format!("mailto:{address}"))
    } else {
        Err(format!("{text:?} is not an e-mail address"))
    }
}

/// The EAB key pair, its HMAC key decoded from the base64url the CA hands out.
fn compile_eab(raw: &Spanned<RawEab>, d: &mut Diags) -> Option<Eab> {
    let key = raw.value.hmac_key.trim().trim_end_matches('=');
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(key) {
        Ok(hmac_key) if !hmac_key.is_empty() && !raw.value.key_id.is_empty() => Some(Eab {
            key_id: raw.value.key_id.clone(),
            hmac_key,
        }),
        Ok(_) => {
            let message = "key_id and hmac_key must not be empty".into();
            d.error(&raw.referenced, "acme.eab", message);
            None
        }
        Err(e) => {
            let message = format!("not base64url as the CA gives it: {e}");
            d.error(&raw.referenced, "acme.eab.hmac_key", message);
            None
        }
    }
}

/// Extra roots, resolved against the configuration directory; a missing file is an error
/// here rather than a failed TLS handshake with the CA later.
fn compile_trusted_roots(raw: &[Spanned<String>], dir: &Path, d: &mut Diags) -> Vec<PathBuf> {
    let mut roots = Vec::with_capacity(raw.len());
    for (i, root) in raw.iter().enumerate() {
        let path = resolve(dir, &root.value);
        if !path.is_file() {
            d.error(
                &root.referenced,
                &format!("acme.trusted_roots[{i}]"),
                format!("{} is not a readable file", path.display()),
            );
        }
        roots.push(path);
    }
    roots
}

/// The challenge types in order of preference, repeats dropped; TLS-ALPN-01 when unset.
fn compile_challenges(
    raw: Option<&Spanned<Vec<Spanned<ChallengeKind>>>>,
    d: &mut Diags,
) -> Vec<ChallengeKind> {
    let Some(list) = raw else {
        return vec![ChallengeKind::TlsAlpn01];
    };
    let mut challenges = Vec::new();
    for c in &list.value {
        if !challenges.contains(&c.value) {
            challenges.push(c.value);
        }
    }
    if challenges.is_empty() {
        d.error(
            &list.referenced,
            "acme.challenges",
            "list at least one of tls-alpn-01, http-01, dns-01".into(),
        );
        challenges.push(ChallengeKind::TlsAlpn01);
    }
    challenges
}

/// An error about `acme.challenges`, at its line (or the section's when it is not set).
fn challenge_error(raw: &RawAcme, why: &str, d: &mut Diags) {
    let at = raw
        .challenges
        .as_ref()
        .map_or(raw.directory.referenced, |c| c.referenced);
    d.error(&at, "acme.challenges", why.into());
}

/// The HTTP-01 listener, which HTTP-01 cannot do without.
fn compile_http_listen(
    raw: &RawAcme,
    challenges: &[ChallengeKind],
    d: &mut Diags,
) -> Option<SocketAddr> {
    let http_listen = raw
        .http_listen
        .as_ref()
        .and_then(|l| d.address(l, "acme.http_listen", "\"0.0.0.0:80\""));
    if challenges.contains(&ChallengeKind::Http01) && raw.http_listen.is_none() {
        challenge_error(
            raw,
            "http-01 needs acme.http_listen (e.g. \"0.0.0.0:80\")",
            d,
        );
    }
    http_listen
}

/// DNS preflight; enabled, it needs something to compare the tenants' records with. Off when
/// not `needed` (only DNS-01 configured).
fn compile_preflight(
    raw: &RawPreflight,
    public_hostname: Option<&str>,
    top_level_addresses: &[IpAddr],
    directory: &Spanned<String>,
    needed: bool,
    d: &mut Diags,
) -> Preflight {
    let mut public_addresses = d.list(
        &raw.public_addresses,
        "acme.preflight.public_addresses",
        super::server::ip_address,
    );
    // The top-level `public_addresses` means the same for every check of "points here".
    for ip in top_level_addresses {
        if !public_addresses.contains(ip) {
            public_addresses.push(*ip);
        }
    }
    let preflight = Preflight {
        enabled: needed && raw.enabled.unwrap_or(true),
        public_hostname: public_hostname.map(str::to_owned),
        public_addresses,
        nameservers: d.list(&raw.nameservers, "acme.preflight.nameservers", nameserver),
        recheck: duration_or(raw.recheck, MIN_RECHECK, DEFAULT_PREFLIGHT_RECHECK),
    };
    if preflight.enabled
        && preflight.public_hostname.is_none()
        && preflight.public_addresses.is_empty()
    {
        d.error(
            &directory.referenced,
            "acme.preflight",
            "DNS preflight needs public_hostname or public_addresses (top level) or acme.preflight.public_addresses \
             to know what \"points here\" means; or set acme.preflight.enabled: false"
                .into(),
        );
    }
    preflight
}

/// Order pacing over the defaults.
fn compile_schedule(raw: &RawSchedule, d: &mut Diags) -> Schedule {
    let timer = |value: Option<Dur>, default| duration_or(value, MIN_TIMER, default);
    let backoff_base = timer(raw.backoff_base, DEFAULT_BACKOFF_BASE);
    Schedule {
        max_concurrent: d.ranged(
            raw.max_concurrent.as_ref(),
            "acme.schedule.max_concurrent",
            Bounds::Within(1, MAX_CONCURRENT),
            DEFAULT_MAX_CONCURRENT,
        ),
        orders_per_window: d.ranged(
            raw.orders_per_window.as_ref(),
            "acme.schedule.orders_per_window",
            Bounds::AtLeast(1),
            DEFAULT_ORDERS_PER_WINDOW,
        ),
        window: timer(raw.window, DEFAULT_WINDOW),
        backoff_base,
        // A cap below the first wait would shorten the waits it is meant to bound.
        backoff_cap: timer(raw.backoff_cap, DEFAULT_BACKOFF_CAP).max(backoff_base),
        renew_fraction: compile_renew_fraction(raw.renew_fraction.as_ref(), d),
        order_timeout: timer(raw.order_timeout, DEFAULT_ORDER_TIMEOUT),
    }
}

/// The renewal point, strictly inside the lifetime.
fn compile_renew_fraction(raw: Option<&Spanned<f64>>, d: &mut Diags) -> Fraction {
    let Some(v) = raw else {
        return DEFAULT_FRACTION;
    };
    if v.value > 0.0 && v.value < 1.0 {
        Fraction(((v.value * 1e9) as u64).max(1))
    } else {
        d.error(
            &v.referenced,
            "acme.schedule.renew_fraction",
            format!("{} is not between 0 and 1 (exclusive)", v.value),
        );
        DEFAULT_FRACTION
    }
}
