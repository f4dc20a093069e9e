//! Connection floods past the connection cap (silent TCP, handshaken-then-silent TLS, half a
//! ClientHello) and slowloris clients (a request head, or the ClientHello itself, dribbled a
//! byte at a time) held against the cap. None of them may cost a policy fetch; every slowloris
//! connection must be closed by the server within its timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net;
use crate::setup::LIMITS;
use crate::state::{Counts, Rng, Shared};

#[derive(Default)]
pub struct AbuseStats {
    pub floods: AtomicU64,
    pub flood_connections: AtomicU64,
    pub flood_handshakes: AtomicU64,
    pub slow_heads: AtomicU64,
    pub slow_hellos: AtomicU64,
    /// Longest time a slowloris connection stayed open, by kind, in ms.
    pub slow_head_max_ms: AtomicU64,
    pub slow_hello_max_ms: AtomicU64,
    /// Slowloris connections the server had not closed within the bound.
    pub slow_overdue: AtomicU64,
}

/// Longest a slowloris connection may live: the timeout plus scheduling slack.
pub fn slow_bound(handshake: bool) -> Duration {
    let timeout = if handshake {
        5
    } else {
        LIMITS.header_read_timeout_s
    };
    Duration::from_secs(timeout + 5)
}

/// Every `gap`, opens the cap + 64 connections at once and holds them for 3 s.
pub async fn floods(shared: Arc<Shared>, stats: Arc<AbuseStats>, gap: Duration) {
    let n = LIMITS.max_connections + 64;
    let mut round = 0u64;
    while shared.nap(gap).await {
        round += 1;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let (shared, stats) = (shared.clone(), stats.clone());
            let host = format!(
                "mta-sts.{}",
                shared.layout.domains[(i * 7 + round as usize) % shared.layout.domains.len()]
            );
            set.spawn(async move { flood_one(&shared, &stats, i % 3, &host).await });
        }
        while set.join_next().await.is_some() {}
        Counts::add(&stats.floods);
    }
}

async fn flood_one(shared: &Shared, stats: &AbuseStats, kind: usize, host: &str) {
    let hold = Duration::from_secs(3);
    match kind {
        0 => {
            if let Ok(_s) = net::tcp(shared.addr, None).await {
                Counts::add(&stats.flood_connections);
                tokio::time::sleep(hold).await;
            }
        }
        1 => {
            let cfg = shared.tls.pick(false, true);
            let r = tokio::time::timeout(hold, net::tls(shared.addr, None, host, cfg)).await;
            Counts::add(&stats.flood_connections);
            if let Ok(Ok(_s)) = r {
                Counts::add(&stats.flood_handshakes);
                tokio::time::sleep(hold).await;
            }
        }
        _ => {
            if let Ok(mut s) = net::tcp(shared.addr, None).await {
                Counts::add(&stats.flood_connections);
                // A record header announcing 200 bytes of handshake, and the first few.
                let _ = s
                    .write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03])
                    .await;
                tokio::time::sleep(hold).await;
            }
        }
    }
}

/// A real ClientHello for `host`, as bytes on the wire.
fn client_hello(shared: &Shared, host: &str) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).expect("host name");
    let mut conn =
        rustls::ClientConnection::new(shared.tls.pick(false, false), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("ClientHello");
    }
    out
}

/// Keeps `n` slowloris clients going until stopped, half dribbling a request head after the
/// handshake, half dribbling the ClientHello.
pub async fn slowloris(shared: Arc<Shared>, stats: Arc<AbuseStats>, n: usize) {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (shared, stats) = (shared.clone(), stats.clone());
        set.spawn(async move {
            let mut rng = Rng::new(1000 + i as u64);
            while !shared.stopped() {
                let t = rng.below(shared.layout.domains.len());
                let host = format!("mta-sts.{}", shared.layout.domains[t]);
                if i % 2 == 0 {
                    slow_head(&shared, &stats, &host).await;
                } else {
                    slow_hello(&shared, &stats, &host).await;
                }
                shared.nap(Duration::from_millis(100)).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Dribbles `bytes` a byte every `every` while reading; returns how long the server kept the
/// connection open (`None`: stopped, or the whole input was sent).
async fn dribble<S>(shared: &Shared, stream: S, bytes: &[u8], every: Duration) -> Option<Duration>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let opened = Instant::now();
    let mut buf = [0u8; 4096];
    let mut next = 0;
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Some(opened.elapsed()),
                Ok(_) => {} // e.g. a 408 before the close
            },
            _ = tokio::time::sleep(every) => {
                if shared.stopped() || next >= bytes.len() {
                    return None;
                }
                if wr.write_all(&bytes[next..next + 1]).await.is_err() {
                    return Some(opened.elapsed());
                }
                next += 1;
            }
        }
    }
}

fn note(stats: &AbuseStats, shared: &Shared, handshake: bool, lived: Option<Duration>) {
    let Some(lived) = lived else { return };
    let (count, max) = if handshake {
        (&stats.slow_hellos, &stats.slow_hello_max_ms)
    } else {
        (&stats.slow_heads, &stats.slow_head_max_ms)
    };
    Counts::add(count);
    max.fetch_max(lived.as_millis() as u64, Ordering::Relaxed);
    if lived > slow_bound(handshake) {
        Counts::add(&stats.slow_overdue);
        shared.fail(format!(
            "slowloris ({}) connection open for {lived:?}",
            if handshake {
                "ClientHello"
            } else {
                "request head"
            }
        ));
    }
}

async fn slow_head(shared: &Shared, stats: &AbuseStats, host: &str) {
    let cfg = shared.tls.pick(false, true);
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_secs(30),
        net::tls(shared.addr, None, host, cfg),
    )
    .await
    else {
        return;
    };
    let head = format!("GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n");
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let rest: Vec<u8> = (0..10_000)
        .flat_map(|k| format!("X-Slow-{k}: y\r\n").into_bytes())
        .collect();
    let lived = dribble(shared, s, &rest, Duration::from_millis(200)).await;
    note(stats, shared, false, lived);
}

async fn slow_hello(shared: &Shared, stats: &AbuseStats, host: &str) {
    let hello = client_hello(shared, host);
    let Ok(s) = net::tcp(shared.addr, None).await else {
        return;
    };
    let lived = dribble(shared, s, &hello, Duration::from_millis(100)).await;
    note(stats, shared, true, lived);
}
