//! What the built-in DNS zone costs with 100 000 tenants: the refreshes of the ready gate, and
//! the answers per second over UDP on loopback (the server on one runtime thread).
//!
//! `cargo bench --bench dns` (optionally `-- <tenants> <seconds> <clients>`). Prints figures;
//! asserts nothing about time. The rate limit is off here: it would measure itself.

use std::net::UdpSocket;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use mta_stsd::certs::{CertBoard, CertInfo, CertState, CertStatus};
use mta_stsd::dns::limit::RateLimit;
use mta_stsd::dns::{DnsZone, Sockets};
use mta_stsd::registry::{Registry, Snapshot};
use mta_stsd::stats::Metrics;

const SERVER: &str = "listen: \"127.0.0.1:0\"\nstate_dir: s\nissuer: internal\ndns:\n  listen: \"127.0.0.1:0\"\n  zone: sts.operator.example\n  nameservers: [ns1.operator.example]\n  hostmaster: hostmaster.operator.example\n";

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn tenants(n: usize) -> Snapshot {
    let mut yaml = String::with_capacity(n * 80);
    for i in 0..n {
        yaml.push_str(&format!(
            "- {{domain: t{i}.example, mode: testing, mx: [mx.t{i}.example], max_age: 604800}}\n"
        ));
    }
    let file = mta_stsd::config::parse_tenants(Path::new("bench.yaml"), &yaml);
    Snapshot::new(file.tenants.into_iter().map(Arc::new).collect(), vec![])
}

fn timed(label: &str, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    println!("{label}: {:.1} ms", t.elapsed().as_secs_f64() * 1000.0);
}

fn query(i: u64, n: u64) -> Vec<u8> {
    let name = format!("t{}.example._mta-sts.sts.operator.example.", i % n);
    let mut msg = Message::new((i % 65536) as u16, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(
        Name::from_ascii(&name).unwrap(),
        RecordType::TXT,
    ));
    msg.to_vec().unwrap()
}

/// `clients` threads asking in lock step (send, wait for the answer) for `seconds`.
fn load(addr: std::net::SocketAddr, n: u64, seconds: u64, clients: u64) -> u64 {
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (done, answered) = (done.clone(), answered.clone());
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_secs(1)))
                    .unwrap();
                let mut buf = [0u8; 1500];
                let mut i = c * 7919;
                while !done.load(Ordering::Relaxed) {
                    socket.send_to(&query(i, n), addr).unwrap();
                    if socket.recv(&mut buf).is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    done.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    answered.load(Ordering::Relaxed)
}

fn main() {
    let n = arg(0, 100_000) as usize;
    let (seconds, clients) = (arg(1, 5), arg(2, 2));
    let config = mta_stsd::config::parse_server_config(Path::new("/nonexistent"), SERVER).unwrap();
    let registry = Registry::new(tenants(n));
    let board = CertBoard::new();
    for t in registry.load().tenants() {
        let mut status = CertStatus::new(CertState::Valid, "internal");
        status.cert = Some(CertInfo {
            issuer: "ca".into(),
            serial: "01".into(),
            not_before: 0,
            not_after: i64::MAX,
        });
        board.set(&t.host, status);
    }
    let metrics = Arc::new(Metrics::new());
    let zone = DnsZone::new(&config, metrics.clone(), None)
        .unwrap()
        .unwrap();
    println!("{n} tenants");
    timed("first refresh (walk, every id ready, zone filled)", || {
        zone.refresh(&registry, &board)
    });
    timed("quiet refresh (nothing changed)", || {
        zone.refresh(&registry, &board)
    });
    let same = registry.load().with_changes(&[], vec![]);
    registry.swap(same);
    timed("refresh after a reload that changed nothing (walk)", || {
        zone.refresh(&registry, &board)
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sockets = Sockets::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = sockets.local_addr().unwrap();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let unlimited = RateLimit::with_rate(f64::INFINITY, f64::INFINITY);
    let _guard = runtime.enter();
    runtime.spawn(mta_stsd::dns::serve(
        sockets,
        zone.zone().clone(),
        metrics,
        unlimited,
        stop,
    ));
    let answered = load(addr, n as u64, seconds, clients);
    println!(
        "UDP TXT queries answered: {answered} in {seconds} s with {clients} clients = {:.0}/s (server on 1 runtime thread)",
        answered as f64 / seconds as f64
    );
}
