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

/// What the board keeps of one tenant.
enum Entry {
    /// Every check ok, at this Unix time: a healthy tenant costs its key and 16 bytes. Kept
    /// whole, 100 000 healthy tenants' reports took 98 MiB.
    AllOk(i64),
    /// Some check needs attention: the whole report, observed values and actions.
    Report(Arc<TenantReport>),
}

impl Entry {
    fn status(&self) -> Status {
        match self {
            Entry::AllOk(_) => Status::Ok,
            Entry::Report(r) => r.status(),
        }
    }

    /// The status of each check, in [`Check::ALL`] order.
    fn statuses(&self) -> [Status; super::COUNT] {
        Check::ALL.map(|c| match self {
            Entry::AllOk(_) => Status::Ok,
            Entry::Report(r) => r
                .checks
                .iter()
                .find(|v| v.check == c)
                .map_or(Status::Ok, |v| v.status),
        })
    }
}

/// The latest validation of every tenant.
#[derive(Default)]
pub struct Board {
    entries: Mutex<FastMap<String, Entry>>,
}

impl Board {
    /// An empty board.
    pub fn new() -> Board {
        Board::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FastMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `report` as its tenant's latest; returns the worst status it replaces. Of a
    /// report whose checks are all ok only the time is kept (see [`Entry::AllOk`]).
    pub fn set(&self, report: TenantReport) -> Option<Status> {
        let at = time::OffsetDateTime::parse(
            &report.checked_at,
            &time::format_description::well_known::Rfc3339,
        );
        let domain = report.domain.clone();
        let entry = match at {
            Ok(at) if report.status() == Status::Ok => Entry::AllOk(at.unix_timestamp()),
            _ => Entry::Report(Arc::new(report)),
        };
        let old = self.lock().insert(domain, entry);
        old.map(|e| e.status())
    }

    /// The latest report of `domain`; for an all-ok tenant the verdicts carry no observed
    /// value.
    pub fn get(&self, domain: &str) -> Option<Arc<TenantReport>> {
        match self.lock().get(domain)? {
            Entry::Report(r) => Some(r.clone()),
            Entry::AllOk(at) => Some(Arc::new(TenantReport {
                domain: domain.to_owned(),
                checks: Check::ALL
                    .iter()
                    .map(|&check| super::Verdict::ok(check, String::new()))
                    .collect(),
                checked_at: crate::util::format_unix(*at),
            })),
        }
    }

    /// Forgets tenants for which `keep` is false (no longer served).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut map = self.lock();
        map.retain(|d, _| keep(d));
        crate::util::hash::shrink_sparse(&mut map);
    }

    /// Each check's status for the domains `pick` accepts, in domain order (for the metrics).
    pub fn picked(&self, pick: impl Fn(&str) -> bool) -> Vec<(String, [Status; super::COUNT])> {
        let mut out: Vec<_> = self
            .lock()
            .iter()
            .filter(|(d, _)| pick(d))
            .map(|(d, e)| (d.clone(), e.statuses()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The domains with at least one check in error.
    pub fn failing(&self) -> FastSet<String> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.status() == Status::Error)
            .map(|(d, _)| d.clone())
            .collect()
    }

    /// How many tenants have each check in error, in [`Check::ALL`] order.
    pub fn errors_by_check(&self) -> [(Check, usize); super::COUNT] {
        let mut counts = Check::ALL.map(|c| (c, 0));
        for e in self.lock().values() {
            for (slot, status) in counts.iter_mut().zip(e.statuses()) {
                if status == Status::Error {
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
        let ok = board.get("a.example").unwrap();
        assert_eq!(ok.checked_at, "1970-01-01T00:00:00Z");
        assert!(ok.checks.iter().all(|v| v.status == Status::Ok));
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
            .map(|(d, _)| d.clone())
            .collect();
        assert_eq!(picked, ["a.example"]);
        assert_eq!(board.picked(|d| d == "a.example")[0].1[4], Status::Error);
    }
}
