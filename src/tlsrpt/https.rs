//! HTTPS intake (RFC 8460 §5.4): `POST https://<report host>/tlsrpt/<tenant domain>`.
//!
//! The tenant comes from the path, so a report is routed even when its JSON lacks
//! `policy-domain` (as Postfix's reports do). Order of checks, cheapest first, so refusing
//! costs little: method → path → Host → tenant in the current snapshot → media type →
//! `Content-Length` against the compressed cap → body read with the cap enforced while
//! reading → [`decode`] and the insert on a blocking thread. 2xx only once the insert has
//! committed (a duplicate is also 2xx); every refusal is one line of text.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;

use super::decode::{Limits, decode, media_type};
use super::intake::{Accepted, Tenant};
use super::report::{ReportError, normalize_domain};
use super::service::{IntakeOutcome, TlsRpt};
use super::store::{InsertOutcome, Source, StoreError};
use crate::util::http::{Body, TEXT_PLAIN, request_host};

pub use crate::config::REPORT_PATH_PREFIX;

/// Reports decoded and stored at once. Each holds up to the compressed cap plus the
/// decompressed cap in memory, so this bounds intake memory; further senders wait.
pub const MAX_CONCURRENT_REPORTS: usize = 8;

/// How long a report waits for one of the [`MAX_CONCURRENT_REPORTS`] slots before 503.
const SLOT_WAIT: Duration = Duration::from_secs(30);

/// `Retry-After` on 503: senders retry for up to 24 h anyway (RFC 8460 §5.5).
const RETRY_AFTER_SECS: &str = "300";

/// Longest domain echoed in a refusal: a DNS name is at most 253 characters.
const MAX_ECHO: usize = 253;

/// A refusal: status and one line of text.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    reason: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
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
        Refusal::new(status, reason)
    }
}

/// The HTTPS report endpoint of one report host.
pub struct HttpsIntake {
    tlsrpt: Arc<TlsRpt>,
    host: String,
    slots: Semaphore,
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
        Some(HttpsIntake {
            tlsrpt,
            host,
            slots: Semaphore::new(MAX_CONCURRENT_REPORTS),
        })
    }

    /// The report host (lowercase).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Answers one request made on a connection to the report host. `progress` is called
    /// whenever body bytes arrive, so the connection's idle timer does not cut a slow upload.
    pub async fn handle<B>(&self, req: Request<B>, progress: impl Fn() + Sync) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: Display,
    {
        let stats = &self.tlsrpt.stats;
        match self.accept(req, &progress).await {
            Ok(accepted) => {
                let label = IntakeOutcome::from(accepted.outcome);
                let text = match accepted.outcome {
                    InsertOutcome::Inserted => "report stored\n",
                    InsertOutcome::Duplicate => "duplicate report, already stored\n",
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
                if let Some(outcome) = IntakeOutcome::from_status(refusal.status.as_u16()) {
                    stats.record(Source::Https, outcome);
                }
                tracing::debug!(status = refusal.status.as_u16(), reason = %refusal.reason, "TLS-RPT report refused");
                refuse(refusal)
            }
        }
    }

    /// The checks in the module doc's order, then the store: `Ok` only once committed.
    async fn accept<B>(
        &self,
        req: Request<B>,
        progress: &(dyn Fn() + Sync),
    ) -> Result<Accepted, Refusal>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: Display,
    {
        let tenant = self.check_target(&req)?;
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        media_type(&content_type)?;
        let limits = self.tlsrpt.config.limits;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_compressed as u64) {
            return Err(too_large(limits.max_compressed));
        }
        let _slot = tokio::time::timeout(SLOT_WAIT, self.slots.acquire())
            .await
            .map_err(|_| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many reports arriving at once; retry later",
                )
            })?
            .map_err(|_| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
        let body = read_capped(req.into_body(), limits.max_compressed, declared, progress).await?;
        self.decode_and_accept(tenant, body, content_type, limits)
            .await
    }

    /// Method, path, Host and tenant, before anything of the body is read.
    fn check_target<B>(&self, req: &Request<B>) -> Result<Tenant, Refusal> {
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
            Ok::<_, Refusal>(tlsrpt.accept(tenant, report, raw_json, Source::Https)?)
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

/// Reads the body, stopping with 413 as soon as it passes `cap`: an oversized upload costs at
/// most `cap` bytes of memory whatever it declared.
async fn read_capped<B>(
    mut body: B,
    cap: usize,
    declared: Option<u64>,
    progress: &(dyn Fn() + Sync),
) -> Result<Vec<u8>, Refusal>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    let initial = declared
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
        .min(cap);
    let mut buf = Vec::with_capacity(initial);
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("reading the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we use
        };
        if buf.len() + data.len() > cap {
            return Err(too_large(cap));
        }
        buf.extend_from_slice(&data);
        progress();
    }
    Ok(buf)
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
        let resp = i.handle(req, || {}).await;
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
        let resp = i.handle(get, || {}).await;
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
}
