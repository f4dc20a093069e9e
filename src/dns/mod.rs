//! The built-in authoritative DNS server for the zone the operator delegates to mta-stsd.
//!
//! Customers alias `_mta-sts.<domain>` and `_smtp._tls.<domain>` into the zone once
//! ([`names`]); the zone answers each tenant's TXT records from the live snapshot, and a new
//! `_mta-sts` id only once its policy is served over a valid certificate ([`gate`]), which
//! makes RFC 8461 §8.1's order automatic. hickory serves the wire protocol (UDP and TCP,
//! EDNS, truncation, REFUSED outside the zone); [`zone`] holds the records.
//!
//! A failure here is logged and stays here: the policy listener does not depend on it.

pub mod count;
pub mod gate;
pub mod limit;
pub mod names;
pub mod tcp;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hickory_server::Server;
use hickory_server::zone_handler::Catalog;
use tokio::sync::watch;

use crate::certs::CertBoard;
use crate::certs::acme::dns01::Answers;
use crate::config::ServerConfig;
use crate::publish::Publishing;
use crate::registry::Registry;
use crate::stats::Metrics;
pub use gate::Gate;
pub use zone::Zone;

/// How often the zone is brought in line with the snapshot and the certificate board: a new
/// id appears within a second of being ready, and a quiet tick costs O(1) (see [`gate`]).
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// The UDP socket and TCP listener of the DNS server, on one port.
#[derive(Debug)]
pub struct Sockets {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
}

impl Sockets {
    /// Binds UDP on `listen`, then TCP on the port UDP got (so `:0` gives one port for both).
    /// On `:0` the kernel picks UDP's port without asking TCP, which may hold it already: then
    /// another port is tried, a few times, rather than failing the start on bad luck.
    pub fn bind(listen: SocketAddr) -> anyhow::Result<Sockets> {
        let mut tries = if listen.port() == 0 { 16 } else { 1 };
        loop {
            tries -= 1;
            let udp = std::net::UdpSocket::bind(listen)
                .with_context(|| format!("binding the DNS listener {listen} (UDP)"))?;
            let addr = udp.local_addr()?;
            match std::net::TcpListener::bind(addr) {
                Ok(tcp) => {
                    udp.set_nonblocking(true)?;
                    tcp.set_nonblocking(true)?;
                    return Ok(Sockets { udp, tcp });
                }
                Err(_) if tries > 0 => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("binding the DNS listener {addr} (TCP)"));
                }
            }
        }
    }

    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// The zone with its gate: what the refresh task updates.
pub struct DnsZone {
    zone: Arc<Zone>,
    gate: std::sync::Mutex<Gate>,
    config: ServerConfig,
    metrics: Arc<Metrics>,
}

impl DnsZone {
    /// The zone of `config.dns` (None when there is no `dns:` section), empty until the first
    /// [`DnsZone::refresh`].
    pub fn new(
        config: &ServerConfig,
        metrics: Arc<Metrics>,
        challenges: Option<Arc<Answers>>,
    ) -> anyhow::Result<Option<Arc<DnsZone>>> {
        let Some(dns) = &config.dns else {
            return Ok(None);
        };
        let serial = u32::try_from(crate::util::unix_now()).unwrap_or(u32::MAX);
        let mut zone = Zone::new(dns, serial).context("building the DNS zone")?;
        if let Some(answers) = challenges {
            zone = zone.with_challenges(answers)?;
        }
        Ok(Some(Arc::new(DnsZone {
            zone: Arc::new(zone),
            gate: std::sync::Mutex::new(Gate::new()),
            config: config.clone(),
            metrics,
        })))
    }

    /// The zone's records.
    pub fn zone(&self) -> &Arc<Zone> {
        &self.zone
    }

    /// The zone's name, e.g. `sts.operator.example`.
    pub fn origin(&self) -> &str {
        self.config.dns.as_ref().map_or("", |d| d.zone.as_str())
    }

    /// The `_mta-sts` id the zone answers for `domain` now (`None`: no record yet).
    pub fn answered_id(&self, domain: &str) -> Option<String> {
        let gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        gate.published_id(domain).map(str::to_owned)
    }

    /// Brings the zone in line with the live snapshot and the certificate board.
    pub fn refresh(&self, registry: &Registry, board: &CertBoard) {
        let now = crate::util::unix_now();
        let updates = self.gate.lock().unwrap_or_else(|e| e.into_inner()).refresh(
            &registry.load(),
            board,
            Publishing::of(&self.config),
            now,
        );
        self.zone
            .apply(&updates, u32::try_from(now).unwrap_or(u32::MAX));
        self.metrics
            .dns_zone(self.zone.serial(), self.zone.txt_records());
    }
}

/// Refreshes `dns` once off the runtime threads: at 100 000 tenants the walk of a new
/// snapshot takes ~0.1 s and the first fill ~1 s (benches/dns.rs).
async fn refresh_once(dns: &Arc<DnsZone>, registry: &Arc<Registry>, board: &Arc<CertBoard>) {
    let (dns, registry, board) = (dns.clone(), registry.clone(), board.clone());
    if let Err(err) = tokio::task::spawn_blocking(move || dns.refresh(&registry, &board)).await {
        tracing::error!(error = %err, "dns: a zone refresh failed");
    }
}

/// Refreshes `dns` every [`REFRESH_EVERY`] until `stop`.
async fn refresh_task(
    dns: Arc<DnsZone>,
    registry: Arc<Registry>,
    board: Arc<CertBoard>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        refresh_once(&dns, &registry, &board).await;
    }
}

/// The DNS task: fills the zone, then serves it on `sockets` and keeps it in line with
/// `registry` and `board` until `stop`. Nothing is answered before the first fill, so no
/// resolver caches an NXDOMAIN for a ready tenant at start (queries meanwhile wait in the
/// socket buffer).
pub async fn run(
    sockets: Sockets,
    dns: Arc<DnsZone>,
    registry: Arc<Registry>,
    board: Arc<CertBoard>,
    stop: watch::Receiver<bool>,
) {
    refresh_once(&dns, &registry, &board).await;
    let addr = sockets
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(task = "dns", dns = %addr, zone = %dns.zone.origin_name(), records = dns.zone.txt_records(), "DNS server started");
    let server = serve(
        sockets,
        dns.zone.clone(),
        dns.metrics.clone(),
        dns.config
            .dns
            .as_ref()
            .map_or_else(limit::RateLimit::new, limit::RateLimit::of),
        stop.clone(),
    );
    tokio::join!(server, refresh_task(dns, registry, board, stop));
}

/// Serves `zone` on `sockets` until `stop`, UDP answers limited by `limit`, every answer
/// counted in `metrics`: UDP by hickory's server, TCP by [`tcp::serve`] (capped).
pub async fn serve(
    sockets: Sockets,
    zone: Arc<Zone>,
    metrics: Arc<Metrics>,
    limit: limit::RateLimit,
    mut stop: watch::Receiver<bool>,
) {
    let handler = handler(zone, metrics, limit);
    let (udp, tcp) = match (
        tokio::net::UdpSocket::from_std(sockets.udp),
        tokio::net::TcpListener::from_std(sockets.tcp),
    ) {
        (Ok(udp), Ok(tcp)) => (udp, tcp),
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!(error = %err, "dns: the sockets are unusable; not serving DNS");
            return;
        }
    };
    let mut server = Server::new(handler.clone());
    server.register_socket(udp);
    let tcp = tcp::serve(
        tcp,
        Arc::new(handler),
        tcp::MAX_TCP_CONNECTIONS,
        stop.clone(),
    );
    let token = server.shutdown_token().clone();
    let udp = async move {
        tokio::spawn(async move {
            let _ = stop.changed().await;
            token.cancel();
        });
        if let Err(err) = server.block_until_done().await {
            tracing::error!(error = %err, "dns: the UDP server stopped");
        }
    };
    tokio::join!(udp, tcp);
}

/// What answers every query: the catalog over `zone`, rate limited and counted.
pub fn handler(zone: Arc<Zone>, metrics: Arc<Metrics>, limit: limit::RateLimit) -> count::Counted {
    let mut catalog = Catalog::new();
    catalog.upsert(zone.origin_name().clone(), vec![zone]);
    count::Counted {
        catalog: Arc::new(catalog),
        metrics,
        limit: Arc::new(limit),
    }
}

/// Answers one UDP datagram from `src` as the server does, the bytes it would send back;
/// `None` when nothing is sent (not a DNS message hickory can read, or a dropped answer).
/// The entry point of the DNS fuzz target.
pub async fn answer_datagram(
    handler: &count::Counted,
    bytes: &[u8],
    src: SocketAddr,
) -> Option<Vec<u8>> {
    use futures_util::StreamExt;
    use hickory_server::net::runtime::TokioTime;
    use hickory_server::net::xfer::{BufDnsStreamHandle, Protocol};
    use hickory_server::server::{Request, RequestHandler, ResponseHandle};
    let request = Request::from_bytes(bytes.to_vec(), src, Protocol::Udp).ok()?;
    let (stream, mut sent) = BufDnsStreamHandle::new(src);
    let response = ResponseHandle::new(src, stream, Protocol::Udp);
    handler
        .handle_request::<_, TokioTime>(&request, response)
        .await;
    let answer = futures_util::FutureExt::now_or_never(sent.next()).flatten()?;
    Some(answer.into_parts().0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_server::proto::rr::{Name, RecordType};

    #[test]
    fn a_taken_tcp_port_is_an_error_on_a_fixed_port_and_retried_on_port_zero() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap();
        let err = Sockets::bind(port).unwrap_err();
        assert!(format!("{err:#}").contains("(TCP)"), "{err:#}");
        for _ in 0..50 {
            let sockets = Sockets::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let udp = sockets.local_addr().unwrap();
            assert_eq!(udp, sockets.tcp.local_addr().unwrap());
            assert_ne!(udp, port);
        }
    }

    fn handler() -> count::Counted {
        let config = crate::config::DnsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            zone: "z.example".into(),
            nameservers: vec!["ns1.example".into()],
            hostmaster: "h.example".into(),
            ttl: 300,
            rate_per_second: 0,
            rate_burst: 1,
        };
        let zone = Arc::new(Zone::new(&config, 1).unwrap());
        let update = gate::Update {
            kind: names::Kind::Sts,
            domain: "a.example".into(),
            value: Some("v=STSv1; id=1".into()),
        };
        zone.apply(&[update], 2);
        super::handler(zone, Arc::default(), limit::RateLimit::new())
    }

    #[tokio::test]
    async fn a_datagram_is_answered_as_the_server_answers_it() {
        let handler = handler();
        let src: SocketAddr = "127.0.0.1:5300".parse().unwrap();
        let mut query = Message::new(42, MessageType::Query, OpCode::Query);
        let name = Name::from_ascii("a.example._mta-sts.z.example.").unwrap();
        query.add_query(Query::query(name, RecordType::TXT));
        let bytes = answer_datagram(&handler, &query.to_vec().unwrap(), src)
            .await
            .expect("an answer");
        let answer = Message::from_vec(&bytes).unwrap();
        assert_eq!(answer.metadata.id, 42);
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer.answers.len(), 1, "{answer:?}");
        assert!(answer_datagram(&handler, b"\x00", src).await.is_none());
    }
}
