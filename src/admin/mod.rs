//! The admin listener: plain HTTP, loopback by default, optional bearer token.
//!
//! `GET /healthz` (process up) and `GET /readyz` (configuration loaded, HTTPS listener up) are
//! open so probes need no secret; with a token configured, everything else (`/metrics`,
//! `/api/v1/…`, `POST /reload`, the pages under `/ui/`) answers 401 without
//! `Authorization: Bearer <token>` (the pages, for browsers, also take it as a Basic password;
//! see the `ui` module).
//! Metrics and the API are unauthenticated without a token: keep the listener on loopback or
//! a private network.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::certs::CertBoard;
use crate::config::{Diagnostic, Tenant};
use crate::metrics::Exporter;
use crate::publish::{Publishing, TenantRecords};
use crate::registry::{Registry, Snapshot};
use crate::reload::{ReloadStatus, Reloader, Trigger};

mod list;
mod ui;
pub use list::{DEFAULT_LIMIT, ListQuery, MAX_LIMIT};

/// Admin connections served at once: a scraper, an operator and a script or two.
const MAX_CONNECTIONS: usize = 64;
/// Time to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one admin connection (a scrape of 100 000 tenants takes well under this).
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);
/// Largest request head accepted.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Time given to a connection to finish once the daemon stops.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What the admin endpoints read.
pub struct AdminState {
    /// Live tenant table.
    pub registry: Arc<Registry>,
    /// Certificate status per host.
    pub board: Arc<CertBoard>,
    /// Reloads and their status.
    pub reloader: Arc<Reloader>,
    /// Metrics renderer.
    pub exporter: Exporter,
    /// TLS-RPT reports, for the per-tenant summary.
    pub tlsrpt: Arc<crate::tlsrpt::TlsRpt>,
    /// Bearer token, when configured.
    pub token: Option<AdminToken>,
    /// True while the HTTPS listener serves.
    pub listening: AtomicBool,
    /// The delegated zone, when the server file has a `dns:` section.
    pub dns: Option<Arc<crate::dns::DnsZone>>,
    /// The RFC 2136 publisher, once the daemon started it (`dns_update:`).
    pub dns_update: std::sync::OnceLock<Arc<crate::dnsupdate::Publisher>>,
    /// The watchdog's latest validation per tenant.
    pub validation: Arc<crate::validate::Board>,
    /// Cluster mode's role and replicas (`store: postgres:`).
    pub cluster: Option<Arc<crate::pgstore::cluster::ClusterStatus>>,
    /// Where the listeners are bound, once the daemon has them (a port 0 becomes a real one).
    pub bound: std::sync::OnceLock<Bound>,
}

/// The addresses the daemon's listeners are bound to, for the status page and the links.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bound {
    /// The HTTPS listener.
    pub https: Option<SocketAddr>,
    /// This admin listener.
    pub admin: Option<SocketAddr>,
    /// The built-in DNS server (`dns:`).
    pub dns: Option<SocketAddr>,
}

/// Reads a token file: the first line, trimmed; an empty token is refused (it would look
/// protected while accepting `Bearer `). Warns when the file is readable by group or others.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = read_first_line(path)?;
    warn_if_shared(path);
    Ok(token)
}

fn read_first_line(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading admin token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "admin token file {} is empty",
        path.display()
    );
    Ok(token)
}

/// A token others on the host can read is no secret.
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            "admin token file {} has mode {mode:04o}: group or others can read the token; chmod 600 it",
            path.display()
        );
    }
}

/// The bearer token: read from its file at start, and again after every reload (SIGHUP, the
/// watcher, `POST /reload`), so a rotated token applies without a restart.
pub struct AdminToken {
    path: PathBuf,
    current: Mutex<Current>,
}

/// The token in force and the reload status it was read under.
struct Current {
    token: Arc<str>,
    /// Every finished reload publishes a new status; a different one means "read again".
    seen: Arc<ReloadStatus>,
}

impl AdminToken {
    /// Reads `path` (an unreadable or empty file stops the start).
    pub fn load(path: &Path, reloader: &Reloader) -> anyhow::Result<AdminToken> {
        let token = read_token(path)?;
        Ok(AdminToken {
            path: path.to_owned(),
            current: Mutex::new(Current {
                token: token.into(),
                seen: reloader.status(),
            }),
        })
    }

    /// The token in force, read again first if a reload finished since the last look. A file
    /// that became unreadable or empty keeps the previous token (logged), like any bad input.
    pub fn get(&self, reloader: &Reloader) -> Arc<str> {
        let status = reloader.status();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::ptr_eq(&current.seen, &status) {
            return current.token.clone();
        }
        current.seen = status;
        match read_first_line(&self.path) {
            Ok(token) if *token != *current.token => {
                warn_if_shared(&self.path);
                tracing::info!(file = %self.path.display(), "admin token file changed: the new token applies from now on");
                current.token = token.into();
            }
            Ok(_) => {}
            Err(err) => {
                tracing::error!(file = %self.path.display(), error = %format!("{err:#}"), "cannot read the admin token file; keeping the previous token");
            }
        }
        current.token.clone()
    }
}

/// Logs where the admin listener is and warns when it is reachable from other hosts without a
/// token.
pub fn announce(addr: SocketAddr, has_token: bool) {
    if !addr.ip().is_loopback() && !has_token {
        tracing::warn!(admin = %addr, "admin listener is bound to a non-loopback address without a token: anyone who can reach it can read metrics and tenant data and trigger reloads; set admin.token_file");
    }
    tracing::info!(admin = %addr, token = has_token, "admin listener up");
}

/// Serves the admin API on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: watch::Receiver<bool>) {
    crate::accept::accept_bounded(
        listener,
        MAX_CONNECTIONS,
        "admin",
        stop,
        move |tcp, mut stop| {
            let state = state.clone();
            async move {
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, req).await) }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .max_buf_size(MAX_HEADER_BYTES);
                let conn = builder.serve_connection(TokioIo::new(tcp), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = tokio::time::sleep(MAX_CONNECTION_AGE) => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
                    }
                    _ = stop.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
                    }
                }
            }
        },
    )
    .await;
}

/// Routes one admin request.
pub async fn handle(state: Arc<AdminState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(resp) = probe(&state, req.method(), req.uri().path()) {
        return resp;
    }
    let token = state.token.as_ref().map(|t| t.get(&state.reloader));
    let page = ui::is_ui_path(req.uri().path());
    if !authorized(token.as_deref(), &req, page) {
        let mut resp = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        // A browser cannot send a bearer token by itself, but it asks for a password when
        // offered Basic: the pages take the token as that password.
        if page {
            resp.headers_mut().append(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mta-stsd admin\", charset=\"UTF-8\""),
            );
        }
        resp.headers_mut().append(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"mta-stsd admin\""),
        );
        return resp;
    }
    let path = req.uri().path().to_owned();
    if page {
        return ui::handle(&state, req.method(), &path, req.uri().query()).await;
    }
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/metrics") => {
            let accept = req
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            metrics(&state, accept).await
        }
        (Method::POST, "/reload") => {
            let outcome = state.reloader.reload(Trigger::Api).await;
            let status = match outcome.result {
                crate::stats::ReloadResult::Error => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::OK,
            };
            json(status, &outcome)
        }
        (Method::GET, "/api/v1/status") => json(StatusCode::OK, &status(&state)),
        (Method::GET, "/api/v1/tenants") => match ListQuery::parse(req.uri().query()) {
            Ok(query) => json(StatusCode::OK, &tenant_list(&state, &query)),
            Err(why) => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": why }),
            ),
        },
        (method, p) if p.starts_with("/api/v1/tenants/") => {
            one_tenant(&state, method, p, req.uri().query()).await
        }
        (_, "/metrics" | "/reload" | "/api/v1/status" | "/api/v1/tenants") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// `/api/v1/tenants/<domain>[/tlsrpt|/forget]`.
async fn one_tenant(
    state: &Arc<AdminState>,
    method: Method,
    p: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    match method {
        Method::GET if p.ends_with("/tlsrpt") => {
            let raw = &p["/api/v1/tenants/".len()..p.len() - "/tlsrpt".len()];
            tlsrpt_summary(state, raw, query).await
        }
        Method::POST => forget(state, p).await,
        Method::GET => match tenant_detail(state, &p["/api/v1/tenants/".len()..]) {
            Some(v) => json(StatusCode::OK, &v),
            None => no_such_tenant(),
        },
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

/// An error answer: `{"error": …}` on every path, so API clients parse one shape.
fn error(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": why }))
}

/// `GET /api/v1/status`: the reload status plus `tlsrpt_store` (`up`, `error`) and what the
/// binary was built from (`version`, `commit`, `dirty`, as in `mta_stsd_build_info`).
fn status(state: &AdminState) -> serde_json::Value {
    let mut value = serde_json::to_value(&*state.reloader.status()).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        use crate::util::build;
        map.insert("version".into(), build::VERSION.into());
        map.insert("commit".into(), build::COMMIT.into());
        map.insert("dirty".into(), build::DIRTY.into());
        map.insert(
            "tlsrpt_store".into(),
            serde_json::to_value(state.tlsrpt.store_status()).unwrap_or_default(),
        );
        if let Some(cluster) = &state.cluster {
            map.insert("cluster".into(), cluster.to_json());
        }
    }
    value
}

/// The `/readyz` text: ready, and what is degraded. Policies are the product: a report store
/// or a cluster database that is down does not make the daemon unready, it is only named
/// (details in `/api/v1/status`, which may need the token).
fn ready_text(state: &AdminState) -> String {
    let mut degraded = Vec::new();
    if !state.tlsrpt.store_status().up {
        degraded.push("report store unavailable: TLS-RPT intake answers 503".to_owned());
    }
    if let Some(cluster) = &state.cluster
        && let crate::pgstore::session::Role::Disconnected(why) = cluster.role()
    {
        degraded.push(format!(
            "PostgreSQL unavailable ({why}): serving from memory, not ordering, reconnecting"
        ));
    }
    if degraded.is_empty() {
        "ready\n".to_owned()
    } else {
        format!("ready ({})\n", degraded.join("; "))
    }
}

/// The unauthenticated probes `/healthz` and `/readyz` (orchestrators hold no token).
fn probe(state: &AdminState, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
    match (method, path) {
        (&Method::GET, "/healthz") => Some(text(StatusCode::OK, "ok\n")),
        (&Method::GET, "/readyz") if state.listening.load(Ordering::Relaxed) => Some(
            crate::util::http::text_owned(StatusCode::OK, ready_text(state)),
        ),
        (&Method::GET, "/readyz") => Some(text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")),
        _ => None,
    }
}

/// `GET /metrics` in the format `accept` asks for.
async fn metrics(state: &Arc<AdminState>, accept: Option<String>) -> Response<Full<Bytes>> {
    // The TLS-RPT gauges read the report store: keep that off the async worker threads.
    let render = state.clone();
    let Ok((body, content_type)) =
        tokio::task::spawn_blocking(move || render.exporter.render(accept.as_deref())).await
    else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics rendering failed",
        );
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// `GET /api/v1/tenants/{domain}/tlsrpt?since=7d`: the TLS-RPT summary and the
/// ready-to-enforce verdict, over `since` (default: the verdict's minimum number of days).
async fn tlsrpt_summary(
    state: &Arc<AdminState>,
    raw: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let Some(domain) = path_domain(raw) else {
        return no_such_tenant();
    };
    let now = time::OffsetDateTime::now_utc();
    let since = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("since="));
    let since = match since {
        Some(text) => match crate::util::parse_since(text, now) {
            Ok(t) => t,
            Err(why) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": why }),
                );
            }
        },
        None => now - state.tlsrpt.metrics_window(),
    };
    let (tlsrpt, board) = (state.tlsrpt.clone(), state.validation.clone());
    let result = tokio::task::spawn_blocking(move || {
        let now = time::OffsetDateTime::now_utc();
        gated_summary(&tlsrpt, &board, &domain, since, now)
            .map(|summary| summary.map(|s| serde_json::to_value(&s).unwrap_or_default()))
    })
    .await;
    match result {
        Ok(Ok(Some(summary))) => json(StatusCode::OK, &summary),
        Ok(Ok(None)) => no_such_tenant(),
        Ok(Err(err)) => json(
            StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &serde_json::json!({ "error": err.to_string() }),
        ),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "summary failed"),
    }
}

/// A tenant's TLS-RPT summary with the watchdog's blockers (MX not covered, stale id, …)
/// counted in its verdict: what the API's `/tlsrpt` serves and the pages show. Blocking.
fn gated_summary(
    tlsrpt: &crate::tlsrpt::TlsRpt,
    board: &crate::validate::Board,
    domain: &str,
    since: time::OffsetDateTime,
    now: time::OffsetDateTime,
) -> Result<Option<crate::tlsrpt::TenantSummary>, crate::tlsrpt::StoreError> {
    let mut summary = tlsrpt.tenant_summary(domain, since, now)?;
    if let Some(s) = summary.as_mut() {
        let report = board.get(&s.tenant);
        let not_run = crate::validate::readiness::NOT_RUN_YET;
        crate::validate::readiness::gate(&mut s.verdict, report.as_deref(), not_run);
    }
    Ok(summary)
}

/// Whether `req` carries the bearer token (any case of the scheme, RFC 9110 §11.1); with
/// `basic` (the pages, for browsers), the token may also come as a Basic password.
fn authorized<B>(token: Option<&str>, req: &Request<B>, basic: bool) -> bool {
    let Some(token) = token else { return true };
    let Some(value) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let given = match bearer_credentials(value) {
        Some(given) => given.to_owned(),
        None if basic => match basic_password(value) {
            Some(password) => password,
            None => return false,
        },
        None => return false,
    };
    same_token(&given, token)
}

/// The password of a `Basic` authorization value (the user name is ignored).
fn basic_password(value: &str) -> Option<String> {
    use base64::Engine;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_owned())
}

/// The credentials of a `Bearer` authorization value.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Compares in time independent of where, and whether in length, the two differ: both sides
/// are hashed to 32 bytes first, and the digests are compared in constant time.
fn same_token(given: &str, token: &str) -> bool {
    use aws_lc_rs::digest::{SHA256, digest};
    let (a, b) = (
        digest(&SHA256, given.as_bytes()),
        digest(&SHA256, token.as_bytes()),
    );
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_ref(), b.as_ref()).is_ok()
}

/// The records to publish for `tenant`, with `public_hostname` applied live.
fn records(state: &AdminState, tenant: &Tenant) -> TenantRecords {
    let status = state.reloader.status();
    let publishing = Publishing {
        public_hostname: status.public_hostname.as_deref(),
        tlsrpt: Some(&state.reloader.running().tlsrpt),
    };
    crate::publish::tenant_records(tenant, publishing)
}

/// Error diagnostics by file, to attach to each tenant.
fn errors_by_file(snapshot: &Snapshot) -> HashMap<&Path, Vec<&Diagnostic>> {
    let mut map: HashMap<&Path, Vec<&Diagnostic>> = HashMap::new();
    for d in snapshot.diagnostics.iter().filter(|d| d.is_error()) {
        map.entry(d.file.as_path()).or_default().push(d);
    }
    map
}

fn tenant_json(
    state: &AdminState,
    snapshot: &Snapshot,
    tenant: &Tenant,
    errors: &HashMap<&Path, Vec<&Diagnostic>>,
    stale: bool,
    now: i64,
    with_body: bool,
) -> serde_json::Value {
    let cert = state.board.get(&tenant.host);
    let file_errors = errors.get(&*tenant.source).cloned().unwrap_or_default();
    let records = records(state, tenant);
    let mut v = serde_json::json!({
        "domain": tenant.domain,
        "policy_host": tenant.host,
        "mode": tenant.policy.mode,
        "mx": tenant.policy.mx,
        "max_age": tenant.policy.max_age,
        "id": tenant.policy.id,
        "records": records.list(),
        "txt": {
            "mta_sts": records.mta_sts.console_line(),
            "tlsrpt": records.tlsrpt.as_ref().map(|r| r.console_line()),
        },
        "ready": crate::publish::is_ready(snapshot, &state.board, tenant, now),
        "certificate": cert,
        "source": {"file": &*tenant.source, "line": tenant.line},
        "html_url": ui::tenant_url(state, &tenant.domain),
        "stale": stale,
        "last_error": file_errors.first().map(|d| d.to_string()),
        "errors": file_errors,
    });
    v["state"] = serde_json::json!(if tenant.retiring.is_some() {
        "retiring"
    } else {
        "serving"
    });
    v["retirement"] = serde_json::json!(tenant.retiring.map(|r| serde_json::json!({
        "state": "retiring",
        "since": r.since,
        "until": r.until,
        "file_removed": r.orphan,
    })));
    if let Some(publisher) = state.dns_update.get() {
        v["dns_update"] = dns_update_json(publisher, &tenant.domain);
    }
    if with_body {
        // `{checks: [...], checked_at}`, null until the watchdog has looked at the tenant.
        v["validation"] = match state.validation.get(&tenant.domain) {
            Some(r) => serde_json::json!({"checks": r.checks, "checked_at": r.checked_at}),
            None => serde_json::Value::Null,
        };
        v["body"] = serde_json::Value::String(String::from_utf8_lossy(&tenant.policy.body).into());
    }
    if let Some(dns) = &state.dns {
        v["delegated"] = delegated_json(dns, tenant, state.reloader.running());
    }
    v
}

/// What the delegated zone answers for `tenant` and the CNAMEs its customer creates. The
/// answered id lags the served one until the new body is served with a valid certificate.
fn delegated_json(
    dns: &crate::dns::DnsZone,
    tenant: &Tenant,
    config: &crate::config::ServerConfig,
) -> serde_json::Value {
    use crate::dns::names::{Kind, customer_cnames, target};
    let zone = dns.origin();
    let answered = dns.answered_id(&tenant.domain);
    let served = crate::publish::sts_id(tenant);
    serde_json::json!({
        "zone": zone,
        "mta_sts": {
            "name": target(Kind::Sts, &tenant.domain, zone),
            "answered_id": answered,
            "in_step": answered.as_deref() == Some(served),
        },
        "tlsrpt_name": target(Kind::TlsRpt, &tenant.domain, zone),
        "cnames": customer_cnames(config, &tenant.domain),
    })
}

/// The RFC 2136 state of each record of `domain` kept at a primary: `state` is `published`,
/// `pending` or `error` (then `error` holds the server's rcode or the failure).
fn dns_update_json(publisher: &crate::dnsupdate::Publisher, domain: &str) -> serde_json::Value {
    let records: Vec<_> = publisher
        .states(domain)
        .into_iter()
        .map(|(name, state)| {
            let error = match &state {
                crate::dnsupdate::plan::State::Error(why) => Some(why.clone()),
                _ => None,
            };
            serde_json::json!({"name": name, "state": state.label(), "error": error})
        })
        .collect();
    serde_json::Value::Array(records)
}

/// One page of the tenant list; `next_cursor` continues it (`null` on the last page).
fn tenant_list(state: &AdminState, query: &ListQuery) -> serde_json::Value {
    let snapshot = state.registry.load();
    let status = state.reloader.status();
    let stale: std::collections::HashSet<&str> =
        status.stale_tenants.iter().map(String::as_str).collect();
    let errors = errors_by_file(&snapshot);
    let now = crate::util::unix_now();
    let ready = |t: &Tenant| crate::publish::is_ready(&snapshot, &state.board, t, now);
    let page = list::page(snapshot.sorted(), query, &ready);
    let tenants: Vec<_> = page
        .tenants
        .iter()
        .map(|t| {
            tenant_json(
                state,
                &snapshot,
                t,
                &errors,
                stale.contains(t.domain.as_str()),
                now,
                false,
            )
        })
        .collect();
    // Not a tenant, but its certificate comes from the same issuer and can fail the same way.
    let report_host = state
        .reloader
        .running()
        .tlsrpt
        .report_host
        .as_ref()
        .map(|host| serde_json::json!({ "host": host, "certificate": state.board.get(host) }));
    serde_json::json!({
        "generation": snapshot.generation,
        "count": tenants.len(),
        "total": page.total,
        "limit": query.limit,
        "next_cursor": page.next_cursor,
        "tenants": tenants,
        "report_host": report_host,
    })
}

/// The tenant domain named in a path segment, as A-labels: clients send a U-label
/// percent-encoded (`m%C3%BCller.example`), people type a trailing dot or capitals.
fn path_domain(raw: &str) -> Option<String> {
    // A broken escape stays as `%…`, which no host name accepts.
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    let name = decoded.strip_suffix('.').unwrap_or(&decoded);
    crate::config::normalize_hostname(name).ok()
}

fn no_such_tenant() -> Response<Full<Bytes>> {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": "no such tenant"}),
    )
}

/// `POST /api/v1/tenants/<domain>/forget`: the operator confirms the removal of a tenant
/// being retired; it stops being served at once.
async fn forget(state: &Arc<AdminState>, path: &str) -> Response<Full<Bytes>> {
    let Some(raw) = path
        .strip_prefix("/api/v1/tenants/")
        .and_then(|p| p.strip_suffix("/forget"))
    else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let Some(domain) = path_domain(raw) else {
        return no_such_tenant();
    };
    let reloader = state.reloader.clone();
    let d = domain.clone();
    match tokio::task::spawn_blocking(move || reloader.forget(&d)).await {
        Ok(true) => json(
            StatusCode::OK,
            &serde_json::json!({"domain": domain, "state": "retired"}),
        ),
        Ok(false) => json(
            StatusCode::CONFLICT,
            &serde_json::json!({"domain": domain, "error": "not being retired (remove its tenant file first, or set retire: true)"}),
        ),
        Err(err) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"error": err.to_string()}),
        ),
    }
}

/// A tenant no longer served whose retirement ended: what to remove from DNS.
fn retired_json(state: &AdminState, domain: &str) -> Option<serde_json::Value> {
    let store = state.reloader.retirements()?;
    let now = crate::util::unix_now();
    let Some(crate::reload::retire::Phase::Retired(w)) = store.phase(domain, now) else {
        return None;
    };
    let last = store.last_served(domain)?;
    let records = records(state, &last);
    Some(serde_json::json!({
        "domain": domain,
        "state": "retired",
        "retirement": {"state": "retired", "since": w.since, "until": w.until, "file_removed": w.orphan},
        "remove_records": records.list(),
        "remove": records.list().iter().map(crate::publish::Record::console_line).collect::<Vec<_>>(),
    }))
}

fn tenant_detail(state: &AdminState, raw: &str) -> Option<serde_json::Value> {
    let domain = path_domain(raw)?;
    let snapshot = state.registry.load();
    let Some(tenant) = snapshot.by_domain(&domain).cloned() else {
        return retired_json(state, &domain);
    };
    let status = state.reloader.status();
    let stale = status.stale_tenants.contains(&domain);
    let errors = errors_by_file(&snapshot);
    Some(tenant_json(
        state,
        &snapshot,
        &tenant,
        &errors,
        stale,
        crate::util::unix_now(),
        true,
    ))
}

fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    crate::http::text(status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri("/metrics");
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn bearer_token() {
        let authorized = |t, r: &Request<()>| authorized(t, r, false);
        assert!(authorized(None, &req(None)));
        assert!(!authorized(Some("s3cret"), &req(None)));
        assert!(!authorized(Some("s3cret"), &req(Some("Bearer s3cre"))));
        assert!(!authorized(Some("s3cret"), &req(Some("Basic s3cret"))));
        assert!(!authorized(Some("s3cret"), &req(Some("Bearer "))));
        assert!(authorized(Some("s3cret"), &req(Some("Bearer s3cret"))));
        assert!(!authorized(
            Some("s3cret"),
            &req(Some("Bearer s3cret-and-more"))
        ));
        assert!(!authorized(Some("s3cret"), &req(Some("Bearers3cret"))));
    }

    #[test]
    fn pages_also_take_the_token_as_a_basic_password() {
        use base64::Engine;
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        let ok = basic("admin:s3cret");
        assert!(authorized(Some("s3cret"), &req(Some(&ok)), true));
        assert!(authorized(
            Some("s3cret"),
            &req(Some(&basic(":s3cret"))),
            true
        ));
        assert!(authorized(
            Some("s3cret"),
            &req(Some("Bearer s3cret")),
            true
        ));
        // The API itself keeps to bearer tokens.
        assert!(!authorized(Some("s3cret"), &req(Some(&ok)), false));
        for wrong in [
            basic("admin:s3cre"),
            basic("s3cret"),
            "Basic !!!".into(),
            basic(""),
        ] {
            assert!(
                !authorized(Some("s3cret"), &req(Some(&wrong)), true),
                "{wrong}"
            );
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        // RFC 9110 §11.1: the auth-scheme is a case-insensitive token.
        for value in [
            "bearer s3cret",
            "BEARER s3cret",
            "bEaReR s3cret",
            "Bearer  s3cret",
        ] {
            assert!(
                authorized(Some("s3cret"), &req(Some(value)), false),
                "{value}"
            );
        }
        assert!(!authorized(
            Some("s3cret"),
            &req(Some("bearer S3CRET")),
            false
        ));
    }
}
