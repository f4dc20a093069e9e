//! RFC 2136 dynamic updates of customer zones the operator already hosts (`dns_update:`).
//!
//! For each tenant whose domain lies in a configured zone, the `_mta-sts.<domain>` TXT (and
//! `_smtp._tls.<domain>` when the target says `tlsrpt: true`) is kept equal to what mta-stsd
//! serves, through the same ready gate as the built-in zone ([`plan`]). Before an update the
//! primary is asked what it holds, so a restart re-sends nothing that is already right; an
//! update replaces exactly that one TXT RRset (delete it, add the value) and touches no other
//! record. A tenant removed from the configuration has its records deleted only if they
//! still hold what mta-stsd wrote (the tenant-lifecycle work will add an offboarding grace
//! period before that delete). Failures back off exponentially per record.
//!
//! A failure here is logged and counted and stays here: the policy listener does not depend
//! on it, every exchange has a timeout and at most [`CONCURRENCY`] run at once.

pub mod plan;
pub mod wire;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hickory_net::proto::rr::Name;
use tokio::sync::watch;

use crate::certs::CertBoard;
use crate::config::ServerConfig;
use crate::dns::names::Kind;
use crate::publish::Publishing;
use crate::registry::Registry;
use crate::stats::Metrics;
use plan::{Counts, Entry, Key, Plan, Want};
use wire::Primary;

/// How often the wanted values are compared with the snapshot and the certificate board.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Exchanges in flight at once, over all primaries.
pub const CONCURRENCY: usize = 8;
/// Records tried per tick: a first start with many tenants spreads over several ticks.
const PER_TICK: usize = 256;
/// TTL of the written TXT records, as in the built-in zone.
const TTL: u32 = crate::config::DEFAULT_DNS_TTL;

/// The publisher: its plan, the primaries, and where it reports.
pub struct Publisher {
    plan: Mutex<Plan>,
    primaries: Vec<Primary>,
    config: ServerConfig,
    metrics: Arc<Metrics>,
}

impl Publisher {
    /// The publisher of `config.dns_update` (None when the section is absent). Opens one UDP
    /// exchange per target, so it must run inside the runtime.
    pub fn new(
        config: &ServerConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Option<Arc<Publisher>>> {
        if config.dns_update.is_empty() {
            return Ok(None);
        }
        let primaries = config
            .dns_update
            .iter()
            .map(Primary::connect)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(Arc::new(Publisher {
            plan: Mutex::new(Plan::new()),
            primaries,
            config: config.clone(),
            metrics,
        })))
    }

    /// The state of each record of `domain` (by record name), for the admin API.
    pub fn states(&self, domain: &str) -> Vec<(String, plan::State)> {
        let plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        [Kind::Sts, Kind::TlsRpt]
            .into_iter()
            .filter_map(|kind| {
                let key = (kind, domain.to_owned());
                let entry = plan.entries().get(&key)?;
                Some((record_name(&key), entry.state.clone()))
            })
            .collect()
    }

    /// Updates the plan and the state gauges; returns the records due now and the counts by
    /// state. Walks every record (O(tenants)), so it runs off the runtime threads, once a tick.
    fn due(&self, registry: &Registry, board: &CertBoard) -> (Vec<(Key, Entry)>, Counts) {
        let now = crate::util::unix_now();
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        plan.refresh(
            &self.config.dns_update,
            &registry.load(),
            board,
            Publishing::of(&self.config),
            now,
        );
        let counts = plan.counts();
        self.metrics.dns_update_states(&counts);
        (plan.due(now, PER_TICK), counts)
    }

    /// Tries one record and books the result.
    async fn try_one(&self, key: Key, entry: Entry) {
        let result = self.sync(&key, &entry).await;
        let label = match &result {
            Ok(sent) => {
                if *sent {
                    "NOERROR"
                } else {
                    "unchanged"
                }
            }
            Err(why) => why.as_str(),
        };
        let label = plan::result_label(label);
        self.metrics.dns_update(label);
        if let Err(why) = &result {
            tracing::warn!(task = "dns_update", domain = %key.1, record = ?key.0, error = %why, "dns_update: the primary did not take the update; retrying later");
        }
        let now = crate::util::unix_now();
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        plan.finish(&key, &entry.want, result.map(|_| ()), now);
    }

    /// Brings one record at the primary in line with `entry.want`; `Ok(true)` when an update
    /// was sent, `Ok(false)` when the primary already held the wanted state.
    async fn sync(&self, key: &Key, entry: &Entry) -> Result<bool, String> {
        let primary = &self.primaries[entry.target];
        let zone = fqdn(&entry.zone)?;
        let name = fqdn(&record_name(key))?;
        let current = primary.txt(&name).await?;
        match &entry.want {
            Want::Wait => Ok(false),
            Want::Set(value) if current == [value.clone()] => Ok(false),
            Want::Set(value) => primary
                .replace(&zone, &name, value, TTL)
                .await
                .map(|()| true),
            Want::Remove(value) if current != [value.clone()] => Ok(false),
            Want::Remove(value) => primary.delete_if(&zone, &name, value).await.map(|()| true),
        }
    }
}

/// `_mta-sts.<domain>` or `_smtp._tls.<domain>`.
fn record_name((kind, domain): &Key) -> String {
    match kind {
        Kind::Sts => format!("_mta-sts.{domain}"),
        Kind::TlsRpt => format!("_smtp._tls.{domain}"),
    }
}

fn fqdn(text: &str) -> Result<Name, String> {
    let mut name = Name::from_ascii(text).map_err(|e| format!("{text}: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

/// One tick: refresh the plan off the runtime threads (a new snapshot walks every tenant),
/// then try the due records, [`CONCURRENCY`] at a time. Returns the counts by state when
/// nothing was due and nothing failed (a quiet pass).
async fn tick(
    publisher: &Arc<Publisher>,
    registry: &Arc<Registry>,
    board: &Arc<CertBoard>,
) -> Option<Counts> {
    let (p, r, b) = (publisher.clone(), registry.clone(), board.clone());
    let (due, counts) = match tokio::task::spawn_blocking(move || p.due(&r, &b)).await {
        Ok(due) => due,
        Err(err) => {
            tracing::error!(error = %err, "dns_update: a refresh failed");
            return None;
        }
    };
    // Waiting for a retry is not quiet: only a pass with no error is "in step".
    let quiet = (due.is_empty() && counts[2].1 == 0).then_some(counts);
    futures_util::stream::iter(due)
        .for_each_concurrent(CONCURRENCY, |(key, entry)| publisher.try_one(key, entry))
        .await;
    quiet
}

/// Logs once each time the publisher has nothing left to try, so an operator (and a test)
/// sees when the primaries are in step after a start or a change.
fn log_in_step(counts: Counts) {
    let [(_, pending), (_, published), (_, error)] = counts;
    tracing::info!(
        task = "dns_update",
        published,
        pending,
        error,
        "dns_update: records in step"
    );
}

/// The publisher task: a tick every [`REFRESH_EVERY`] until `stop`.
pub async fn run(
    publisher: Arc<Publisher>,
    registry: Arc<Registry>,
    board: Arc<CertBoard>,
    mut stop: watch::Receiver<bool>,
) {
    tracing::info!(
        task = "dns_update",
        targets = publisher.primaries.len(),
        "RFC 2136 publisher started"
    );
    let mut every = tokio::time::interval(REFRESH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut busy = true;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        let quiet = tokio::select! {
            q = tick(&publisher, &registry, &board) => q,
            _ = stop.changed() => return,
        };
        match quiet {
            Some(counts) if busy => log_in_step(counts),
            _ => {}
        }
        busy = quiet.is_none();
    }
}
