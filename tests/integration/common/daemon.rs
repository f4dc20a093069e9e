//! The in-process daemon harness: the daemon on a loopback listener, stopped on drop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use rustls::pki_types::CertificateDer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Client, TestConfig, admin_get, eventually, init_crypto};

/// A daemon running in this process on a pre-bound loopback listener.
pub struct Running {
    pub addr: SocketAddr,
    pub ca: CertificateDer<'static>,
    pub daemon_server: Arc<mta_stsd::server::Server>,
    pub registry: Arc<mta_stsd::registry::Registry>,
    /// The admin listener (always started by the harness, on 127.0.0.1:0).
    pub admin_addr: SocketAddr,
    pub reloader: Arc<mta_stsd::reload::Reloader>,
    pub board: Arc<mta_stsd::certs::CertBoard>,
    pub resolver: Arc<mta_stsd::certs::CertResolver>,
    /// The ACME provider, when the issuer is `acme`.
    pub acme: Option<Arc<mta_stsd::certs::acme::AcmeProvider>>,
    pub tlsrpt: Arc<mta_stsd::tlsrpt::TlsRpt>,
    /// The DNS server's address (UDP and TCP), when the server file has a `dns:` section.
    pub dns_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<()>>,
}

impl Running {
    /// Asks the daemon to stop and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("daemon stops within 30 s")
                .unwrap();
        }
    }

    /// A client for this daemon.
    pub fn client(&self) -> Client {
        Client::new(self.addr, self.ca.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Builds and starts the daemon for `config` on 127.0.0.1:0.
pub async fn start(config: &TestConfig) -> Running {
    init_crypto();
    let daemon = mta_stsd::daemon::Daemon::build(config.path()).expect("daemon builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    run_daemon(daemon, listener, config.ca_der()).await
}

/// Runs a built daemon on a pre-bound listener (and an admin listener on 127.0.0.1:0); clients
/// trust `ca`. Returns once `/readyz` answers 200.
pub async fn run_daemon(
    daemon: mta_stsd::daemon::Daemon,
    listener: tokio::net::TcpListener,
    ca: CertificateDer<'static>,
) -> Running {
    let addr = listener.local_addr().unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let daemon_server = daemon.server().clone();
    let registry = daemon.registry().clone();
    let reloader = daemon.reloader().clone();
    let board = daemon.board().clone();
    let resolver = daemon.resolver().clone();
    let acme = daemon.acme_provider().cloned();
    let tlsrpt = daemon.tlsrpt().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let dns = daemon.bind_dns().expect("the DNS sockets bind");
    let dns_addr = dns.as_ref().map(|s| s.local_addr().unwrap());
    let listeners = mta_stsd::daemon::Listeners {
        https: listener,
        admin: Some(admin),
        dns,
    };
    let task = tokio::spawn(daemon.run(listeners, async move {
        let _ = rx.await;
    }));
    // Ready means the watcher, SIGHUP handler and listeners are all in place.
    let ready = eventually(Duration::from_secs(10), || async {
        admin_get(admin_addr, "/readyz").await.status == StatusCode::OK
    })
    .await;
    assert!(ready, "daemon did not become ready");
    Running {
        addr,
        ca,
        daemon_server,
        registry,
        admin_addr,
        reloader,
        board,
        resolver,
        acme,
        tlsrpt,
        dns_addr,
        stop: Some(tx),
        task: Some(task),
    }
}
