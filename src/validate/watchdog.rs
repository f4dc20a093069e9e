//! The daemon's watchdog: the same checks as `mta-stsd validate`, per tenant on a schedule,
//! results kept on a [`Board`] that the admin API and `/metrics` read.
//!
//! One round visits every served tenant once per `validation.interval`, starting them evenly
//! spread over it (100 000 tenants an hour: one every 36 ms), at most
//! `validation.max_concurrent` at once; each network step has `validation.timeout`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{Check, Status, TenantReport, Validator};
use crate::config::ServerConfig;
use crate::publish::Publishing;
use crate::registry::Registry;
use crate::util::hash::{FastMap, FastSet};

/// The latest report of every tenant validated.
#[derive(Default)]
pub struct Board {
    reports: Mutex<FastMap<String, Arc<TenantReport>>>,
}

impl Board {
    /// An empty board.
    pub fn new() -> Board {
        Board::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FastMap<String, Arc<TenantReport>>> {
        self.reports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `report` as its tenant's latest; returns the worst status it replaces.
    pub fn set(&self, report: TenantReport) -> Option<Status> {
        let old = self.lock().insert(report.domain.clone(), Arc::new(report));
        old.map(|r| r.status())
    }

    /// The latest report of `domain`.
    pub fn get(&self, domain: &str) -> Option<Arc<TenantReport>> {
        self.lock().get(domain).cloned()
    }

    /// Forgets tenants for which `keep` is false (no longer served).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut map = self.lock();
        map.retain(|d, _| keep(d));
        crate::util::hash::shrink_sparse(&mut map);
    }

    /// The reports of the domains `pick` accepts, in domain order (for the metrics).
    pub fn picked(&self, pick: impl Fn(&str) -> bool) -> Vec<Arc<TenantReport>> {
        let mut out: Vec<_> = self
            .lock()
            .iter()
            .filter(|(d, _)| pick(d))
            .map(|(_, r)| r.clone())
            .collect();
        out.sort_by(|a, b| a.domain.cmp(&b.domain));
        out
    }

    /// The domains with at least one check in error.
    pub fn failing(&self) -> FastSet<String> {
        self.lock()
            .values()
            .filter(|r| r.status() == Status::Error)
            .map(|r| r.domain.clone())
            .collect()
    }

    /// How many tenants have each check in error, in [`Check::ALL`] order.
    pub fn errors_by_check(&self) -> [(Check, usize); 5] {
        let mut counts = Check::ALL.map(|c| (c, 0));
        for r in self.lock().values() {
            for v in r.checks.iter().filter(|v| v.status == Status::Error) {
                if let Some(slot) = counts.iter_mut().find(|(c, _)| *c == v.check) {
                    slot.1 += 1;
                }
            }
        }
        counts
    }
}

/// Runs rounds until `stop` turns true; checks in flight are dropped with it.
pub async fn run(
    validator: Arc<Validator>,
    config: Arc<ServerConfig>,
    registry: Arc<Registry>,
    board: Arc<Board>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = config.validation.interval;
    tokio::select! {
        () = async {
            loop {
                round(&validator, &config, &registry, &board, interval).await;
            }
        } => {}
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
}

/// One pass over the tenants served now, spread over `interval`.
async fn round(
    validator: &Arc<Validator>,
    config: &Arc<ServerConfig>,
    registry: &Registry,
    board: &Arc<Board>,
    interval: Duration,
) {
    let snapshot = registry.load();
    let tenants: Vec<_> = snapshot.sorted().to_vec();
    board.retain(|d| snapshot.by_domain(d).is_some());
    drop(snapshot);
    let gap = interval / u32::try_from(tenants.len().max(1)).unwrap_or(u32::MAX);
    let gate = Arc::new(tokio::sync::Semaphore::new(
        config.validation.max_concurrent,
    ));
    let mut running = tokio::task::JoinSet::new();
    let mut next = tokio::time::Instant::now();
    for tenant in tenants {
        tokio::time::sleep_until(next).await;
        next += gap;
        let Ok(permit) = gate.clone().acquire_owned().await else {
            return;
        };
        let (validator, config, board) = (validator.clone(), config.clone(), board.clone());
        running.spawn(async move {
            let report = validator.tenant(&tenant, Publishing::of(&config)).await;
            let now = report.status();
            // Logged when it changes, and at first only when something is wrong: a first
            // round over 100 000 healthy tenants says nothing.
            match board.set(report) {
                Some(before) if before == now => {}
                None if now == Status::Ok => {}
                _ => tracing::info!(domain = %tenant.domain, status = now.as_str(), "validation"),
            }
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    tokio::time::sleep_until(next).await;
    while running.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Verdict;

    fn report(domain: &str, mx: Status) -> TenantReport {
        let checks = Check::ALL
            .iter()
            .map(|&check| Verdict {
                check,
                status: if check == Check::Mx { mx } else { Status::Ok },
                observed: String::new(),
                action: None,
            })
            .collect();
        TenantReport {
            domain: domain.into(),
            checks,
            checked_at: "1970-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn the_board_keeps_the_latest_counts_errors_and_forgets_removed_tenants() {
        let board = Board::new();
        assert_eq!(board.set(report("a.example", Status::Ok)), None);
        assert_eq!(board.set(report("b.example", Status::Error)), None);
        assert_eq!(board.set(report("c.example", Status::Warning)), None);
        assert_eq!(
            board.set(report("a.example", Status::Error)),
            Some(Status::Ok)
        );
        let failing = board.failing();
        assert!(failing.contains("a.example") && failing.contains("b.example"));
        assert_eq!(failing.len(), 2);
        let counts = board.errors_by_check();
        assert_eq!(counts[4], (Check::Mx, 2));
        assert!(counts[..4].iter().all(|(_, n)| *n == 0));
        board.retain(|d| d != "b.example");
        assert!(board.get("b.example").is_none());
        let picked: Vec<String> = board
            .picked(|d| d != "c.example")
            .iter()
            .map(|r| r.domain.clone())
            .collect();
        assert_eq!(picked, ["a.example"]);
    }
}
