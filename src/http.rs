//! Request routing: Host → tenant → pre-rendered policy bytes.
//!
//! Everything a response needs was computed at load time; a request does one map lookup on an
//! immutable snapshot and copies a reference-counted body. Never a redirect (RFC 8461 §3.3).
//! Requests on the TLS-RPT report host never come here: the server hands those connections to
//! [`crate::tlsrpt::HttpsIntake`].

use http::header::{ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::Full;

use crate::registry::Registry;
pub use crate::util::http::{
    Body, HostError, TEXT_PLAIN, checked_request_host, request_host, text,
};

/// The one path a policy is served at (RFC 8461 §3.2).
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";
/// Short caching for shared fetchers; senders themselves must not cache (§3.3).
pub const CACHE_CONTROL_VALUE: &str = "max-age=60";

/// Routes one request. `sni` is the name the TLS client asked for.
pub fn handle<B>(registry: &Registry, sni: Option<&str>, req: &Request<B>) -> Response<Body> {
    let host = match checked_request_host(req) {
        Ok(host) => host,
        Err(HostError::Repeated) => {
            return text(StatusCode::BAD_REQUEST, "more than one Host header\n");
        }
        // HTTP/1.1 requires Host (RFC 9112 §3.2); HTTP/1.0 has none and h2 may omit
        // :authority, and the SNI names the tenant as well as Host would.
        Err(HostError::Missing) => match sni {
            Some(sni) if req.version() != Version::HTTP_11 => sni.to_ascii_lowercase(),
            _ => return text(StatusCode::BAD_REQUEST, "missing Host header\n"),
        },
    };
    let snapshot = registry.load();
    let Some(tenant) = snapshot.get(&host) else {
        return text(StatusCode::NOT_FOUND, "unknown host\n");
    };
    // One certificate per tenant means a client never has a reason to reuse a connection for
    // another tenant's host; answering would serve a body under the wrong certificate.
    if sni.is_some_and(|s| !s.eq_ignore_ascii_case(&host)) {
        return text(
            StatusCode::MISDIRECTED_REQUEST,
            "host does not match TLS server name\n",
        );
    }
    if req.uri().path() != POLICY_PATH {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
    };
    let body = &tenant.policy.body;
    let mut resp = Response::new(if head {
        Full::default()
    } else {
        Full::new(body.clone())
    });
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL_VALUE));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Snapshot;
    use http::header::HOST;

    fn registry() -> Registry {
        Registry::new(Snapshot::from_yaml(
            "domain: example.com\nmode: testing\nmx: [mx.example.com]\nmax_age: 86400\n",
        ))
    }

    fn req(method: Method, host: &str, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, host)
            .body(())
            .unwrap()
    }

    #[test]
    fn routes() {
        let r = registry();
        let ok = handle(
            &r,
            Some("mta-sts.example.com"),
            &req(Method::GET, "mta-sts.example.com:8443", POLICY_PATH),
        );
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[CONTENT_TYPE], TEXT_PLAIN);
        let upper = handle(
            &r,
            None,
            &req(Method::GET, "MTA-STS.Example.COM.", POLICY_PATH),
        );
        assert_eq!(upper.status(), StatusCode::OK);
        let unknown = handle(
            &r,
            None,
            &req(Method::GET, "mta-sts.other.example", POLICY_PATH),
        );
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        let path = handle(&r, None, &req(Method::GET, "mta-sts.example.com", "/"));
        assert_eq!(path.status(), StatusCode::NOT_FOUND);
        let post = handle(
            &r,
            None,
            &req(Method::POST, "mta-sts.example.com", POLICY_PATH),
        );
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
        let mis = handle(
            &r,
            Some("mta-sts.other.example"),
            &req(Method::GET, "mta-sts.example.com", POLICY_PATH),
        );
        assert_eq!(mis.status(), StatusCode::MISDIRECTED_REQUEST);
    }

    #[test]
    fn host_must_be_single_and_present_on_http11_only() {
        let r = registry();
        let sni = Some("mta-sts.example.com");
        let mut twice = req(Method::GET, "mta-sts.example.com", POLICY_PATH);
        twice
            .headers_mut()
            .append(HOST, HeaderValue::from_static("mta-sts.example.com"));
        assert_eq!(handle(&r, sni, &twice).status(), StatusCode::BAD_REQUEST);
        let bare = |version| {
            Request::builder()
                .version(version)
                .uri(POLICY_PATH)
                .body(())
                .unwrap()
        };
        assert_eq!(
            handle(&r, sni, &bare(Version::HTTP_10)).status(),
            StatusCode::OK
        );
        assert_eq!(
            handle(&r, None, &bare(Version::HTTP_10)).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            handle(&r, sni, &bare(Version::HTTP_11)).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
