//! What the HTTP targets share: a small registry of tenants, one current-thread runtime per
//! process, and one HTTP/1.1 connection served by hyper with the server's own settings over
//! an in-memory pipe.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mta_stsd::config::{Limits, Tenant, parse_tenants};
use mta_stsd::registry::{Registry, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Three tenants whose policy hosts do not contain one another.
const TENANTS: &str = "\
- {domain: example.com, mode: enforce, mx: [mx1.example.com, '*.mx.example.net'], max_age: 604800}
- {domain: example.org, mode: testing, mx: [mail.example.org], max_age: 86400}
- {domain: xn--bcher-kva.example, mode: none, max_age: 86400}
";

/// The tenants, parsed once by the real loader.
pub fn tenants() -> &'static [Arc<Tenant>] {
    static TENANTS_: OnceLock<Vec<Arc<Tenant>>> = OnceLock::new();
    TENANTS_.get_or_init(|| {
        let file = parse_tenants(std::path::Path::new("fuzz.yaml"), TENANTS);
        assert_eq!(file.tenants.len(), 3, "{:?}", file.diagnostics);
        file.tenants.into_iter().map(Arc::new).collect()
    })
}

/// A registry holding [`tenants`].
pub fn registry() -> &'static Arc<Registry> {
    static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| Arc::new(Registry::new(Snapshot::new(tenants().to_vec(), Vec::new()))))
}

/// The runtime every input runs on (time enabled: hyper's header timer uses it).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

/// Sends `input` as the whole client side of one connection (then EOF) to hyper's HTTP/1.1
/// server built by `server::http1_builder` with the default limits (half-close allowed),
/// answering each request
/// with `answer`; returns the bytes hyper wrote back.
pub fn serve<F, Fut>(input: &[u8], answer: F) -> Vec<u8>
where
    F: Fn(Request<Incoming>) -> Fut + Copy,
    Fut: Future<Output = Response<mta_stsd::http::Body>>,
{
    runtime().block_on(async move {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let service = service_fn(move |req| {
            let fut = answer(req);
            async move { Ok::<_, std::convert::Infallible>(fut.await) }
        });
        // The daemon's settings, plus half-close: the input ends with EOF, and without it
        // hyper would drop requests still unanswered when it reads that EOF.
        let conn = mta_stsd::server::http1_builder(&Limits::default())
            .half_close(true)
            .serve_connection(TokioIo::new(server), service);
        let talk = async {
            let mut out = Vec::new();
            // Write and read at once: hyper may answer before the input is all written.
            let (mut rd, mut wr) = tokio::io::split(&mut client);
            let write = async {
                let _ = wr.write_all(input).await;
                let _ = wr.shutdown().await;
            };
            let read = async {
                let _ = rd.read_to_end(&mut out).await;
            };
            tokio::join!(write, read);
            out
        };
        let (_, out) = tokio::join!(conn, talk);
        out
    })
}

/// The full body of a response we built ourselves (never fails: it is `Full`).
pub async fn body_bytes(resp: Response<mta_stsd::http::Body>) -> (http::response::Parts, Bytes) {
    use http_body_util::BodyExt;
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (parts, bytes)
}

/// Prints one line per answer when `FUZZ_TRACE` is set, for looking at what an input does
/// (`FUZZ_TRACE=1 cargo +nightly fuzz run <target> <input>`).
pub fn trace(what: std::fmt::Arguments<'_>) {
    if std::env::var_os("FUZZ_TRACE").is_some() {
        eprintln!("{what}");
    }
}
