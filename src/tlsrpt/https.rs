//! HTTPS intake (RFC 8460 §5.4): `POST https://<report host>/tlsrpt/<tenant domain>`.
//!
//! The tenant comes from the path, so a report is routed even when its JSON lacks
//! `policy-domain` (as Postfix's reports do). Order of checks, cheapest first, so refusing
//! costs little: method → path → Host → tenant in the current snapshot → media type →
//! `Content-Length` against the compressed cap → a place among the client address's uploads →
//! body read with the cap, a deadline and a minimum rate enforced while reading → a report
//! slot → [`decode`] and the insert on a blocking thread. 2xx only once the insert has
//! committed (a duplicate is also 2xx); every refusal is one line of text.
//!
//! Bodies are read before a report slot is taken, so a slow sender holds only its own place:
//! trickling uploads neither queue real senders behind them nor outlive [`BODY_DEADLINE`].
//! A refusal answered before the body ended first drains a bounded rest of it, so an h2
//! sender that is still uploading reads the status instead of a stream reset.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::decode::{Limits, decode, media_type};
use super::intake::{Accepted, Origin, Tenant};
use super::report::{ReportError, normalize_domain};
use super::service::{IntakeOutcome, TlsRpt};
use super::store::{InsertOutcome, Source, StoreError};
use crate::util::http::{Body, TEXT_PLAIN, request_host};

pub use crate::config::REPORT_PATH_PREFIX;

/// Reports decoded and stored at once. Each holds up to the compressed cap plus the
/// decompressed cap in memory, so this bounds intake memory; further senders wait. Bodies are
/// read before a slot is taken, so a slot is held only while decoding and storing.
pub const MAX_CONCURRENT_REPORTS: usize = 8;

/// How long a received report waits for one of the [`MAX_CONCURRENT_REPORTS`] slots before 503.
const SLOT_WAIT: Duration = Duration::from_secs(30);

/// Bodies read at once from one client address (an IPv6 /64 counts as one): a sender posts a
/// handful of reports at a time, while an attacker's slow uploads beyond this get 429 at once.
pub const MAX_UPLOADS_PER_CLIENT: usize = 4;

/// Longest a body may take to arrive, then 408: 10 MB at about 3 Mbit/s, far longer than a
/// sender's report of a few MB needs, and short against a connection's maximum age.
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);

/// Slowest average rate a body may arrive at once [`BODY_RATE_GRACE`] has passed, in bytes per
/// second, then 408: any real sender is far faster; a trickle of a byte every few seconds is cut
/// within seconds instead of holding its place for the whole deadline.
pub const MIN_BODY_RATE: u64 = 1024;

/// Time a body may take before [`MIN_BODY_RATE`] applies: room for a slow start (TCP slow
/// start, a sender compressing as it sends).
pub const BODY_RATE_GRACE: Duration = Duration::from_secs(5);

/// Bodies buffered at once, as a multiple of the compressed cap: the memory the report slots
/// bounded when bodies were read inside them. Past it, 503 (the sender retries).
const BUFFERED_REPORTS: usize = MAX_CONCURRENT_REPORTS;

/// Bytes of a refused body read and discarded, beyond the compressed cap, before answering:
/// curl over h2 reports a stream error instead of the status when the stream is reset while it
/// still uploads, so a report somewhat over the cap is drained; beyond this it is reset.
const DRAIN_EXTRA: usize = 4 * 1024 * 1024;

/// Longest a refused body is drained: a sender too slow to finish by then is reset.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// `Retry-After` on 503: senders retry for up to 24 h anyway (RFC 8460 §5.5).
const RETRY_AFTER_SECS: &str = "300";

/// Longest domain echoed in a refusal: a DNS name is at most 253 characters.
const MAX_ECHO: usize = 253;

/// A refusal: status and one line of text.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    reason: String,
    /// Whether to drain the rest of the body before answering (not for a sender refused for
    /// being too slow or too many: draining would give it back the time it was refused).
    drain: bool,
    /// How the intake counters file it; by default what the status stands for (a 429 is
    /// `throttled` unless a quota said otherwise).
    outcome: Option<IntakeOutcome>,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
            drain: true,
            outcome: IntakeOutcome::from_status(status.as_u16()),
        }
    }

    /// A refusal answered at once, leaving the rest of the body unread.
    fn at_once(status: StatusCode, reason: impl Into<String>) -> Self {
        Refusal {
            drain: false,
            ..Refusal::new(status, reason)
        }
    }
}

impl From<ReportError> for Refusal {
    fn from(e: ReportError) -> Self {
        // The domain comes from the request path: echo no more of it than a DNS name can be.
        let e = match e {
            ReportError::UnknownDomain(domain) => {
                ReportError::UnknownDomain(domain.chars().take(MAX_ECHO).collect())
            }
            other => other,
        };
        Refusal::new(
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            e.to_string(),
        )
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let reason = match &e {
            StoreError::Rejected(why) | StoreError::OverQuota(why) => why.clone(),
            StoreError::Busy(_) => "report database busy; retry later".to_owned(),
            StoreError::Unavailable(_) => "report store unavailable; retry later".to_owned(),
            // The detail is for the operator's log, not for the sender.
            _ => "internal error storing the report; retry later".to_owned(),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "storing a report failed");
        }
        let outcome = matches!(e, StoreError::OverQuota(_)).then_some(IntakeOutcome::OverQuota);
        Refusal {
            outcome: outcome.or(IntakeOutcome::from_status(status.as_u16())),
            ..Refusal::new(status, reason)
        }
    }
}

/// The HTTPS report endpoint of one report host.
pub struct HttpsIntake {
    tlsrpt: Arc<TlsRpt>,
    host: String,
    slots: Semaphore,
    uploads: Uploads,
    buffered: Budget,
    pace: BodyPace,
}

impl std::fmt::Debug for HttpsIntake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsIntake")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl HttpsIntake {
    /// The intake for the configured report host; `None` when none is configured.
    pub fn new(tlsrpt: Arc<TlsRpt>) -> Option<Self> {
        let host = tlsrpt.config.report_host.clone()?;
        let max_compressed = tlsrpt.config.limits.max_compressed;
        Some(HttpsIntake {
            tlsrpt,
            host,
            slots: Semaphore::new(MAX_CONCURRENT_REPORTS),
            uploads: Uploads::default(),
            buffered: Budget::new(max_compressed.saturating_mul(BUFFERED_REPORTS)),
            pace: BodyPace::DEFAULT,
        })
    }

    /// The report host (lowercase).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Answers one request made on a connection to the report host from `client`. `progress`
    /// is called whenever body bytes arrive, so the connection's idle timer does not cut an
    /// upload (the body's own deadline and minimum rate bound it).
    pub async fn handle<B>(
        &self,
        req: Request<B>,
        client: IpAddr,
        progress: impl Fn() + Sync,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: Display,
    {
        let stats = &self.tlsrpt.stats;
        let (parts, mut body) = req.into_parts();
        let head = Request::from_parts(parts, ());
        let declared = head
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let accepted = self
            .accept(&head, &mut body, declared, client, &progress)
            .await;
        match accepted {
            Ok(accepted) => {
                let label = IntakeOutcome::from(accepted.outcome);
                let text = match accepted.outcome {
                    InsertOutcome::Inserted => "report stored\n",
                    InsertOutcome::Duplicate => "duplicate report, already stored\n",
                    InsertOutcome::Conflicting => {
                        "report stored; another report with this organization-name and \
                         report-id differs, both are flagged\n"
                    }
                };
                stats.record(Source::Https, label);
                tracing::info!(
                    tenant = %accepted.tenant,
                    organization = %accepted.organization,
                    report_id = %accepted.report_id,
                    outcome = label.as_str(),
                    source = "https",
                    "TLS-RPT report accepted"
                );
                reply(StatusCode::OK, text.to_owned())
            }
            Err(refusal) => {
                if let Some(outcome) = refusal.outcome {
                    stats.record(Source::Https, outcome);
                }
                tracing::debug!(status = refusal.status.as_u16(), reason = %refusal.reason, "TLS-RPT report refused");
                if refusal.drain {
                    let limit = self.tlsrpt.config.limits.max_compressed + DRAIN_EXTRA;
                    drain(&mut body, declared, limit).await;
                }
                refuse(refusal)
            }
        }
    }

    /// The checks in the module doc's order, then the store: `Ok` only once committed.
    async fn accept<B>(
        &self,
        req: &Request<()>,
        body: &mut B,
        declared: Option<u64>,
        client: IpAddr,
        progress: &(dyn Fn() + Sync),
    ) -> Result<Accepted, Refusal>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: Display,
    {
        let tenant = self.check_target(req)?;
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        media_type(&content_type)?;
        let limits = self.tlsrpt.config.limits;
        if declared.is_some_and(|n| n > limits.max_compressed as u64) {
            return Err(too_large(limits.max_compressed));
        }
        let _upload = self.uploads.enter(client).ok_or_else(|| {
            Refusal::at_once(
                StatusCode::TOO_MANY_REQUESTS,
                "too many reports uploading from your address at once; retry later",
            )
        })?;
        let read = Reader {
            cap: limits.max_compressed,
            pace: self.pace,
            budget: &self.buffered,
        };
        let (body, _memory) = read.read(body, declared, progress).await?;
        let _slot = tokio::time::timeout(SLOT_WAIT, self.slots.acquire())
            .await
            .map_err(|_| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many reports arriving at once; retry later",
                )
            })?
            .map_err(|_| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
        self.decode_and_accept(tenant, body, content_type, limits)
            .await
    }

    /// Method, path, Host and tenant, before anything of the body is read.
    fn check_target(&self, req: &Request<()>) -> Result<Tenant, Refusal> {
        let domain = req
            .uri()
            .path()
            .strip_prefix(REPORT_PATH_PREFIX)
            .map(normalize_domain)
            .filter(|d| !d.is_empty() && !d.contains('/'));
        if req.method() != Method::POST {
            return Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "reports are POSTed to /tlsrpt/<domain>",
            ));
        }
        let Some(domain) = domain else {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "not found: POST reports to /tlsrpt/<domain>",
            ));
        };
        if request_host(req).as_deref() != Some(self.host.as_str()) {
            return Err(Refusal::new(
                StatusCode::MISDIRECTED_REQUEST,
                "host does not match TLS server name",
            ));
        }
        Ok(self.tlsrpt.check_tenant(&domain)?)
    }

    /// [`decode`] and [`TlsRpt::accept`] on a blocking thread: both may take a while.
    async fn decode_and_accept(
        &self,
        tenant: Tenant,
        body: Vec<u8>,
        content_type: String,
        limits: Limits,
    ) -> Result<Accepted, Refusal> {
        let tlsrpt = self.tlsrpt.clone();
        tokio::task::spawn_blocking(move || {
            let (report, raw_json) = decode(&body, &content_type, &limits)?;
            drop(body);
            Ok::<_, Refusal>(tlsrpt.accept(tenant, report, raw_json, Origin::https())?)
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "report intake task failed");
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; retry later",
            )
        })?
    }
}

/// The refusal as the sender sees it: one line of text, plus `Allow` on 405 and
/// `Retry-After` on 503 and 429.
fn refuse(refusal: Refusal) -> Response<Body> {
    let mut resp = reply(refusal.status, format!("{}\n", one_line(&refusal.reason)));
    match refusal.status {
        StatusCode::METHOD_NOT_ALLOWED => {
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
        }
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        _ => {}
    }
    resp
}

fn too_large(limit: usize) -> Refusal {
    ReportError::TooLarge {
        what: "compressed body",
        limit,
    }
    .into()
}

fn too_slow(why: &str) -> Refusal {
    Refusal::at_once(
        StatusCode::REQUEST_TIMEOUT,
        format!("report body {why}; send it in one go"),
    )
}

fn body_error(e: impl Display) -> Refusal {
    Refusal::at_once(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
}

/// How fast a body must arrive: complete within `deadline`, and after `grace` at no less than
/// `min_rate` bytes per second on average.
#[derive(Debug, Clone, Copy)]
struct BodyPace {
    deadline: Duration,
    grace: Duration,
    min_rate: u64,
}

impl BodyPace {
    const DEFAULT: BodyPace = BodyPace {
        deadline: BODY_DEADLINE,
        grace: BODY_RATE_GRACE,
        min_rate: MIN_BODY_RATE,
    };

    /// When more than `received` bytes must have arrived, and which rule that is.
    fn next_due(&self, start: Instant, received: usize) -> (Instant, &'static str) {
        let earned_ms = (received as u64).saturating_mul(1000) / self.min_rate.max(1);
        let by_rate = start + self.grace + Duration::from_millis(earned_ms);
        let by_deadline = start + self.deadline;
        if by_rate < by_deadline {
            (by_rate, "arriving too slowly")
        } else {
            (by_deadline, "not complete in time")
        }
    }
}

/// Reads one body: its cap, pace and the memory budget it draws on.
struct Reader<'a> {
    cap: usize,
    pace: BodyPace,
    budget: &'a Budget,
}

impl Reader<'_> {
    /// Reads the body, stopping with 413 as soon as it passes the cap (an oversized upload
    /// costs at most the cap whatever it declared), 408 when it is too slow, 503 when the
    /// buffered bodies would pass the budget. The reservation holds the body's memory.
    async fn read<'b, B>(
        &'b self,
        body: &mut B,
        declared: Option<u64>,
        progress: &(dyn Fn() + Sync),
    ) -> Result<(Vec<u8>, Reservation<'b>), Refusal>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: Display,
    {
        let initial = declared
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
            .min(self.cap);
        let mut memory = self.budget.reserve(initial)?;
        let mut buf = Vec::with_capacity(initial);
        let start = Instant::now();
        loop {
            let (due, why) = self.pace.next_due(start, buf.len());
            let frame = match tokio::time::timeout_at(due, body.frame()).await {
                Err(_) => return Err(too_slow(why)),
                Ok(None) => return Ok((buf, memory)),
                Ok(Some(frame)) => frame.map_err(body_error)?,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers carry nothing we use
            };
            if buf.len() + data.len() > self.cap {
                return Err(too_large(self.cap));
            }
            memory.grow_to(buf.len() + data.len())?;
            buf.extend_from_slice(&data);
            progress();
        }
    }
}

/// Reads and discards the rest of a refused body, up to `limit` bytes within
/// [`DRAIN_DEADLINE`], so a sender still uploading (curl over h2) reads the status rather than
/// a stream reset. A body declared or found larger is left unread (and reset).
async fn drain<B>(body: &mut B, declared: Option<u64>, limit: usize)
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    if body.is_end_stream() || declared.is_some_and(|n| n > limit as u64) {
        return;
    }
    let mut left = limit;
    let _ = tokio::time::timeout(DRAIN_DEADLINE, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                let Some(rest) = left.checked_sub(data.len()) else {
                    return;
                };
                left = rest;
            }
        }
    })
    .await;
}

/// Bytes of report bodies held in memory at once, across all uploads.
#[derive(Debug)]
struct Budget {
    used: AtomicUsize,
    max: usize,
}

impl Budget {
    fn new(max: usize) -> Self {
        Budget {
            used: AtomicUsize::new(0),
            max,
        }
    }

    fn reserve(&self, bytes: usize) -> Result<Reservation<'_>, Refusal> {
        let mut r = Reservation {
            budget: self,
            bytes: 0,
        };
        r.grow_to(bytes)?;
        Ok(r)
    }
}

/// Part of the [`Budget`], given back when dropped.
#[derive(Debug)]
struct Reservation<'a> {
    budget: &'a Budget,
    bytes: usize,
}

impl Reservation<'_> {
    /// Holds `bytes` in all, or 503 if the budget has no room for them.
    fn grow_to(&mut self, bytes: usize) -> Result<(), Refusal> {
        let more = bytes.saturating_sub(self.bytes);
        let before = self.budget.used.fetch_add(more, Ordering::Relaxed);
        if before.saturating_add(more) > self.budget.max {
            self.budget.used.fetch_sub(more, Ordering::Relaxed);
            return Err(Refusal::at_once(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many reports arriving at once; retry later",
            ));
        }
        self.bytes += more;
        Ok(())
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Uploads in progress per client address.
#[derive(Debug, Default)]
struct Uploads {
    by_client: Mutex<HashMap<IpAddr, usize>>,
}

impl Uploads {
    /// A place for one more upload from `client`, or `None` at [`MAX_UPLOADS_PER_CLIENT`].
    fn enter(&self, client: IpAddr) -> Option<Upload<'_>> {
        let key = client_key(client);
        let mut map = self.by_client.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_insert(0);
        if *n >= MAX_UPLOADS_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(Upload { uploads: self, key })
    }
}

/// One upload's place, given back when dropped.
struct Upload<'a> {
    uploads: &'a Uploads,
    key: IpAddr,
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        let mut map = self
            .uploads
            .by_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// The address an upload counts against: IPv4 as is (also when mapped into IPv6), IPv6 by its
/// /64, which one host usually has whole.
fn client_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// Keeps a reason to one line: it may quote client input.
fn one_line(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn reply(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsRptConfig;
    use crate::registry::{Registry, Snapshot};
    use crate::tlsrpt::testutil::{fixture, gzip};

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn intake(dir: &tempfile::TempDir, max_compressed: usize) -> HttpsIntake {
        let registry = Arc::new(Registry::new(Snapshot::from_yaml(
            "domain: example.com\nmode: testing\nmx: [mx1.example.com]\nmax_age: 86400\n",
        )));
        let mut config = TlsRptConfig::defaults(dir.path());
        config.report_host = Some("tlsrpt.operator.example".into());
        config.limits.max_compressed = max_compressed;
        HttpsIntake::new(Arc::new(TlsRpt::open(&config, registry).unwrap())).unwrap()
    }

    fn post(path: &str, ct: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
        Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(http::header::HOST, "tlsrpt.operator.example")
            .header(CONTENT_TYPE, ct)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    async fn status(i: &HttpsIntake, req: Request<Full<Bytes>>) -> (u16, String) {
        let resp = i.handle(req, LOCAL, || {}).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn stores_once_and_refuses_with_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let i = intake(&dir, 1 << 20);
        let json = fixture("rfc-example.json");
        let path = "/tlsrpt/Example.COM.";
        let ok = status(&i, post(path, "application/tlsrpt+gzip", gzip(&json))).await;
        assert_eq!(ok, (200, "report stored\n".into()));
        let dup = status(&i, post(path, "application/tlsrpt+json", json.clone())).await;
        assert_eq!(dup.0, 200);
        assert!(dup.1.contains("duplicate"));
        assert_eq!(i.tlsrpt.stats.get(Source::Https, IntakeOutcome::Stored), 1);
        assert_eq!(
            i.tlsrpt.stats.get(Source::Https, IntakeOutcome::Duplicate),
            1
        );

        let (code, text) = status(&i, post(path, "application/json", json.clone())).await;
        assert_eq!(code, 415);
        assert_eq!(text.lines().count(), 1, "{text}");
        let (code, _) = status(
            &i,
            post(
                "/tlsrpt/other.example",
                "application/tlsrpt+json",
                json.clone(),
            ),
        )
        .await;
        assert_eq!(code, 404);
        let (code, _) = status(&i, post("/", "application/tlsrpt+json", json.clone())).await;
        assert_eq!(code, 404);
        let (code, text) = status(
            &i,
            post(path, "application/tlsrpt+json", b"{\"x\":\n1}".to_vec()),
        )
        .await;
        assert_eq!(code, 400);
        assert_eq!(text.lines().count(), 1, "{text}");

        let get = Request::builder()
            .uri(path)
            .header(http::header::HOST, "tlsrpt.operator.example")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = i.handle(get, LOCAL, || {}).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[ALLOW], "POST");

        let mut wrong_host = post(path, "application/tlsrpt+json", json);
        wrong_host.headers_mut().insert(
            http::header::HOST,
            HeaderValue::from_static("mta-sts.example.com"),
        );
        assert_eq!(status(&i, wrong_host).await.0, 421);
    }

    #[tokio::test]
    async fn oversized_bodies_are_413_declared_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let i = intake(&dir, 4096);
        let mut req = post(
            "/tlsrpt/example.com",
            "application/tlsrpt+json",
            vec![b' '; 5000],
        );
        req.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("5000"));
        assert_eq!(status(&i, req).await.0, 413);
        // Without Content-Length, the read stops at the cap.
        let req = post(
            "/tlsrpt/example.com",
            "application/tlsrpt+json",
            vec![b' '; 5000],
        );
        assert_eq!(status(&i, req).await.0, 413);
        assert_eq!(
            i.tlsrpt.stats.get(Source::Https, IntakeOutcome::TooLarge),
            2
        );
    }

    /// A body that never ends: `chunk` every `period`.
    struct Trickle {
        next: std::pin::Pin<Box<tokio::time::Sleep>>,
        period: Duration,
        chunk: Bytes,
    }

    impl Trickle {
        fn new(period: Duration, chunk: &[u8]) -> Self {
            Trickle {
                next: Box::pin(tokio::time::sleep(period)),
                period,
                chunk: Bytes::copy_from_slice(chunk),
            }
        }
    }

    impl hyper::body::Body for Trickle {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            use std::future::Future;
            std::task::ready!(self.next.as_mut().poll(cx));
            let at = Instant::now() + self.period;
            self.next.as_mut().reset(at);
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(self.chunk.clone()))))
        }
    }

    fn trickling(period: Duration, chunk: &[u8]) -> Request<Trickle> {
        Request::builder()
            .method(Method::POST)
            .uri("/tlsrpt/example.com")
            .header(http::header::HOST, "tlsrpt.operator.example")
            .header(CONTENT_TYPE, "application/tlsrpt+json")
            .body(Trickle::new(period, chunk))
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn slow_bodies_are_408_by_rate_and_by_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let i = intake(&dir, 1 << 20);
        // A byte every 2 s: cut once the grace is over.
        let started = Instant::now();
        let resp = i
            .handle(trickling(Duration::from_secs(2), b" "), LOCAL, || {})
            .await;
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        let took = started.elapsed();
        assert!(
            took >= BODY_RATE_GRACE && took < BODY_RATE_GRACE * 2,
            "{took:?}"
        );
        // 2 KiB a second beats the minimum rate but never ends: cut at the deadline.
        let started = Instant::now();
        let resp = i
            .handle(
                trickling(Duration::from_secs(1), &[b' '; 2048]),
                LOCAL,
                || {},
            )
            .await;
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        let took = started.elapsed();
        assert!(
            took >= BODY_DEADLINE && took < BODY_DEADLINE + Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(
            i.tlsrpt.stats.get(Source::Https, IntakeOutcome::TimedOut),
            2
        );
        // Both places were given back.
        assert!(i.uploads.by_client.lock().unwrap().is_empty());
        assert_eq!(i.buffered.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn uploads_count_per_address_and_ipv6_per_64() {
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_key(v6("2001:db8:1:2:3:4:5:6")), v6("2001:db8:1:2::"));
        assert_eq!(client_key(v6("::ffff:192.0.2.7")), v6("192.0.2.7"));
        let uploads = Uploads::default();
        let held: Vec<_> = (0..MAX_UPLOADS_PER_CLIENT)
            .map(|n| uploads.enter(v6(&format!("2001:db8::{n}"))).unwrap())
            .collect();
        assert!(uploads.enter(v6("2001:db8::ffff")).is_none());
        assert!(uploads.enter(v6("2001:db8:0:1::1")).is_some());
        drop(held);
        assert!(uploads.enter(v6("2001:db8::1")).is_some());
    }
}
