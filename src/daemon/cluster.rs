//! Cluster mode's wiring (`store: postgres:`): the database the stores share, the session
//! that elects the issuer and feeds changes, the ready-gate sync, and who may order.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::tasks::Supervisor;
use crate::certs::CertBoard;
use crate::config::PostgresConfig;
use crate::pgstore::Db;
use crate::pgstore::cluster::{ClusterStatus, GateSync};
use crate::pgstore::session::{self, Event, Role};
use crate::pgstore::tls::Endpoint;
use crate::registry::{ClusterGate, Registry};

/// How often a replica re-reads everything it shares even without a notification: a
/// notification sent while its session was down is lost.
pub(super) const RECONCILE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// What cluster mode adds to a daemon.
pub(super) struct Cluster {
    /// The pool the stores share.
    pub db: Arc<Db>,
    endpoint: Endpoint,
    /// Role and replicas, for the API and metrics.
    pub status: Arc<ClusterStatus>,
    role: watch::Sender<Role>,
    /// The ready gate's cluster half, carried by every snapshot.
    pub gate: Arc<ClusterGate>,
}

/// Connects to the database (and migrates it). A replica that cannot reach it at start has
/// no certificates to serve, so this fails the start with the reason; one that loses it later
/// keeps serving from memory.
pub(super) fn open(config: &PostgresConfig) -> anyhow::Result<Cluster> {
    let (db, endpoint) = crate::pgstore::open(config)?;
    let (role, role_rx) = watch::channel(Role::Disconnected("starting".into()));
    let status = Arc::new(ClusterStatus::new(config.replica_name.clone(), role_rx));
    tracing::info!(replica = %config.replica_name, schema = crate::pgstore::known_version(), "cluster mode: PostgreSQL store open");
    Ok(Cluster {
        db: Arc::new(db),
        endpoint,
        status,
        role,
        gate: Arc::new(ClusterGate::new()),
    })
}

impl Cluster {
    /// Whether this replica may order certificates and prune reports: it leads.
    pub fn may_order(&self) -> watch::Receiver<bool> {
        let mut role = self.role.subscribe();
        let (tx, rx) = watch::channel(matches!(*role.borrow(), Role::Leader));
        tokio::spawn(async move {
            while role.changed().await.is_ok() {
                let leads = matches!(*role.borrow_and_update(), Role::Leader);
                if tx.send(leads).is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// The issuer's part: order only while leading, share challenges through the database.
    pub fn issuer(&self) -> crate::certs::acme::cluster::Cluster {
        crate::certs::acme::cluster::Cluster {
            may_order: self.may_order(),
            challenges: Arc::new(crate::pgstore::challenges::PgChallenges::for_replica(
                self.db.clone(),
                &self.status.replica,
            )),
        }
    }

    /// Starts the session, the gate sync and the change feed's consumer.
    pub fn start(
        &self,
        tasks: &mut Supervisor,
        registry: &Arc<Registry>,
        board: &Arc<CertBoard>,
        on_event: impl Fn(&Event) + Send + Sync + 'static,
    ) {
        let (events_tx, events) = mpsc::unbounded_channel();
        tasks.spawn(
            "cluster-session",
            session::run(
                self.endpoint.clone(),
                self.role.clone(),
                events_tx,
                tasks.stop_signal(),
            ),
        );
        let sync = GateSync::new(
            self.db.clone(),
            self.status.clone(),
            registry.clone(),
            board.clone(),
            self.gate.clone(),
        );
        tasks.spawn(
            "cluster-sync",
            crate::pgstore::cluster::run(sync, tasks.stop_signal()),
        );
        let mut role = self.role.subscribe();
        tasks.spawn("cluster-role", async move {
            let mut last = role.borrow().as_str();
            while role.changed().await.is_ok() {
                let now = role.borrow_and_update().as_str();
                if now != last {
                    tracing::info!(role = now, was = last, "cluster role changed");
                    last = now;
                }
            }
        });
        tasks.spawn(
            "cluster-events",
            feed(events, on_event, tasks.stop_signal()),
        );
    }
}

/// Hands every event to `on_event` off the async threads (it reads the store), and a
/// `Connected` every [`RECONCILE_EVERY`] as a full reconciliation.
async fn feed(
    mut events: mpsc::UnboundedReceiver<Event>,
    on_event: impl Fn(&Event) + Send + Sync + 'static,
    mut stop: watch::Receiver<bool>,
) {
    let on_event = Arc::new(on_event);
    let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
    reconcile.tick().await;
    loop {
        let event = tokio::select! {
            Some(event) = events.recv() => event,
            _ = reconcile.tick() => Event::Connected,
            _ = stop.changed() => return,
        };
        let handler = on_event.clone();
        let _ = tokio::task::spawn_blocking(move || handler(&event)).await;
    }
}

/// What a change in the database means for the issuer: re-read what changed, or everything
/// after a (re)connection. Blocking: each reads the store.
pub(super) fn apply(acme: &crate::certs::acme::AcmeProvider, event: &Event) {
    match event {
        Event::Connected => acme.reconcile(),
        Event::Cert(host) => acme.cert_changed(host),
        Event::Challenge(_) => acme.challenges_changed(),
    }
}
