//! Raw HTTP/1.1 request bytes → hyper's server (the daemon's settings) → `http::handle` over
//! a registry of three tenants, as a policy connection runs after the TLS handshake.
//!
//! The first byte chooses the connection's SNI: none, one of two tenants' hosts, or an
//! unknown name (the handshake refuses unknown names, but `handle` must not rely on it).
//!
//! Properties of every response `handle` makes: its status is one of 200, 400, 404, 405,
//! 421; 405 names `GET, HEAD`; a 200 answers a GET or HEAD of the policy path, is
//! `text/plain`, and carries the policy of a tenant named by the request (URI authority,
//! Host or SNI) and agreeing with the SNI: the exact rendered body for GET, no body and its
//! length for HEAD.
#![no_main]

mod common;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use libfuzzer_sys::fuzz_target;
use mta_stsd::http::{POLICY_PATH, TEXT_PLAIN, handle};

const SNIS: [Option<&str>; 4] = [
    None,
    Some("mta-sts.example.com"),
    Some("MTA-STS.example.org"),
    Some("mta-sts.unknown.example"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let sni = SNIS[usize::from(selector % 4)];
    common::serve(input, move |req: Request<Incoming>| async move {
        let resp = handle(common::registry(), sni, &req);
        let (parts, body) = common::body_bytes(resp).await;
        check(&req, sni, &parts, &body);
        http::Response::from_parts(parts, http_body_util::Full::new(body))
    });
});

fn check(req: &Request<Incoming>, sni: Option<&str>, parts: &http::response::Parts, body: &Bytes) {
    let status = parts.status;
    common::trace(format_args!("{status} {:?} {req:?}", sni));
    assert!(
        [200, 400, 404, 405, 421].contains(&status.as_u16()),
        "unexpected {status} for {req:?}"
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        assert_eq!(parts.headers[ALLOW], "GET, HEAD");
        assert!(req.method() != Method::GET && req.method() != Method::HEAD);
    }
    if status != StatusCode::OK {
        return;
    }
    assert!(
        req.method() == Method::GET || req.method() == Method::HEAD,
        "{req:?}"
    );
    assert_eq!(req.uri().path(), POLICY_PATH);
    assert_eq!(parts.headers[CONTENT_TYPE], TEXT_PLAIN);
    let named: Vec<String> = [
        req.uri().authority().map(|a| a.as_str().to_owned()),
        req.headers()
            .get(HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()),
        sni.map(str::to_owned),
    ]
    .into_iter()
    .flatten()
    .map(|n| n.to_ascii_lowercase())
    .collect();
    let head = req.method() == Method::HEAD;
    let served = |t: &&std::sync::Arc<mta_stsd::config::Tenant>| {
        let want = &t.policy.body;
        parts.headers[CONTENT_LENGTH] == want.len().to_string().as_str()
            && if head { body.is_empty() } else { body == want }
    };
    // The body is the policy of one of the tenants the request names (a Host header may name
    // another than the absolute URI, which wins), and of the one the SNI names if any.
    let tenant = common::tenants()
        .iter()
        .filter(|t| named.iter().any(|n| n.contains(&t.host)))
        .find(served)
        .unwrap_or_else(|| panic!("200 with no named tenant's policy: {req:?} {body:?}"));
    if let Some(sni) = sni {
        assert!(
            sni.eq_ignore_ascii_case(&tenant.host),
            "{sni} served {}",
            tenant.host
        );
    }
}
