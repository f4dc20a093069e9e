//! The ACME issuer in cluster mode, two replicas in one process on one real PostgreSQL, with
//! a real Pebble: only the replica allowed to order orders, the CA's validation is answered
//! by the other replica (from the shared challenge), the other replica serves the certificate
//! the leader stored once told, a new leader counts the previous leader's orders against the
//! window, and a replica that stops leading mid-order withdraws its shared challenge.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mta_stsd::certs::acme::AcmeProvider;
use mta_stsd::certs::acme::cluster::{ChallengeBoard, Cluster, Shared};
use mta_stsd::certs::store::CertStore;
use mta_stsd::certs::{CertBoard, CertProvider, CertResolver, CertState};
use mta_stsd::config::{AcmeConfig, ChallengeKind, Tenant};
use mta_stsd::pgstore::Db;
use mta_stsd::pgstore::certs::PgCertStore;
use mta_stsd::pgstore::challenges::PgChallenges;
use mta_stsd::pgstore::session::{self, Event, Role};
use mta_stsd::stats::Metrics;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::common::{Client, Postgres, eventually, init_crypto};
use crate::dns::Dns;
use crate::pebble::{Pebble, Targets, free_port};

/// Bound for one certificate from Pebble on a busy machine.
const ISSUE_LIMIT: Duration = Duration::from_secs(20);

fn host(domain: &str) -> String {
    format!("mta-sts.{domain}")
}

fn tenant(domain: &str) -> Arc<Tenant> {
    let yaml = format!("domain: {domain}\nmode: testing\nmx: [mx.{domain}]\n");
    let parsed = mta_stsd::config::parse_tenants(std::path::Path::new("t.yaml"), &yaml);
    Arc::new(parsed.tenants.into_iter().next().unwrap())
}

/// PostgreSQL, DNS (everything is 127.0.0.1) and Pebble validating TLS-ALPN-01 on `tls_port`.
struct World {
    _pg: Postgres,
    url: String,
    _dns: Dns,
    pebble: Pebble,
    tls_port: u16,
    http_port: u16,
}

impl World {
    async fn start() -> World {
        init_crypto();
        let pg = Postgres::start();
        let url = pg.database();
        let dns = Dns::start().await;
        let (tls_port, http_port) = (free_port(), free_port());
        let mut pebble = Pebble::prepare(Targets {
            tls_port,
            http_port,
            dns: dns.addr,
        });
        pebble.start().await;
        World {
            _pg: pg,
            url,
            _dns: dns,
            pebble,
            tls_port,
            http_port,
        }
    }

    fn config(&self, orders_per_window: u32) -> AcmeConfig {
        let mut cfg = AcmeConfig {
            directory: self.pebble.directory(),
            trusted_roots: vec![self.pebble.api_ca_path()],
            challenges: vec![ChallengeKind::TlsAlpn01],
            ..AcmeConfig::default()
        };
        cfg.preflight.enabled = false;
        cfg.schedule.backoff_base = Duration::from_millis(200);
        cfg.schedule.backoff_cap = Duration::from_secs(2);
        cfg.schedule.orders_per_window = orders_per_window;
        cfg.schedule.window = Duration::from_secs(3600);
        cfg
    }
}

/// One replica: its own connection pool, store, resolver and issuer on the shared database.
struct Replica {
    acme: Arc<AcmeProvider>,
    resolver: Arc<CertResolver>,
    board: Arc<CertBoard>,
    store: Arc<PgCertStore>,
    challenges: Arc<PgChallenges>,
    may_order: watch::Sender<bool>,
    stop: watch::Sender<bool>,
}

impl Replica {
    /// Builds a replica that joins the cluster with `board` (the shared challenges unless a
    /// test wraps them) and starts its scheduler; it orders while `may_order` is true.
    async fn start(
        world: &World,
        cfg: AcmeConfig,
        leads: bool,
        board: impl FnOnce(Arc<PgChallenges>) -> Arc<dyn ChallengeBoard>,
    ) -> Replica {
        let url = world.url.clone();
        let db = tokio::task::spawn_blocking(move || Arc::new(Db::connect(&url).unwrap()))
            .await
            .unwrap();
        let store = Arc::new(PgCertStore::new(db.clone()));
        let challenges = Arc::new(PgChallenges::new(db));
        let (resolver, certs) = (Arc::new(CertResolver::new()), Arc::new(CertBoard::new()));
        let parts = (store.clone(), resolver.clone(), certs.clone());
        let acme = tokio::task::spawn_blocking(move || {
            let store: Arc<dyn CertStore> = parts.0;
            AcmeProvider::new(cfg, store, parts.1, parts.2, Arc::new(Metrics::default()))
                .map(Arc::new)
                .unwrap()
        })
        .await
        .unwrap();
        let (may_order, may_order_rx) = watch::channel(leads);
        acme.join_cluster(Cluster {
            may_order: may_order_rx,
            challenges: board(challenges.clone()),
        });
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(acme.clone().run(stop_rx));
        Replica {
            acme,
            resolver,
            board: certs,
            store,
            challenges,
            may_order,
            stop,
        }
    }

    fn want(&self, domains: &[&str]) {
        let tenants: Vec<Arc<Tenant>> = domains.iter().map(|d| tenant(d)).collect();
        self.acme.sync(&tenants);
    }

    /// Follows the database's change feed as the daemon does: every event becomes the
    /// matching call, on a blocking thread.
    fn follow(&self, url: &str) {
        let (role_tx, _role) = watch::channel(Role::Disconnected("start".into()));
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(session::run(
            url.to_owned(),
            role_tx,
            events_tx,
            self.stop.subscribe(),
        ));
        let acme = self.acme.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let acme = acme.clone();
                let _ = tokio::task::spawn_blocking(move || match event {
                    Event::Connected => acme.reconcile(),
                    Event::Cert(host) => acme.cert_changed(&host),
                    Event::Challenge(_) => acme.challenges_changed(),
                })
                .await;
            }
        });
    }

    /// Accepts TLS on `port` with this replica's resolver, as the HTTPS listener does for the
    /// CA's TLS-ALPN-01 validation.
    async fn serve_tls(&self, port: u16) {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![
            mta_stsd::certs::ACME_TLS_ALPN.to_vec(),
            b"http/1.1".to_vec(),
        ];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(_) => continue,
                    },
                    _ = stop.changed() => return,
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                    }
                });
            }
        });
    }

    fn serial(&self, domain: &str) -> Option<String> {
        self.resolver
            .get(&host(domain))
            .map(|c| c.info.serial.clone())
    }

    async fn pending(&self) -> Vec<Shared> {
        let board = self.challenges.clone();
        tokio::task::spawn_blocking(move || board.pending(mta_stsd::util::unix_now()).unwrap())
            .await
            .unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_orders_and_the_follower_answers_the_ca_and_serves_the_result() {
    let world = World::start().await;
    let shared = |c: Arc<PgChallenges>| c as Arc<dyn ChallengeBoard>;
    // Orders per window: one, so the second leader must find the window full.
    let leader = Replica::start(&world, world.config(1), true, shared).await;
    let follower = Replica::start(&world, world.config(1), false, shared).await;
    // Only the follower listens where Pebble validates: the leader's answer must reach it.
    follower.serve_tls(world.tls_port).await;
    follower.follow(&world.url);
    follower.want(&["alpha.test"]);
    leader.want(&["alpha.test"]);

    both_serve_alpha(
        &world,
        &leader,
        &follower,
        "the follower serves the leader's certificate",
    )
    .await;
    let status = follower.board.get(&host("alpha.test")).unwrap();
    assert_eq!(status.state, CertState::Valid);
    // The follower's served chain leads to Pebble's root and names the host.
    let root: CertificateDer<'static> = world.pebble.root().await;
    let client = Client::new(([127, 0, 0, 1], world.tls_port).into(), root);
    client
        .handshake(&host("alpha.test"), &[b"http/1.1"])
        .await
        .expect("the follower serves a chain Pebble issued");

    assert_eq!(leader.acme.recent_orders().len(), 1);
    assert!(
        follower.acme.recent_orders().is_empty(),
        "a follower never orders"
    );
    assert_eq!(
        world.pebble.orders_received(),
        1,
        "{}",
        world.pebble.log_text()
    );
    let withdrawn = eventually(Duration::from_secs(5), || async {
        follower.pending().await.is_empty()
            && !follower.resolver.can_serve(&host("alpha.test"), true)
    })
    .await;
    assert!(
        withdrawn,
        "the challenge is withdrawn everywhere after the order"
    );

    // The leader steps down, the follower takes over: it knows the certificate (no order
    // for alpha) and counts the previous leader's order, so beta waits for the window.
    leader.may_order.send_replace(false);
    follower.may_order.send_replace(true);
    follower.want(&["alpha.test", "beta.test"]);
    leader.want(&["alpha.test", "beta.test"]);
    let held = eventually(Duration::from_secs(10), || async {
        follower
            .board
            .get(&host("beta.test"))
            .and_then(|s| s.next_attempt)
            .is_some_and(|at| at > mta_stsd::util::unix_now() + 3000)
    })
    .await;
    assert!(
        held,
        "the new leader's window holds the previous leader's order: {:?}",
        follower.board.get(&host("beta.test"))
    );
    assert!(follower.acme.recent_orders().is_empty());
    assert_eq!(leader.acme.recent_orders().len(), 1);
    assert_eq!(
        world.pebble.orders_received(),
        1,
        "{}",
        world.pebble.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http01_token_published_by_the_leader_is_answered_by_the_follower() {
    let world = World::start().await;
    let http01 = || {
        let mut cfg = world.config(10);
        cfg.challenges = vec![ChallengeKind::Http01];
        cfg
    };
    let shared = |c: Arc<PgChallenges>| c as Arc<dyn ChallengeBoard>;
    let leader = Replica::start(&world, http01(), true, shared).await;
    let follower = Replica::start(&world, http01(), false, shared).await;
    // Only the follower's HTTP-01 listener is where Pebble validates.
    let listener = TcpListener::bind(("127.0.0.1", world.http_port))
        .await
        .unwrap();
    tokio::spawn(mta_stsd::certs::acme::http01::run(
        listener,
        follower.acme.tokens.clone(),
        follower.stop.subscribe(),
    ));
    follower.follow(&world.url);
    leader.want(&["alpha.test"]);
    follower.want(&["alpha.test"]);
    both_serve_alpha(
        &world,
        &leader,
        &follower,
        "issued through the follower's token answer",
    )
    .await;
    assert!(follower.acme.recent_orders().is_empty());
    assert_eq!(world.pebble.orders_received(), 1);
    let withdrawn = eventually(Duration::from_secs(5), || async {
        follower.pending().await.is_empty() && follower.acme.tokens.is_empty()
    })
    .await;
    assert!(withdrawn, "the token is withdrawn on both");
}

/// The shared challenges, stopping each publish until the test has said go (it uses the
/// pause to take leadership away).
struct Paused {
    inner: Arc<PgChallenges>,
    published: Mutex<std::sync::mpsc::Sender<Shared>>,
    go: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl ChallengeBoard for Paused {
    fn publish(&self, c: &Shared, expires: i64) -> std::io::Result<()> {
        self.inner.publish(c, expires)?;
        let _ = self.published.lock().unwrap().send(c.clone());
        let _ = self.go.lock().unwrap().recv();
        Ok(())
    }
    fn withdraw(&self, c: &Shared) -> std::io::Result<()> {
        self.inner.withdraw(c)
    }
    fn pending(&self, now: i64) -> std::io::Result<Vec<Shared>> {
        self.inner.pending(now)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_steps_down_mid_order_drops_it_and_withdraws_its_challenge() {
    let world = World::start().await;
    let (published_tx, published) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    let leader = Replica::start(&world, world.config(10), true, move |inner| {
        Arc::new(Paused {
            inner,
            published: Mutex::new(published_tx),
            go: Mutex::new(go_rx),
        }) as Arc<dyn ChallengeBoard>
    })
    .await;
    leader.want(&["alpha.test"]);
    let challenge = tokio::task::spawn_blocking(move || {
        published
            .recv_timeout(ISSUE_LIMIT)
            .expect("a challenge published")
    })
    .await
    .unwrap();
    assert_eq!(challenge.host, host("alpha.test"));
    assert_eq!(challenge.kind, ChallengeKind::TlsAlpn01);
    assert_eq!(leader.pending().await, std::slice::from_ref(&challenge));
    assert!(leader.resolver.can_serve(&host("alpha.test"), true));

    // Leadership lost while the CA has not been asked to validate yet.
    leader.may_order.send_replace(false);
    go.send(()).unwrap();
    let dropped = eventually(Duration::from_secs(10), || async {
        leader.pending().await.is_empty()
            && !leader.resolver.can_serve(&host("alpha.test"), true)
            && leader
                .board
                .get(&host("alpha.test"))
                .is_some_and(|s| s.state == CertState::Pending)
    })
    .await;
    assert!(
        dropped,
        "the shared and the local answers are gone: {:?} {:?}",
        leader.pending().await,
        leader.board.get(&host("alpha.test"))
    );
    assert!(leader.serial("alpha.test").is_none());
    let stored = leader.store.clone();
    let status = tokio::task::spawn_blocking(move || stored.load_status(&host("alpha.test")))
        .await
        .unwrap()
        .unwrap();
    assert!(
        status
            .as_ref()
            .is_none_or(|s| s.state != CertState::Backoff),
        "a dropped attempt is not the tenant's failure: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_tells_a_new_leader_what_was_issued_and_ordered() {
    use mta_stsd::certs::store::{CertMeta, StatusRecord, StoredCert};
    let pg = Postgres::start();
    let url = pg.database();
    let db = tokio::task::spawn_blocking(move || Arc::new(Db::connect(&url).unwrap()))
        .await
        .unwrap();
    let store = PgCertStore::new(db);
    let now = mta_stsd::util::unix_now();
    let cert = move |issued_at| StoredCert {
        chain_pem: "chain".into(),
        key_pem: "key".into(),
        meta: CertMeta {
            directory: "https://ca.test/dir".into(),
            order_url: None,
            issued_at,
        },
    };
    let status = move |state| StatusRecord {
        state,
        last_error: None,
        next_attempt: Some(now + 60),
        updated: now,
    };
    let (orders, statuses, issued) = tokio::task::spawn_blocking(move || {
        store
            .save_cert("mta-sts.old.test", &cert(now - 7200))
            .unwrap();
        store
            .save_cert("mta-sts.new.test", &cert(now - 10))
            .unwrap();
        store
            .save_status("mta-sts.new.test", &status(CertState::Valid))
            .unwrap();
        store
            .save_status("mta-sts.failed.test", &status(CertState::Backoff))
            .unwrap();
        store
            .save_status("mta-sts.dns.test", &status(CertState::DnsNotReady))
            .unwrap();
        (
            store.recent_orders(now - 3600).unwrap(),
            store.statuses().unwrap(),
            store.issued().unwrap(),
        )
    })
    .await
    .unwrap();
    // The certificate issued within the hour and the failed order count; the old
    // certificate, the valid status and the DNS re-check do not.
    assert_eq!(orders.len(), 2, "{orders:?}");
    assert!(orders.contains(&(now - 10)));
    assert_eq!(statuses.len(), 3);
    let mut issued = issued;
    issued.sort();
    assert_eq!(
        issued,
        [
            ("mta-sts.new.test".to_owned(), now - 10),
            ("mta-sts.old.test".to_owned(), now - 7200)
        ]
    );
    // A status row nobody can read is skipped, not fatal to the take-over.
    pg.sql(
        "t0",
        "INSERT INTO cert_status (host, record, updated) VALUES ('mta-sts.bad.test', 'not json', 0)",
    );
    let url = pg.url("t0");
    let again = tokio::task::spawn_blocking(move || {
        let store = PgCertStore::new(Arc::new(Db::connect(&url).unwrap()));
        (
            store.statuses().unwrap().len(),
            store.recent_orders(0).unwrap().len(),
        )
    })
    .await
    .unwrap();
    assert_eq!(again, (3, 3));
}

/// Both replicas come to serve one and the same certificate for alpha.test; `what` names the
/// path the test forced.
async fn both_serve_alpha(world: &World, leader: &Replica, follower: &Replica, what: &str) {
    let served = eventually(ISSUE_LIMIT, || async {
        // The follower may hear of the stored certificate before the leader serves it.
        follower.serial("alpha.test").is_some() && leader.serial("alpha.test").is_some()
    })
    .await;
    assert!(
        served,
        "{what}: leader {:?}, follower {:?}\n{}",
        leader.board.get(&host("alpha.test")),
        follower.board.get(&host("alpha.test")),
        world.pebble.log_text()
    );
    assert_eq!(
        follower.serial("alpha.test"),
        leader.serial("alpha.test"),
        "{what}: the same certificate on both"
    );
}
