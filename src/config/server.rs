//! The server file, `mta-stsd.yaml`: listeners, state directory, certificate issuer, limits.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::acme::RawAcme;
use super::dns::{DnsConfig, RawDns, compile_dns};
use super::dns_update::{RawUpdateTarget, UpdateTarget, compile_dns_update};
use super::field::{Bounds, Diags, Dur, duration_or, resolve};
use super::names::normalize_hostname;
use super::store::{PostgresConfig, RawStore, compile_store};
use super::tlsrpt::{RawTlsRpt, TlsRptConfig, compile_tlsrpt};
use super::validation::{RawValidation, ValidationConfig, compile_validation};
use super::{Diagnostic, yaml_diagnostic, yaml_options};

/// Name of the server file inside the configuration directory.
pub const SERVER_FILE: &str = "mta-stsd.yaml";
/// Default tenants folder inside the configuration directory.
pub const TENANTS_DIR: &str = "tenants";

/// Shortest connection timeout: shorter values are raised to it, as a timer that fires at
/// once would close every connection before its first byte.
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Smallest request-head cap accepted: below it ordinary clients' requests would be refused.
const MIN_HEADER_BYTES: usize = 8192;
/// Default `retire_max_age`: a day, so senders drop a withdrawn policy within one.
const RETIRE_MAX_AGE: Duration = Duration::from_secs(86_400);
/// Default lifetime of an internal leaf, the same as an ACME certificate's.
const DEFAULT_LEAF_VALIDITY_DAYS: u32 = 90;
/// Longest internal leaf lifetime: 825 days is the most Apple's TLS clients accept.
const MAX_LEAF_VALIDITY_DAYS: u32 = 825;

/// The JSON Schema of the server file, from the types it is parsed with.
pub(super) fn raw_schema() -> schemars::Schema {
    schemars::SchemaGenerator::default().into_root_schema_for::<RawServer>()
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Server")]
struct RawServer {
    /// HTTPS address, e.g. `"0.0.0.0:443"` or `"[::]:443"`.
    #[schemars(with = "String")]
    listen: Spanned<String>,
    /// CA, certificates, report database; relative to the configuration directory.
    #[schemars(with = "String")]
    state_dir: Spanned<String>,
    /// Folder of tenant files (relative to the configuration directory); default `tenants`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    tenants_dir: Option<Spanned<String>>,
    /// The host customers CNAME `mta-sts.<domain>` to.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    public_hostname: Option<Spanned<String>>,
    /// Where certificates come from: `internal`, `files` or `acme`.
    #[schemars(with = "IssuerKind")]
    issuer: Spanned<IssuerKind>,
    /// The internal CA (`issuer: internal`).
    #[serde(default)]
    internal: Option<RawInternal>,
    /// Certificates from files, one folder per policy host (`issuer: files`).
    #[serde(default)]
    #[schemars(with = "Option<RawFiles>")]
    files: Option<Spanned<RawFiles>>,
    /// An ACME CA such as Let's Encrypt (`issuer: acme`).
    #[serde(default)]
    #[schemars(with = "Option<RawAcme>")]
    acme: Option<Spanned<RawAcme>>,
    /// Connection limits and timeouts of the HTTPS listener.
    #[serde(default)]
    limits: RawLimits,
    /// TLS settings of the HTTPS listener.
    #[serde(default)]
    tls: RawTls,
    /// The admin listener (plain HTTP): API, probes, metrics.
    #[serde(default)]
    #[schemars(with = "Option<RawAdmin>")]
    admin: Option<Spanned<RawAdmin>>,
    /// Watching the configuration for changes.
    #[serde(default)]
    reload: RawReload,
    /// TLS-RPT (RFC 8460) report intake and storage.
    #[serde(default)]
    #[schemars(with = "Option<RawTlsRpt>")]
    tlsrpt: Option<Spanned<RawTlsRpt>>,
    /// What `/metrics` exports.
    #[serde(default)]
    metrics: RawMetrics,
    /// The built-in authoritative DNS zone (delegated DNS).
    #[serde(default)]
    dns: Option<RawDns>,
    /// RFC 2136 primaries that the tenants' records are kept at.
    #[serde(default)]
    dns_update: Vec<RawUpdateTarget>,
    /// The addresses policy hosts must resolve to (validation, ACME preflight).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    public_addresses: Vec<Spanned<String>>,
    /// The outside checks of `mta-stsd validate` and the watchdog.
    #[serde(default)]
    validation: Option<RawValidation>,
    /// `max_age` of the `mode: none` policy a retiring tenant serves; default `1d`.
    retire_max_age: Option<Dur>,
    /// Cluster mode: what replicas share (default: local files and SQLite, one node).
    #[serde(default)]
    store: Option<RawStore>,
}

#[derive(Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default)]
    per_tenant: Option<PerTenant>,
}

/// Which tenants get their own series in `/metrics` (`metrics.per_tenant`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PerTenant {
    /// Every tenant: a million tenants make a scrape of hundreds of megabytes.
    All,
    /// Only tenants that need attention: not ready, certificate not valid or expiring within
    /// [`PROBLEM_EXPIRY_DAYS`], TLS-RPT failures in the window, a validation check in error.
    /// Aggregates cover the rest.
    #[default]
    Problems,
    /// No per-tenant series; aggregates only.
    None,
}

/// A certificate expiring within this many days makes its tenant a problem: a week more than
/// the 14 days of the expiring-soon alert, so its series exists well before the alert needs it.
pub const PROBLEM_EXPIRY_DAYS: i64 = 21;

/// The `metrics:` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Which tenants get their own series.
    pub per_tenant: PerTenant,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    token_file: Option<String>,
}

#[derive(Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawTls {
    session_resumption: Option<bool>,
}

#[derive(Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawReload {
    #[serde(default)]
    watch: Option<bool>,
    #[serde(default)]
    debounce: Option<Dur>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
enum IssuerKind {
    Internal,
    Files,
    Acme,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawInternal {
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    leaf_validity_days: Option<Spanned<u32>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    dir: String,
    #[serde(default)]
    cert_file: Option<String>,
    #[serde(default)]
    key_file: Option<String>,
}

#[derive(Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[schemars(with = "Option<usize>")]
    max_connections: Option<Spanned<usize>>,
    handshake_timeout: Option<Dur>,
    header_read_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
    max_connection_age: Option<Dur>,
    #[schemars(with = "Option<usize>")]
    max_header_bytes: Option<Spanned<usize>>,
    shutdown_grace: Option<Dur>,
}

/// Connection limits. Defaults suit one instance serving many thousands of tenants on a
/// public address; each exists so a slow or hostile client costs a bounded amount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once. At the cap a newcomer is admitted by closing the oldest
    /// connection that is silent, stuck in its handshake or idle between requests; only when
    /// none is does it wait in the kernel backlog.
    pub max_connections: usize,
    /// Time for a client to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time for a client to send a complete HTTP/1.1 request head, and for an h2 client to
    /// send its preface and first request.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
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

/// TLS settings beyond certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// Offer session resumption (TLS 1.3 tickets, TLS 1.2 tickets and session ids). Off means
    /// every connection pays a full handshake: only useful to measure that cost.
    pub session_resumption: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            session_resumption: true,
        }
    }
}

/// Default admin address: loopback only, so metrics and the API are unreachable from outside
/// unless the operator chooses otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9180";
/// Default quiet period after a file event before reloading: editors and `kubectl` write in
/// several steps within a few milliseconds.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);

/// The admin listener (`/metrics`, `/healthz`, `/readyz`, `/api/v1/…`, `POST /reload`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Plain-HTTP listen address.
    pub listen: SocketAddr,
    /// File holding the bearer token; without it the API is open to whoever can connect.
    pub token_file: Option<PathBuf>,
}

/// How configuration changes are picked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Watch the configuration and tenants directories (SIGHUP and `POST /reload` always work).
    pub watch: bool,
    /// Quiet period after the last file event before a reload starts.
    pub debounce: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            debounce: DEFAULT_DEBOUNCE,
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
    /// `max_age` of the `mode: none` policy a retiring tenant serves (RFC 8461 §8.3), seconds.
    pub retire_max_age: u64,
    /// The host customers point `mta-sts.<domain>` at with a CNAME, if any.
    pub public_hostname: Option<String>,
    /// Certificate source.
    pub issuer: IssuerConfig,
    /// Connection limits.
    pub limits: Limits,
    /// TLS settings.
    pub tls: TlsSettings,
    /// TLS-RPT intake.
    pub tlsrpt: TlsRptConfig,
    /// The admin listener, when the server file has an `admin:` section.
    pub admin: Option<AdminConfig>,
    /// File watching.
    pub reload: ReloadConfig,
    /// What `/metrics` exports.
    pub metrics: MetricsConfig,
    /// The built-in DNS server for a delegated zone, when the file has a `dns:` section.
    pub dns: Option<DnsConfig>,
    /// RFC 2136 update targets (`dns_update:`); empty when the section is absent.
    pub dns_update: Vec<UpdateTarget>,
    /// The addresses `mta-sts.<domain>` may resolve to instead of a CNAME to
    /// `public_hostname` (top-level `public_addresses` and `acme.preflight.public_addresses`).
    pub public_addresses: Vec<IpAddr>,
    /// How tenants are validated from the outside (`validation:`).
    pub validation: ValidationConfig,
    /// Cluster mode on PostgreSQL (`store: postgres:`); `None` is one node on local files.
    pub postgres: Option<PostgresConfig>,
    /// What the file says that works but is probably not meant (`check` prints these).
    pub warnings: Vec<Diagnostic>,
}

impl ServerConfig {
    /// The settings that differ between `self` (running) and `next` and only take effect after
    /// a restart: everything except `public_hostname`, which a reload applies.
    pub fn restart_required(&self, next: &ServerConfig) -> Vec<&'static str> {
        let mut fields = Vec::new();
        let mut cmp = |changed: bool, name: &'static str| {
            if changed {
                fields.push(name);
            }
        };
        cmp(self.listen != next.listen, "listen");
        cmp(self.state_dir != next.state_dir, "state_dir");
        cmp(self.tenants_dir != next.tenants_dir, "tenants_dir");
        cmp(self.retire_max_age != next.retire_max_age, "retire_max_age");
        cmp(self.issuer != next.issuer, "issuer");
        cmp(self.limits != next.limits, "limits");
        cmp(self.tls != next.tls, "tls");
        cmp(self.tlsrpt != next.tlsrpt, "tlsrpt");
        cmp(self.admin != next.admin, "admin");
        cmp(self.reload != next.reload, "reload");
        cmp(self.metrics != next.metrics, "metrics");
        // Its sockets are bound once at start, like the other listeners.
        cmp(self.dns != next.dns, "dns");
        // The publisher is built once at start with its keys, like the DNS server.
        cmp(self.dns_update != next.dns_update, "dns_update");
        // The watchdog is started once with its resolver and roots.
        cmp(self.validation != next.validation, "validation");
        // The pool, the session and the stores are opened once at start.
        cmp(self.postgres != next.postgres, "store");
        cmp(
            self.public_addresses != next.public_addresses,
            "public_addresses",
        );
        fields
    }
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
    parse_server_config(dir, &text)
}

/// Parses and compiles the text of `<dir>/mta-stsd.yaml` without touching the file system:
/// [`load_server_config`] after the read, and the entry point of the fuzz target. Relative
/// paths in it resolve against `dir`; a YAML error is the only diagnostic, as nothing further
/// can be checked.
pub fn parse_server_config(dir: &Path, text: &str) -> Result<ServerConfig, Vec<Diagnostic>> {
    let file = dir.join(SERVER_FILE);
    let raw: RawServer = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| vec![yaml_diagnostic(&file, text, &e)])?;
    let mut diags = Vec::new();
    let mut config = compile(&raw, dir, &mut Diags::new(&file, &mut diags));
    if diags.iter().any(Diagnostic::is_error) {
        Err(diags)
    } else {
        config.warnings = diags;
        Ok(config)
    }
}

/// Compiles every section in file order, so diagnostics come out in that order too.
fn compile(raw: &RawServer, dir: &Path, d: &mut Diags) -> ServerConfig {
    let listen = d
        .address(&raw.listen, "listen", "\"0.0.0.0:443\" or \"[::]:443\"")
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
    if raw.state_dir.value.is_empty() {
        d.error(&raw.state_dir.referenced, "state_dir", "is empty".into());
    }
    let state_dir = resolve(dir, &raw.state_dir.value);
    let tenants_dir = raw
        .tenants_dir
        .as_ref()
        .map_or_else(|| dir.join(TENANTS_DIR), |t| resolve(dir, &t.value));
    let public_hostname = compile_public_hostname(raw, d);
    let public_addresses = d.list(&raw.public_addresses, "public_addresses", ip_address);
    let mut issuer = compile_issuer(raw, dir, public_hostname.as_deref(), &public_addresses, d);
    let public_addresses = with_preflight_addresses(public_addresses, &issuer);
    let limits = compile_limits(&raw.limits, d);
    let tls = TlsSettings {
        session_resumption: raw.tls.session_resumption.unwrap_or(true),
    };
    let admin = raw.admin.as_ref().map(|a| compile_admin(&a.value, dir, d));
    let reload = compile_reload(&raw.reload);
    let dns = compile_zone(raw, &mut issuer, d);
    let dns_update = compile_dns_update(&raw.dns_update, dir, d);
    let tlsrpt = compile_tlsrpt(
        raw.tlsrpt.as_ref(),
        &state_dir,
        dir,
        public_hostname.as_deref(),
        d,
    );
    ServerConfig {
        dir: dir.to_path_buf(),
        file: d.file().to_path_buf(),
        listen,
        state_dir,
        tenants_dir,
        retire_max_age: duration_or(raw.retire_max_age, Duration::from_secs(1), RETIRE_MAX_AGE)
            .as_secs(),
        public_hostname,
        issuer,
        limits,
        tls,
        admin,
        reload,
        metrics: MetricsConfig {
            per_tenant: raw.metrics.per_tenant.unwrap_or_default(),
        },
        tlsrpt,
        dns,
        dns_update,
        public_addresses,
        validation: compile_validation(raw.validation.as_ref(), dir, d),
        postgres: compile_store(raw.store.as_ref(), dir, d),
        warnings: Vec::new(),
    }
}

/// `public_hostname`, normalized.
fn compile_public_hostname(raw: &RawServer, d: &mut Diags) -> Option<String> {
    raw.public_hostname.as_ref().and_then(|h| {
        normalize_hostname(&h.value)
            .map_err(|why| d.error(&h.referenced, "public_hostname", why))
            .ok()
    })
}

/// The built-in zone (`dns:`), which ACME's DNS-01 answers through.
fn compile_zone(raw: &RawServer, issuer: &mut IssuerConfig, d: &mut Diags) -> Option<DnsConfig> {
    let dns = raw.dns.as_ref().map(|raw| compile_dns(raw, d));
    if let (IssuerConfig::Acme(acme), Some(raw_acme)) = (issuer, &raw.acme) {
        let zone = dns.as_ref().map(|z| z.zone.as_str());
        super::acme::link_dns01(&raw_acme.value, acme, zone, d);
    }
    dns
}

/// The top-level `public_addresses` and, with ACME, those of `acme.preflight` (which keeps
/// working as before): both mean "this server" to every check.
fn with_preflight_addresses(mut list: Vec<IpAddr>, issuer: &IssuerConfig) -> Vec<IpAddr> {
    if let IssuerConfig::Acme(acme) = issuer {
        for ip in &acme.preflight.public_addresses {
            if !list.contains(ip) {
                list.push(*ip);
            }
        }
    }
    list
}

/// An IP address item of `public_addresses`.
pub(super) fn ip_address(text: &str) -> Result<IpAddr, String> {
    text.trim()
        .parse::<IpAddr>()
        .map_err(|_| format!("{text:?} is not an IP address"))
}

/// The issuer named by `issuer:` from its section, and an error for an `acme:` section that
/// another issuer would silently ignore.
fn compile_issuer(
    raw: &RawServer,
    dir: &Path,
    public_hostname: Option<&str>,
    public_addresses: &[IpAddr],
    d: &mut Diags,
) -> IssuerConfig {
    let issuer = match raw.issuer.value {
        IssuerKind::Internal => compile_internal(raw.internal.as_ref(), d),
        IssuerKind::Files => compile_files(raw, dir, d),
        IssuerKind::Acme => match &raw.acme {
            Some(acme) => IssuerConfig::Acme(Box::new(super::acme::compile(
                &acme.value,
                public_hostname,
                public_addresses,
                dir,
                d,
            ))),
            None => {
                d.error(
                    &raw.issuer.referenced,
                    "acme",
                    "issuer \"acme\" needs an acme: section with at least directory: and contact:"
                        .into(),
                );
                IssuerConfig::Acme(Box::default())
            }
        },
    };
    if let Some(acme) = &raw.acme
        && raw.issuer.value != IssuerKind::Acme
    {
        d.error(
            &acme.referenced,
            "acme",
            "an acme: section needs issuer: acme".into(),
        );
    }
    issuer
}

/// `issuer: internal`, with its optional `internal:` section.
fn compile_internal(raw: Option<&RawInternal>, d: &mut Diags) -> IssuerConfig {
    let days = d.ranged(
        raw.and_then(|i| i.leaf_validity_days.as_ref()),
        "internal.leaf_validity_days",
        Bounds::Within(1, MAX_LEAF_VALIDITY_DAYS),
        DEFAULT_LEAF_VALIDITY_DAYS,
    );
    IssuerConfig::Internal {
        leaf_validity: Duration::from_secs(u64::from(days) * 86_400),
    }
}

/// `issuer: files`, which needs its `files:` section.
fn compile_files(raw: &RawServer, dir: &Path, d: &mut Diags) -> IssuerConfig {
    let Some(files) = &raw.files else {
        d.error(
            &raw.issuer.referenced,
            "files",
            "issuer \"files\" needs a files: section with dir:".into(),
        );
        return IssuerConfig::Files {
            dir: PathBuf::new(),
            cert_file: String::new(),
            key_file: String::new(),
        };
    };
    let files = &files.value;
    IssuerConfig::Files {
        dir: resolve(dir, &files.dir),
        cert_file: files.cert_file.clone().unwrap_or_else(|| "tls.crt".into()),
        key_file: files.key_file.clone().unwrap_or_else(|| "tls.key".into()),
    }
}

/// The `limits:` section over [`Limits::default`].
fn compile_limits(raw: &RawLimits, d: &mut Diags) -> Limits {
    let def = Limits::default();
    let timeout = |value: Option<Dur>, default| duration_or(value, MIN_TIMEOUT, default);
    Limits {
        max_connections: d.ranged(
            raw.max_connections.as_ref(),
            "limits.max_connections",
            Bounds::AtLeast(1),
            def.max_connections,
        ),
        handshake_timeout: timeout(raw.handshake_timeout, def.handshake_timeout),
        header_read_timeout: timeout(raw.header_read_timeout, def.header_read_timeout),
        idle_timeout: timeout(raw.idle_timeout, def.idle_timeout),
        max_connection_age: timeout(raw.max_connection_age, def.max_connection_age),
        max_header_bytes: d.ranged(
            raw.max_header_bytes.as_ref(),
            "limits.max_header_bytes",
            Bounds::AtLeast(MIN_HEADER_BYTES),
            def.max_header_bytes,
        ),
        shutdown_grace: timeout(raw.shutdown_grace, def.shutdown_grace),
    }
}

/// The warning for an admin listener anyone may reach and use; `serve` logs the same.
const ADMIN_WITHOUT_TOKEN: &str = "not a loopback address and no admin.token_file: anyone who can reach it can read metrics and tenant data and trigger reloads";

/// The `admin:` section.
fn compile_admin(raw: &RawAdmin, dir: &Path, d: &mut Diags) -> AdminConfig {
    let listen = match &raw.listen {
        Some(l) => {
            let listen = d
                .address(l, "admin.listen", "\"127.0.0.1:9180\"")
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
            if !listen.ip().is_loopback() && raw.token_file.is_none() {
                d.warning(
                    &l.referenced,
                    "admin.listen",
                    ADMIN_WITHOUT_TOKEN.to_owned(),
                );
            }
            listen
        }
        None => DEFAULT_ADMIN_LISTEN
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9180))),
    };
    AdminConfig {
        listen,
        token_file: raw.token_file.as_deref().map(|p| resolve(dir, p)),
    }
}

/// The `reload:` section; every value is valid, so nothing is reported.
fn compile_reload(raw: &RawReload) -> ReloadConfig {
    ReloadConfig {
        watch: raw.watch.unwrap_or(true),
        debounce: duration_or(raw.debounce, Duration::ZERO, DEFAULT_DEBOUNCE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TLSRPT_DATABASE;

    fn load_acme(yaml: &str) -> Result<ServerConfig, Vec<Diagnostic>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SERVER_FILE), yaml).unwrap();
        load_server_config(dir.path())
    }

    #[test]
    fn metrics_per_tenant_defaults_to_problems_and_a_typo_is_an_error() {
        let base = "listen: \"127.0.0.1:443\"\nstate_dir: s\nissuer: internal\n";
        assert_eq!(
            load_acme(base).unwrap().metrics.per_tenant,
            PerTenant::Problems
        );
        let all = load_acme(&format!("{base}metrics:\n  per_tenant: all\n")).unwrap();
        assert_eq!(all.metrics.per_tenant, PerTenant::All);
        let errs = load_acme(&format!("{base}metrics:\n  per_tenant: most\n")).unwrap_err();
        let text = errs[0].to_string();
        assert!(text.contains(":5:") && text.contains("most"), "{text}");
        let next = load_acme(&format!("{base}metrics:\n  per_tenant: none\n")).unwrap();
        assert!(all.restart_required(&next).contains(&"metrics"));
        let same = load_acme(&format!("{base}metrics:\n  per_tenant: all\n")).unwrap();
        assert!(!all.restart_required(&same).contains(&"metrics"));
    }

    #[test]
    fn load_is_parse_of_the_file_and_names_it() {
        let yaml = "listen: \"127.0.0.1:443\"\nstate_dir: s\nissuer: internal\nlimits:\n  handshake_timeout: 1y\n";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SERVER_FILE), yaml).unwrap();
        let loaded = load_server_config(dir.path());
        assert_eq!(loaded, parse_server_config(dir.path(), yaml));
        let diags = loaded.unwrap_err();
        assert_eq!(diags[0].file, dir.path().join(SERVER_FILE));
        let fine = "listen: \"127.0.0.1:443\"\nstate_dir: s\nissuer: internal\n";
        let cfg = parse_server_config(dir.path(), fine).unwrap();
        assert_eq!(cfg.file, dir.path().join(SERVER_FILE));
        assert_eq!(cfg.state_dir, dir.path().join("s"));
    }

    #[test]
    fn acme_section_compiles_with_aliases_and_defaults() {
        let cfg = load_acme(
            "listen: \"127.0.0.1:443\"\nstate_dir: s\npublic_hostname: sts.example.net\nissuer: acme\nacme:\n  directory: letsencrypt-staging\n  contact: [ops@example.net]\n",
        )
        .unwrap();
        let IssuerConfig::Acme(acme) = cfg.issuer else {
            panic!("not acme")
        };
        assert_eq!(acme.directory, crate::config::acme::LETSENCRYPT_STAGING);
        assert_eq!(acme.contact, vec!["mailto:ops@example.net"]);
        assert_eq!(
            acme.preflight.public_hostname.as_deref(),
            Some("sts.example.net")
        );
        assert_eq!(acme.schedule.orders_per_window, 100);
    }

    #[test]
    fn acme_errors_name_line_and_field() {
        let diags = load_acme(
            "listen: \"127.0.0.1:443\"\nstate_dir: s\nissuer: acme\nacme:\n  directory: http://ca.example/dir\n  contact: [nobody]\n  challenges: [http-01]\n  preflight:\n    nameservers: [\"not-an-ip\"]\n  schedule:\n    renew_fraction: 1.5\n",
        )
        .unwrap_err();
        let found: Vec<(u64, &str)> = diags.iter().map(|d| (d.line, d.field.as_str())).collect();
        for expected in [
            (5, "acme.directory"),
            (6, "acme.contact[0]"),
            (7, "acme.challenges"),
            (9, "acme.preflight.nameservers[0]"),
            (11, "acme.schedule.renew_fraction"),
        ] {
            assert!(found.contains(&expected), "{expected:?} not in {found:?}");
        }
        // No public_hostname and no public_addresses: preflight cannot know what "here" is.
        assert!(
            found.iter().any(|(_, f)| *f == "acme.preflight"),
            "{found:?}"
        );
    }

    #[test]
    fn dns01_needs_the_built_in_zone_and_alone_needs_no_preflight_target() {
        let acme = "listen: \"127.0.0.1:443\"\nstate_dir: s\nissuer: acme\nacme:\n  directory: letsencrypt\n  contact: [ops@example.net]\n  challenges: [dns-01]\n";
        let diags = load_acme(acme).unwrap_err();
        let found: Vec<(u64, &str)> = diags.iter().map(|d| (d.line, d.field.as_str())).collect();
        assert_eq!(found, [(7, "acme.challenges")], "{diags:?}");
        assert!(diags[0].message.contains("dns:"), "{diags:?}");
        let zone = "dns:\n  listen: \"127.0.0.1:0\"\n  zone: sts.op.example\n  nameservers: [ns1.op.example]\n  hostmaster: h.op.example\n";
        let cfg = load_acme(&format!("{acme}{zone}")).unwrap();
        let IssuerConfig::Acme(acme) = cfg.issuer else {
            panic!("not acme")
        };
        assert_eq!(acme.dns01_zone.as_deref(), Some("sts.op.example"));
        assert!(
            !acme.preflight.enabled,
            "DNS-01 alone checks only its CNAME"
        );
        assert_eq!(acme.challenges, [crate::config::ChallengeKind::Dns01]);
    }

    #[test]
    fn session_resumption_defaults_on_and_can_be_turned_off() {
        let base = "listen: \"127.0.0.1:0\"\nstate_dir: s\nissuer: internal\n";
        assert!(load(base).unwrap().tls.session_resumption);
        let off = load(&format!("{base}tls:\n  session_resumption: false\n")).unwrap();
        assert!(!off.tls.session_resumption);
        let typo = load(&format!("{base}tls:\n  session_resumption: nope\n")).unwrap_err();
        assert!(typo[0].contains(":5:"), "{typo:?}");
        let unknown = load(&format!("{base}tls:\n  tickets: false\n")).unwrap_err();
        assert!(unknown[0].contains("unknown field"), "{unknown:?}");
    }

    fn load(yaml: &str) -> Result<ServerConfig, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SERVER_FILE), yaml).unwrap();
        load_server_config(dir.path()).map_err(|d| {
            d.iter()
                .map(|d| {
                    d.to_string()
                        .replace(&dir.path().display().to_string(), "DIR")
                })
                .collect()
        })
    }

    const BASE: &str = "listen: \"127.0.0.1:0\"\nstate_dir: /var/lib/mta-stsd\nissuer: internal\n";

    #[test]
    fn store_postgres_compiles_and_errors_name_the_field() {
        assert_eq!(load(BASE).unwrap().postgres, None);
        let url = "postgresql://mta:hunter2@127.0.0.1:5432/mta";
        let with = |section: &str| load(&format!("{BASE}store:\n  postgres:\n{section}"));
        let cfg = with(&format!("    url: \"{url}\"\n    replica_name: node-a\n")).unwrap();
        let pg = cfg.postgres.unwrap();
        assert_eq!(
            (pg.url.0.as_str(), pg.replica_name.as_str()),
            (url, "node-a")
        );
        assert!(!pg.replica_name.is_empty());
        let none = with("    replica_name: a\n").unwrap_err();
        assert!(
            none[0].contains(":5:") && none[0].contains("url or url_file"),
            "{none:?}"
        );
        let bad = with("    url: \"postgresql://u:hunter2@h:notaport/x\"\n").unwrap_err();
        assert!(
            bad[0].contains(":6:") && bad[0].contains("store.postgres.url"),
            "{bad:?}"
        );
        assert!(
            !bad[0].contains("hunter2"),
            "the password is never echoed: {bad:?}"
        );
        let missing = with("    url_file: /nonexistent/url\n").unwrap_err();
        assert!(
            missing[0].contains("cannot read /nonexistent/url"),
            "{missing:?}"
        );
        let name = with(&format!("    url: \"{url}\"\n    replica_name: \"a b\"\n")).unwrap_err();
        assert!(name[0].contains("store.postgres.replica_name"), "{name:?}");
    }

    #[test]
    fn tlsrpt_defaults_without_a_section() {
        let cfg = load(BASE).unwrap();
        assert_eq!(
            cfg.tlsrpt,
            TlsRptConfig::defaults(Path::new("/var/lib/mta-stsd"))
        );
        assert_eq!(
            cfg.tlsrpt.database,
            Path::new("/var/lib/mta-stsd/tlsrpt.sqlite3")
        );
        assert_eq!(cfg.tlsrpt.min_days_for_enforce, 7);
        assert!(cfg.tlsrpt.mail.require_dkim_pass);
        assert_eq!(cfg.tlsrpt.published_endpoint("example.com"), None);
    }

    #[test]
    fn tlsrpt_section_compiles() {
        let cfg = load(&format!(
            "{BASE}tlsrpt:\n  report_host: TLSRPT.Operator.Example\n  publish_endpoint: true\n  database: reports.db\n  max_compressed_bytes: 65536\n  max_decompressed_bytes: 1048576\n  retention_days: 30\n  min_days_for_enforce: 14\n  mail:\n    trusted_authserv_ids: [MX.operator.example]\n    require_dkim_pass: false\n"
        ))
        .unwrap();
        let t = &cfg.tlsrpt;
        assert_eq!(t.report_host.as_deref(), Some("tlsrpt.operator.example"));
        assert!(t.database.ends_with("reports.db") && t.database.is_absolute());
        assert_eq!(t.limits.max_compressed, 65536);
        assert_eq!(t.limits.max_decompressed, 1048576);
        assert_eq!((t.retention_days, t.min_days_for_enforce), (30, 14));
        assert_eq!(t.mail.trusted_authserv_ids, ["mx.operator.example"]);
        assert!(!t.mail.require_dkim_pass);
        assert_eq!(
            t.published_endpoint("example.com").as_deref(),
            Some("https://tlsrpt.operator.example/tlsrpt/example.com")
        );
    }

    #[test]
    fn dkim_verification_keys_compile_and_name_a_bad_server() {
        let cfg = load(&format!(
            "{BASE}tlsrpt:\n  mail:\n    verify_dkim: true\n    dns_servers: [\"127.0.0.1:5353\", \"::1\"]\n"
        ))
        .unwrap();
        assert!(cfg.tlsrpt.mail.verify_dkim);
        assert_eq!(
            cfg.tlsrpt.mail.dns_servers,
            [
                "127.0.0.1:5353".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert!(!load(BASE).unwrap().tlsrpt.mail.verify_dkim);
        let errs = load(&format!(
            "{BASE}tlsrpt:\n  mail:\n    dns_servers: [ns.example]\n"
        ))
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs[0]
                .contains(":6:19: error: tlsrpt.mail.dns_servers[0]: \"ns.example\" is not an IP"),
            "{errs:#?}"
        );
    }

    #[test]
    fn tlsrpt_errors_name_line_and_field() {
        let errs = load(&format!(
            "{BASE}tlsrpt:\n  report_host: \"bad host\"\n  max_compressed_bytes: 10\n  retention_days: 0\n"
        ))
        .unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs[0].starts_with("DIR/mta-stsd.yaml:5:16: error: tlsrpt.report_host: "),
            "{errs:#?}"
        );
        assert!(
            errs[1].starts_with(
                "DIR/mta-stsd.yaml:6:25: error: tlsrpt.max_compressed_bytes: 10 is outside"
            ),
            "{errs:#?}"
        );
        assert!(
            errs[2]
                .starts_with("DIR/mta-stsd.yaml:7:19: error: tlsrpt.retention_days: 0 is outside"),
            "{errs:#?}"
        );

        let errs = load(&format!("{BASE}tlsrpt:\n  publish_endpoint: true\n")).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].contains(":5:21: error: tlsrpt.publish_endpoint: needs tlsrpt.report_host"),
            "{errs:#?}"
        );

        let errs = load(&format!(
            "{BASE}tlsrpt:\n  report_host: mta-sts.example.com\n"
        ))
        .unwrap_err();
        assert!(
            errs[0].contains("looks like a tenant policy host"),
            "{errs:#?}"
        );

        let errs = load(&format!("{BASE}tlsrpt:\n  reporthost: x.example\n")).unwrap_err();
        assert!(errs[0].contains("reporthost"), "{errs:#?}");
    }

    #[test]
    fn dns_section_compiles_with_the_default_ttl_and_needs_a_restart() {
        let cfg = load(&format!(
            "{BASE}dns:\n  listen: \"127.0.0.1:5353\"\n  zone: STS.Operator.Example\n  nameservers: [ns1.operator.example, ns2.operator.example]\n  hostmaster: hostmaster.operator.example\n"
        ))
        .unwrap();
        let dns = cfg.dns.clone().unwrap();
        assert_eq!(dns.zone, "sts.operator.example");
        assert_eq!(dns.nameservers.len(), 2);
        assert_eq!(dns.ttl, crate::config::DEFAULT_DNS_TTL);
        let without = load(BASE).unwrap();
        assert!(without.dns.is_none());
        assert!(without.restart_required(&cfg).contains(&"dns"));
        assert!(!cfg.restart_required(&cfg.clone()).contains(&"dns"));
    }

    #[test]
    fn dns_rate_limit_defaults_can_be_changed_or_turned_off() {
        let with = |extra: &str| {
            load(&format!(
                "{BASE}dns:\n  listen: \"127.0.0.1:5353\"\n  zone: z.example\n  nameservers: [ns1.operator.example]\n  hostmaster: h.example\n{extra}"
            ))
        };
        let dns = with("").unwrap().dns.unwrap();
        assert_eq!((dns.rate_per_second, dns.rate_burst), (200, 1000));
        let dns = with("  rate_limit: {per_second: 0}\n")
            .unwrap()
            .dns
            .unwrap();
        assert_eq!((dns.rate_per_second, dns.rate_burst), (0, 1000));
        let dns = with("  rate_limit: {per_second: 50, burst: 10}\n")
            .unwrap()
            .dns
            .unwrap();
        assert_eq!((dns.rate_per_second, dns.rate_burst), (50, 10));
        let errs = with("  rate_limit: {burst: 0}\n").unwrap_err();
        assert!(
            errs[0]
                .starts_with("DIR/mta-stsd.yaml:9:23: error: dns.rate_limit.burst: 0 is outside"),
            "{errs:#?}"
        );
    }

    #[test]
    fn dns_errors_name_line_and_field() {
        let errs = load(&format!(
            "{BASE}dns:\n  listen: \"nowhere\"\n  zone: \"bad zone\"\n  nameservers: [ns1.operator.example, ns1.operator.example]\n  hostmaster: hostmaster.operator.example\n  ttl: 0\n"
        ))
        .unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(
            errs[0].starts_with("DIR/mta-stsd.yaml:5:11: error: dns.listen: "),
            "{errs:#?}"
        );
        assert!(
            errs[1].starts_with("DIR/mta-stsd.yaml:6:9: error: dns.zone: "),
            "{errs:#?}"
        );
        assert!(
            errs[2].starts_with("DIR/mta-stsd.yaml:7:39: error: dns.nameservers[1]: duplicate"),
            "{errs:#?}"
        );
        assert!(
            errs[3].starts_with("DIR/mta-stsd.yaml:9:8: error: dns.ttl: 0 is outside"),
            "{errs:#?}"
        );
        let errs = load(&format!("{BASE}dns:\n  listen: \"127.0.0.1:53\"\n  zone: z.example\n  nameservers: [ns.z.example]\n  hostmaster: h.example\n")).unwrap_err();
        assert!(
            errs[0].starts_with("DIR/mta-stsd.yaml:7:17: error: dns.nameservers[0]: \"ns.z.example\" lies inside dns.zone"),
            "{errs:#?}"
        );
        let errs = load(&format!("{BASE}dns:\n  listen: \"127.0.0.1:53\"\n")).unwrap_err();
        assert!(errs[0].contains("missing field"), "{errs:#?}");
    }

    #[test]
    fn the_example_configuration_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let cfg = load_server_config(&dir).unwrap_or_else(|d| panic!("{d:#?}"));
        assert!(cfg.listen.ip().is_loopback());
        assert_eq!(cfg.issuer.name(), "internal");
        assert_eq!(
            cfg.tlsrpt.report_host.as_deref(),
            Some("tlsrpt.operator.example")
        );
        assert!(cfg.tlsrpt.publish_endpoint);
        assert_eq!(cfg.tlsrpt.database, cfg.state_dir.join(TLSRPT_DATABASE));
    }
}
