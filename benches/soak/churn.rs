//! Tenant file churn: valid edits (a new mode/MX/max_age, so a new id), bulk edits, the large
//! file switched between 1 and 42 MX patterns per tenant, broken files (their tenants must
//! keep their last good policy), rewrites without a change, SIGHUPs and `POST /reload`.
//!
//! A change's old body stays acceptable to fetches that started before the admin API showed
//! the new id; after that only the new body is.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::Method;

use crate::setup::{Version, file_yaml, write_atomic};
use crate::state::{Counts, Rng, Shared};

/// How long an edit may take to show in the admin API before it counts as not applied.
const APPLY_LIMIT: Duration = Duration::from_secs(15);
/// Files broken at once, at most.
const MAX_BROKEN: usize = 4;

#[derive(Default)]
pub struct ChurnStats {
    pub single_edits: AtomicU64,
    pub bulk_edits: AtomicU64,
    pub large_toggles: AtomicU64,
    pub broken: AtomicU64,
    pub broken_seen_stale: AtomicU64,
    pub repaired: AtomicU64,
    pub unchanged_rewrites: AtomicU64,
    pub sighups: AtomicU64,
    pub admin_reloads: AtomicU64,
    pub not_applied: AtomicU64,
    pub apply_ms_max: AtomicU64,
    pub apply_ms_sum: AtomicU64,
    pub applied: AtomicU64,
    /// The daemon's current process id (for SIGHUP).
    pub pid: AtomicU32,
}

pub struct Churner {
    shared: Arc<Shared>,
    pub stats: Arc<ChurnStats>,
    versions: Vec<Version>,
    broken: BTreeSet<usize>,
    rng: Rng,
}

/// The version every file starts at.
pub fn initial_version(shared_layout_file_large: bool) -> Version {
    Version {
        variant: 0,
        large: shared_layout_file_large,
    }
}

fn broken_text(bulk: bool, valid: &str, k: u64) -> String {
    match (bulk, k % 3) {
        // YAML that does not parse.
        (_, 0) => format!("{valid}\n- domain: [unclosed\n"),
        // Parses, fails validation: an unknown key.
        (false, 1) => valid.replace("mode:", "mxx: oops\nmode:"),
        (true, 1) => valid.replacen("  mode:", "  mood:", 1),
        // Not even a mapping.
        _ => "just a string\n".into(),
    }
}

impl Churner {
    pub fn new(shared: Arc<Shared>, stats: Arc<ChurnStats>, seed: u64) -> Self {
        let versions = shared
            .layout
            .files
            .iter()
            .map(|f| initial_version(f.large))
            .collect();
        Churner {
            shared,
            stats,
            versions,
            broken: BTreeSet::new(),
            rng: Rng::new(seed),
        }
    }

    /// Runs until stopped, one operation every `gap`; repairs every broken file on pause and
    /// at the end.
    pub async fn run(mut self, gap: Duration) {
        while self.shared.nap(gap).await {
            if self.shared.pause_churn.load(Ordering::SeqCst) {
                self.repair_all().await;
                self.shared.churn_idle.store(true, Ordering::SeqCst);
                continue;
            }
            self.shared.churn_idle.store(false, Ordering::SeqCst);
            self.step().await;
        }
        self.repair_all().await;
    }

    async fn repair_all(&mut self) {
        while let Some(&f) = self.broken.iter().next() {
            self.edit(f).await;
        }
    }

    async fn step(&mut self) {
        let files = &self.shared.layout.files;
        let singles_from = files.iter().position(|f| !f.bulk).unwrap_or(0);
        let roll = self.rng.below(100);
        match roll {
            0..40 => {
                let f = singles_from + self.rng.below(files.len() - singles_from);
                self.edit(f).await;
                Counts::add(&self.stats.single_edits);
            }
            40..50 => {
                let f = self.rng.below(singles_from.max(1) - 1);
                self.edit(f).await;
                Counts::add(&self.stats.bulk_edits);
            }
            50..58 => {
                let f = files.iter().position(|f| f.large).unwrap_or(0);
                self.versions[f].large = !self.versions[f].large;
                self.edit(f).await;
                Counts::add(&self.stats.large_toggles);
            }
            58..72 if self.broken.len() < MAX_BROKEN => self.break_one().await,
            58..80 => {
                if let Some(&f) = self.broken.iter().next() {
                    self.edit(f).await;
                }
            }
            80..90 => self.sighup(),
            90..95 => {
                if net_ok(crate::net::admin(self.shared.admin, Method::POST, "/reload").await) {
                    Counts::add(&self.stats.admin_reloads);
                }
            }
            _ => self.rewrite_unchanged(),
        }
    }

    fn sighup(&self) {
        let pid = self.stats.pid.load(Ordering::SeqCst);
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Counts::add(&self.stats.sighups);
        }
    }

    fn rewrite_unchanged(&mut self) {
        let f = self.rng.below(self.shared.layout.files.len());
        if self.broken.contains(&f) {
            return;
        }
        let file = &self.shared.layout.files[f];
        let text = file_yaml(&self.shared.layout, file, self.versions[f]);
        write_atomic(&file.path, text.as_bytes()).expect("rewrite tenant file");
        Counts::add(&self.stats.unchanged_rewrites);
    }

    /// A new version of file `f`: every tenant in it gets a new body and id.
    async fn edit(&mut self, f: usize) {
        let shared = self.shared.clone();
        let file = &shared.layout.files[f];
        let mut v = self.versions[f];
        v.variant += 1;
        self.versions[f] = v;
        for &t in &file.tenants {
            shared.expect.change(t, &shared.layout.domains[t], v);
        }
        let started = Instant::now();
        let text = file_yaml(&shared.layout, file, v);
        write_atomic(&file.path, text.as_bytes()).expect("write tenant file");
        // One snapshot swap covers the whole file: its first and last tenants tell.
        let probes = [file.tenants[0], *file.tenants.last().unwrap()];
        let mut shown = true;
        for t in probes {
            shown &= self.wait_id(t, started).await;
        }
        let at = Instant::now();
        for &t in &file.tenants {
            shared.expect.confirm(t, at);
        }
        if self.broken.remove(&f) {
            shared.set_broken(f, false);
            Counts::add(&self.stats.repaired);
        }
        if shown {
            let ms = started.elapsed().as_millis() as u64;
            self.stats.apply_ms_max.fetch_max(ms, Ordering::Relaxed);
            self.stats.apply_ms_sum.fetch_add(ms, Ordering::Relaxed);
            Counts::add(&self.stats.applied);
        } else {
            Counts::add(&self.stats.not_applied);
            shared.fail(format!(
                "edit of {} not shown by the admin API within {APPLY_LIMIT:?}",
                file.path.display()
            ));
        }
    }

    /// Waits until the admin API shows tenant `t`'s expected id.
    async fn wait_id(&self, t: usize, started: Instant) -> bool {
        let want = self.shared.expect.current_id(t);
        let path = format!("/api/v1/tenants/{}", self.shared.layout.domains[t]);
        while started.elapsed() < APPLY_LIMIT {
            if let Ok(v) = crate::net::admin_json(self.shared.admin, &path).await
                && v["id"] == want.as_str()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Breaks a file that is not broken yet; its tenants must stay served (the admin API
    /// marks them stale).
    async fn break_one(&mut self) {
        let files = &self.shared.layout.files;
        let f = self.rng.below(files.len());
        if self.broken.contains(&f) {
            return;
        }
        let file = &files[f];
        let valid = file_yaml(&self.shared.layout, file, self.versions[f]);
        let k = self.rng.next();
        self.shared.set_broken(f, true);
        write_atomic(&file.path, broken_text(file.bulk, &valid, k).as_bytes())
            .expect("write broken tenant file");
        self.broken.insert(f);
        Counts::add(&self.stats.broken);
        let path = format!(
            "/api/v1/tenants/{}",
            self.shared.layout.domains[file.tenants[0]]
        );
        let started = Instant::now();
        while started.elapsed() < APPLY_LIMIT && !self.shared.stopped() {
            if let Ok(v) = crate::net::admin_json(self.shared.admin, &path).await
                && v["stale"] == true
            {
                Counts::add(&self.stats.broken_seen_stale);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.shared.fail(format!(
            "broken {} not reported (stale) by the admin API within {APPLY_LIMIT:?}",
            file.path.display()
        ));
    }
}

fn net_ok(r: Result<(http::StatusCode, bytes::Bytes), String>) -> bool {
    // 200 (all applied) or 422 (some file has errors, the rest applied).
    r.is_ok_and(|(s, _)| s.is_success() || s.as_u16() == 422)
}
