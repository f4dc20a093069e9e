//! Policy fetches: HTTP/1.1 and h2, on keep-alive connections (one tenant per connection, a
//! random number of requests, then another tenant) and on a new connection per request (with
//! and without TLS session resumption). Every answer must be 200 with an expected body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::net::{self, Conn, Reply};
use crate::state::{Counts, Rng, Shared};

const POLICY_PATH: &str = "/.well-known/mta-sts.txt";
/// Far above any answer time of a healthy daemon, even one waiting for a connection slot.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

fn host(shared: &Shared, t: usize) -> String {
    format!("mta-sts.{}", shared.layout.domains[t])
}

async fn get(conn: &mut Conn, host: &str) -> Result<Reply, String> {
    match tokio::time::timeout(
        FETCH_TIMEOUT,
        conn.send(Method::GET, host, POLICY_PATH, &[], Bytes::new()),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err("timed out".into()),
    }
}

/// Judges one fetch of tenant `t` and counts it under `kind`.
fn judge(shared: &Shared, kind: usize, t: usize, start: Instant, result: Result<Reply, String>) {
    let end = Instant::now();
    let c = &shared.fetch[kind];
    let label = crate::state::FETCH_KINDS[kind];
    match result {
        Ok(r) if r.status == StatusCode::OK && shared.expect.accepts(t, start, &r.body) => {
            c.ok_era(shared.restart.era(start, end));
            c.took(end - start);
            if shared.expect.tenants[t].lock().unwrap().current != r.body {
                Counts::add(&c.earlier_body);
            }
        }
        Ok(r) => {
            Counts::add(&c.failed);
            shared.fail(format!(
                "{label} {}: status {} body {:?} (expected {:?})",
                shared.layout.domains[t],
                r.status,
                String::from_utf8_lossy(&r.body[..r.body.len().min(120)]),
                String::from_utf8_lossy(&shared.expect.tenants[t].lock().unwrap().current),
            ));
        }
        Err(e) if shared.restart.in_window(start, end) => {
            let _ = e;
            Counts::add(&c.in_window);
        }
        Err(e) => {
            Counts::add(&c.failed);
            shared.fail(format!("{label} {}: {e}", shared.layout.domains[t]));
        }
    }
}

/// Keep-alive fetches on one connection per tenant, `gap` apart; `streams` > 1 sends that
/// many h2 requests at once.
pub async fn keep_alive(shared: Arc<Shared>, seed: u64, h2: bool, streams: usize, gap: Duration) {
    let kind = if h2 { 1 } else { 0 };
    let mut rng = Rng::new(seed);
    while !shared.stopped() {
        let t = rng.below(shared.layout.domains.len());
        let host = host(&shared, t);
        let start = Instant::now();
        let mut conn =
            match net::open(shared.addr, None, &host, shared.tls.pick(h2, true), h2).await {
                Ok(c) => c,
                Err(e) => {
                    judge(&shared, kind, t, start, Err(e));
                    shared.nap(Duration::from_millis(50)).await;
                    continue;
                }
            };
        let rounds = 20 + rng.below(200);
        for round in 0..rounds {
            if !shared.nap(gap).await {
                break;
            }
            if !conn.ready().await {
                break; // closed by the server between requests (idle, age): a new one
            }
            if streams > 1 {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..streams {
                    let mut c = conn.h2_clone().expect("h2");
                    let (shared, host) = (shared.clone(), host.clone());
                    set.spawn(async move {
                        let start = Instant::now();
                        let r = get(&mut c, &host).await;
                        retry_or_judge(&shared, kind, t, start, r, h2, &host, round > 0).await;
                    });
                }
                while set.join_next().await.is_some() {}
            } else {
                let start = Instant::now();
                let r = get(&mut conn, &host).await;
                let failed = r.is_err();
                retry_or_judge(&shared, kind, t, start, r, h2, &host, round > 0).await;
                if failed {
                    break;
                }
            }
        }
    }
}

/// A transport error on a reused connection is retried once on a new connection (the server
/// may close an idle keep-alive connection as the request leaves, RFC 9112 §9.3.1).
#[allow(clippy::too_many_arguments)]
async fn retry_or_judge(
    shared: &Shared,
    kind: usize,
    t: usize,
    start: Instant,
    r: Result<Reply, String>,
    h2: bool,
    host: &str,
    reused: bool,
) {
    if r.is_ok() || !reused || shared.stopped() {
        return judge(shared, kind, t, start, r);
    }
    Counts::add(&shared.fetch[kind].retried);
    let start = Instant::now();
    let r = match net::open(shared.addr, None, host, shared.tls.pick(h2, true), h2).await {
        Ok(mut c) => get(&mut c, host).await,
        Err(e) => Err(e),
    };
    judge(shared, kind, t, start, r)
}

/// One fetch per new connection, `gap` apart; every other one without session resumption
/// (a full handshake).
pub async fn new_connections(shared: Arc<Shared>, seed: u64, h2: bool, gap: Duration) {
    let kind = if h2 { 3 } else { 2 };
    let mut rng = Rng::new(seed);
    let mut resume = false;
    while shared.nap(gap).await {
        resume = !resume;
        let t = rng.below(shared.layout.domains.len());
        let host = host(&shared, t);
        let start = Instant::now();
        let r = async {
            let mut c =
                net::open(shared.addr, None, &host, shared.tls.pick(h2, resume), h2).await?;
            get(&mut c, &host).await
        };
        let r = match tokio::time::timeout(FETCH_TIMEOUT, r).await {
            Ok(r) => r,
            Err(_) => Err("timed out (connect + fetch)".into()),
        };
        judge(&shared, kind, t, start, r);
    }
}
