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
    pub fn bind(listen: SocketAddr) -> anyhow::Result<Sockets> {
        let udp = std::net::UdpSocket::bind(listen)
            .with_context(|| format!("binding the DNS listener {listen} (UDP)"))?;
        let addr = udp.local_addr()?;
        let tcp = std::net::TcpListener::bind(addr)
            .with_context(|| format!("binding the DNS listener {addr} (TCP)"))?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        Ok(Sockets { udp, tcp })
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
    ) -> anyhow::Result<Option<Arc<DnsZone>>> {
        let Some(dns) = &config.dns else {
            return Ok(None);
        };
        let serial = u32::try_from(crate::util::unix_now()).unwrap_or(u32::MAX);
        Ok(Some(Arc::new(DnsZone {
            zone: Arc::new(Zone::new(dns, serial).context("building the DNS zone")?),
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
        limit::RateLimit::new(),
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
    let mut catalog = Catalog::new();
    catalog.upsert(zone.origin_name().clone(), vec![zone]);
    let handler = count::Counted {
        catalog: Arc::new(catalog),
        metrics,
        limit: Arc::new(limit),
    };
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
