//! The cluster's shared view: which replicas are alive, and the cluster-wide ready gate.
//!
//! RFC 8461 §8.1 across replicas: a sender that sees a new id may fetch the policy from any
//! replica behind the load balancer, so the id counts as ready only once every live replica
//! serves its body over a valid certificate. Each replica writes, every [`SYNC_EVERY`], a
//! heartbeat and the rows of `cluster_served` that changed (host → id it serves, certificate
//! fit to serve), then asks which of its own not-yet-confirmed ids every live replica serves,
//! and records those in the snapshot's [`ClusterGate`]. Liveness is judged in database time,
//! so replicas' clocks do not matter; a replica that stops cleanly leaves at once, one that
//! dies stops counting after [`LIVE_FOR`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::session::Role;
use super::{Db, DbError, Params, param_refs};
use crate::certs::CertBoard;
use crate::registry::{ClusterGate, Registry, Snapshot};
use crate::util::hash::FastMap;

/// How often a replica writes its heartbeat and changed rows.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// A replica not heard from for this long is not waited for.
pub const LIVE_FOR: Duration = Duration::from_secs(15);
/// Ids asked about per tick: a reload of 100 000 tenants confirms over a few ticks.
const CONFIRM_BATCH: usize = 10_000;

/// One replica as the database last saw it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ReplicaSeen {
    /// Its `replica_name`.
    pub name: String,
    /// Seconds since its last heartbeat.
    pub seen_secs_ago: f64,
}

/// What this replica knows of the cluster, for `/api/v1/status` and `/metrics`.
#[derive(Debug)]
pub struct ClusterStatus {
    /// This replica's name.
    pub replica: String,
    role: watch::Receiver<Role>,
    replicas: Mutex<Vec<ReplicaSeen>>,
    sync_error: Mutex<Option<String>>,
}

impl ClusterStatus {
    /// The status of replica `replica`, whose role the session publishes on `role`.
    pub fn new(replica: String, role: watch::Receiver<Role>) -> Self {
        ClusterStatus {
            replica,
            role,
            replicas: Mutex::default(),
            sync_error: Mutex::default(),
        }
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// The live replicas at the last sync, this one included.
    pub fn replicas(&self) -> Vec<ReplicaSeen> {
        self.replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The last sync's error, if it failed.
    pub fn sync_error(&self) -> Option<String> {
        self.sync_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The `cluster` object of `/api/v1/status`.
    pub fn to_json(&self) -> serde_json::Value {
        let role = self.role();
        let detail = match &role {
            Role::Disconnected(why) => Some(why.clone()),
            _ => self.sync_error(),
        };
        serde_json::json!({
            "replica": self.replica,
            "role": role.as_str(),
            "detail": detail,
            "replicas": self.replicas(),
        })
    }
}

/// One replica's half of the gate: what it wrote, and the parts it reads.
pub struct GateSync {
    db: Arc<Db>,
    status: Arc<ClusterStatus>,
    registry: Arc<Registry>,
    board: Arc<CertBoard>,
    gate: Arc<ClusterGate>,
    /// Host → (id, fit to serve) as written; `None` until the first write, which replaces
    /// whatever an earlier run under this name left.
    written: Option<FastMap<String, (String, bool)>>,
    generation: Option<u64>,
}

/// A row of `cluster_served` as this replica sees it.
type Row = (String, String, bool);

impl GateSync {
    /// The sync of the replica `status` describes, over the snapshot's `gate`.
    pub fn new(
        db: Arc<Db>,
        status: Arc<ClusterStatus>,
        registry: Arc<Registry>,
        board: Arc<CertBoard>,
        gate: Arc<ClusterGate>,
    ) -> Self {
        GateSync {
            db,
            status,
            registry,
            board,
            gate,
            written: None,
            generation: None,
        }
    }

    /// One round: heartbeat and changed rows, then confirmations, then the replica list.
    /// Blocking (it waits for the database).
    pub fn tick(&mut self) -> Result<(), DbError> {
        let snapshot = self.registry.load();
        let now = crate::util::unix_now();
        let (changed, gone) = self.changes(&snapshot, now);
        let replace = self.written.is_none();
        write_rows(&self.db, &self.status.replica, replace, &changed, &gone)?;
        let written = self.written.get_or_insert_with(FastMap::default);
        for host in &gone {
            written.remove(host);
        }
        for (host, id, ok) in changed {
            written.insert(host, (id, ok));
        }
        self.confirm(&snapshot)?;
        let replicas = live_replicas(&self.db)?;
        *self
            .status
            .replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = replicas;
        if self.generation != Some(snapshot.generation) {
            self.gate.retain(|host| snapshot.get(host).is_some());
            self.generation = Some(snapshot.generation);
        }
        Ok(())
    }

    /// Rows that differ from what was written, and hosts written that are tenants no more.
    fn changes(&self, snapshot: &Snapshot, now: i64) -> (Vec<Row>, Vec<String>) {
        let empty = FastMap::default();
        let written = self.written.as_ref().unwrap_or(&empty);
        let mut changed = Vec::new();
        for tenant in snapshot.tenants() {
            let ok = crate::publish::serves(snapshot, &self.board, tenant, now);
            let same = written
                .get(&tenant.host)
                .is_some_and(|(id, was)| *id == tenant.policy.id && *was == ok);
            if !same {
                changed.push((tenant.host.clone(), tenant.policy.id.clone(), ok));
            }
        }
        let gone = written
            .keys()
            .filter(|host| snapshot.get(host).is_none())
            .cloned()
            .collect();
        (changed, gone)
    }

    /// Asks which of this replica's served ids that are not confirmed yet every live replica
    /// serves, and confirms them.
    fn confirm(&self, snapshot: &Snapshot) -> Result<(), DbError> {
        let Some(written) = &self.written else {
            return Ok(());
        };
        let waiting: Vec<(String, String)> = written
            .iter()
            .filter(|(host, (id, ok))| *ok && !self.gate.confirms(host, id))
            .take(CONFIRM_BATCH)
            .map(|(host, (id, _))| (host.clone(), id.clone()))
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        for (host, id) in confirmed(&self.db, waiting)? {
            if self.gate.confirm(&host, &id) {
                let domain = snapshot.get(&host).map_or("", |t| t.domain.as_str());
                tracing::info!(%domain, id = %id, "policy id served by every live replica: ready to publish");
            }
        }
        Ok(())
    }

    /// Leaves the cluster: the others stop waiting for this replica at once. Blocking.
    pub fn leave(&self) -> Result<(), DbError> {
        let name = self.status.replica.clone();
        self.db.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute("DELETE FROM cluster_served WHERE replica = $1", &[&name])
                .await?;
            tx.execute("DELETE FROM cluster_replicas WHERE name = $1", &[&name])
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

/// The heartbeat and the rows, in one transaction: another replica never sees this one alive
/// with rows of an older round. `replace` first drops every row under this name.
fn write_rows(
    db: &Db,
    replica: &str,
    replace: bool,
    changed: &[Row],
    gone: &[String],
) -> Result<(), DbError> {
    let replica = replica.to_owned();
    let hosts: Vec<String> = changed.iter().map(|r| r.0.clone()).collect();
    let ids: Vec<String> = changed.iter().map(|r| r.1.clone()).collect();
    let oks: Vec<bool> = changed.iter().map(|r| r.2).collect();
    let gone = gone.to_vec();
    db.run(move |pool| async move {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO cluster_replicas (name, last_seen, started) VALUES ($1, now(), now())
             ON CONFLICT (name) DO UPDATE SET last_seen = now()",
            &[&replica],
        )
        .await?;
        if replace {
            tx.execute("DELETE FROM cluster_served WHERE replica = $1", &[&replica])
                .await?;
        }
        if !gone.is_empty() {
            tx.execute(
                "DELETE FROM cluster_served WHERE replica = $1 AND host = ANY($2)",
                &[&replica, &gone],
            )
            .await?;
        }
        if !hosts.is_empty() {
            tx.execute(
                "INSERT INTO cluster_served (replica, host, policy_id, cert_ok)
                 SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bool[])
                 ON CONFLICT (host, replica)
                 DO UPDATE SET policy_id = EXCLUDED.policy_id, cert_ok = EXCLUDED.cert_ok",
                &[&replica, &hosts, &ids, &oks],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    })
}

/// Which of `waiting` (host, id) every live replica serves with a fit certificate.
fn confirmed(db: &Db, waiting: Vec<(String, String)>) -> Result<Vec<(String, String)>, DbError> {
    let (hosts, ids): (Vec<String>, Vec<String>) = waiting.into_iter().unzip();
    let live = LIVE_FOR.as_secs_f64();
    db.run(move |pool| async move {
        let params: Params = vec![Box::new(hosts), Box::new(ids), Box::new(live)];
        let client = pool.get().await?;
        let rows = client
            .query(
                "SELECT w.host, w.id FROM unnest($1::text[], $2::text[]) AS w(host, id)
                 WHERE NOT EXISTS (
                   SELECT 1 FROM cluster_replicas r
                   WHERE r.last_seen > now() - make_interval(secs => $3)
                     AND NOT EXISTS (
                       SELECT 1 FROM cluster_served s
                       WHERE s.host = w.host AND s.replica = r.name
                         AND s.policy_id = w.id AND s.cert_ok))",
                &param_refs(&params),
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    })
}

/// The replicas heard from within [`LIVE_FOR`], by name.
fn live_replicas(db: &Db) -> Result<Vec<ReplicaSeen>, DbError> {
    let live = LIVE_FOR.as_secs_f64();
    db.run(move |pool| async move {
        let client = pool.get().await?;
        let rows = client
            .query(
                "SELECT name, EXTRACT(EPOCH FROM now() - last_seen)::float8 FROM cluster_replicas
                 WHERE last_seen > now() - make_interval(secs => $1) ORDER BY name",
                &[&live],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ReplicaSeen {
                name: r.get(0),
                seen_secs_ago: r.get(1),
            })
            .collect())
    })
}

/// Runs the sync every [`SYNC_EVERY`] until `stop`, then leaves the cluster. A failed round
/// is logged once per outage and kept for the status; the gate stays as it was (ids already
/// ready stay ready, new ones wait).
pub async fn run(sync: GateSync, mut stop: watch::Receiver<bool>) {
    let mut sync = Some(sync);
    let mut failing = false;
    loop {
        let mut this = sync.take().expect("put back after each round");
        let Ok((back, result)) = tokio::task::spawn_blocking(move || {
            let result = this.tick();
            (this, result)
        })
        .await
        else {
            return;
        };
        match &result {
            Ok(()) if failing => tracing::info!("cluster sync works again"),
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cluster sync failed; new policy ids wait until it works")
            }
            _ => {}
        }
        failing = result.is_err();
        *back
            .status
            .sync_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = result.err().map(|e| e.to_string());
        sync = Some(back);
        tokio::select! {
            _ = tokio::time::sleep(SYNC_EVERY) => {}
            _ = stop.changed() => break,
        }
    }
    if let Some(sync) = sync {
        let _ = tokio::task::spawn_blocking(move || sync.leave()).await;
    }
}
