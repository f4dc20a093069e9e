//! HTTP pieces every listener shares (policy host, report intake, admin API): the body
//! type, plain-text answers and the request's host. Here, below `tlsrpt` and `http`, so the
//! report intake does not depend on the policy router.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;

/// `Content-Type` of policies and error bodies (RFC 8461 §3.2; real senders insist on it).
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
/// The response body type of every route.
pub type Body = Full<Bytes>;

/// Why a request names no usable host.
#[derive(Debug, PartialEq, Eq)]
pub enum HostError {
    /// No `:authority` and no (or an empty or non-text) `Host` header.
    Missing,
    /// More than one `Host` header: which one counts is ambiguous, so neither does
    /// (RFC 9112 §3.2 asks for a 400).
    Repeated,
}

/// The request's host without port or trailing dot, lowercased: the h2 `:authority` or the
/// HTTP/1.1 `Host` header. `None` when missing or repeated (see [`checked_request_host`]).
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    checked_request_host(req).ok()
}

/// [`request_host`], saying why there is none.
pub fn checked_request_host<B>(req: &Request<B>) -> Result<String, HostError> {
    let mut values = req.headers().get_all(HOST).iter();
    let header = values.next();
    if values.next().is_some() {
        return Err(HostError::Repeated);
    }
    let raw = match req.uri().authority() {
        Some(authority) => authority.host().to_owned(),
        None => {
            let value = header
                .and_then(|v| v.to_str().ok())
                .ok_or(HostError::Missing)?
                .trim();
            match value.rsplit_once(':') {
                Some((host, port))
                    if !host.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    host.to_owned()
                }
                _ => value.to_owned(),
            }
        }
    };
    let host = raw.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return Err(HostError::Missing);
    }
    Ok(host)
}

/// A short plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    text_bytes(status, Bytes::from_static(body.as_bytes()))
}

/// [`text`] with a body made at run time.
pub fn text_owned(status: StatusCode, body: String) -> Response<Body> {
    text_bytes(status, Bytes::from(body))
}

fn text_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
    resp
}
