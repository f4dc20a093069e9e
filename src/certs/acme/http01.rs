//! HTTP-01 (RFC 8555 §8.3): the plain-HTTP listener that answers challenge paths only.
//!
//! Everything else gets a plain 404, never a redirect: MTA-STS fetchers must not follow one
//! (RFC 8461 §3.3), and this port exists for the CA alone. Bounded like the HTTPS listener.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Path prefix of HTTP-01 answers.
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// Connections served at once: only the CA's validators come here.
const MAX_CONNECTIONS: usize = 256;
/// Time for a request head, and for a whole connection.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head.
const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Token → key authorization for the HTTP-01 challenges in flight.
#[derive(Debug, Default)]
pub struct Tokens {
    map: RwLock<HashMap<String, String>>,
}

impl Tokens {
    /// Answers `token` with `key_authorization` until [`Tokens::remove`].
    pub fn insert(&self, token: &str, key_authorization: &str) {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Stops answering `token`.
    pub fn remove(&self, token: &str) {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }

    /// Whether no token is answered.
    pub fn is_empty(&self) -> bool {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    fn get(&self, token: &str) -> Option<String> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }
}

/// The answer to one request: the key authorization or a plain 404.
pub fn respond(tokens: &Tokens, path: &str) -> Response<Full<Bytes>> {
    let answer = path
        .strip_prefix(CHALLENGE_PREFIX)
        .and_then(|token| tokens.get(token));
    let (status, body) = match answer {
        Some(key_authorization) => (StatusCode::OK, key_authorization),
        None => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Serves `listener` until `stop` turns true.
pub async fn run(listener: TcpListener, tokens: Arc<Tokens>, stop: watch::Receiver<bool>) {
    crate::accept::accept_bounded(
        listener,
        MAX_CONNECTIONS,
        "acme-http01",
        stop,
        move |tcp, _| {
            let tokens = tokens.clone();
            async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    std::future::ready(Ok::<_, Infallible>(respond(&tokens, req.uri().path())))
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEADER_BYTES)
                    .keep_alive(false);
                let conn = builder.serve_connection(TokioIo::new(tcp), service);
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            }
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_known_tokens_only() {
        let tokens = Tokens::default();
        tokens.insert("abc", "abc.thumb");
        let ok = respond(&tokens, "/.well-known/acme-challenge/abc");
        assert_eq!(ok.status(), StatusCode::OK);
        for path in [
            "/.well-known/acme-challenge/other",
            "/.well-known/acme-challenge/",
            "/",
            "/.well-known/mta-sts.txt",
        ] {
            let resp = respond(&tokens, path);
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
            assert!(resp.headers().get(header::LOCATION).is_none());
        }
        assert!(!tokens.is_empty());
        tokens.remove("abc");
        assert!(tokens.is_empty());
        let gone = respond(&tokens, "/.well-known/acme-challenge/abc");
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    }
}
