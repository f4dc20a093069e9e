//! Process samples (VmRSS, threads, open fds from /proc/PID), the open-connections gauge, the
//! least-squares slope, a Prometheus text parser and the database check.

use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::state::Shared;

#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Seconds since the daemon (this segment's process) was ready.
    pub t: f64,
    pub rss_kib: f64,
    pub fds: f64,
    pub threads: f64,
}

#[derive(Default)]
pub struct Samples {
    /// One list per daemon process (before and after the restart).
    pub segments: Mutex<Vec<Vec<Sample>>>,
    pub max_open_connections: AtomicU64,
    pub pid: AtomicU32,
    pub scrapes: AtomicU64,
    /// CPU seconds (user + system) of the daemon processes that ended, in ms.
    pub daemon_cpu_ms: AtomicU64,
}

/// User + system CPU seconds of process `pid` ("self" for this one), from /proc/PID/stat.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

impl Samples {
    /// Adds the CPU time of daemon `pid` (read before it ends).
    pub fn add_cpu(&self, pid: u32) {
        if let Some(s) = cpu_seconds(&pid.to_string()) {
            self.daemon_cpu_ms
                .fetch_add((s * 1000.0) as u64, Ordering::Relaxed);
        }
    }
}

/// VmRSS (KiB) and Threads of `pid`, and its open fds.
pub fn read_proc(pid: u32) -> Option<(f64, f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as f64;
    Some((field("VmRSS:")?, field("Threads:")?, fds))
}

impl Samples {
    /// Starts a new segment for the process `pid` (ready at `ready`).
    pub fn begin(&self, pid: u32) {
        self.pid.store(pid, Ordering::SeqCst);
        self.segments.lock().unwrap().push(Vec::new());
    }
}

/// Samples /proc every 2 s and the metrics every 10 s until stopped.
pub async fn run(shared: Arc<Shared>, samples: Arc<Samples>) {
    let mut seg_start = Instant::now();
    let mut seg_count = 0;
    let mut last_scrape = Instant::now() - Duration::from_secs(60);
    while shared.nap(Duration::from_secs(2)).await {
        let n = samples.segments.lock().unwrap().len();
        if n != seg_count {
            seg_count = n;
            seg_start = Instant::now();
        }
        let pid = samples.pid.load(Ordering::SeqCst);
        if let Some((rss, threads, fds)) = read_proc(pid) {
            let s = Sample {
                t: seg_start.elapsed().as_secs_f64(),
                rss_kib: rss,
                fds,
                threads,
            };
            if let Some(seg) = samples.segments.lock().unwrap().last_mut() {
                seg.push(s);
            }
        }
        if last_scrape.elapsed() >= Duration::from_secs(10) {
            last_scrape = Instant::now();
            if let Ok(text) = scrape(&shared).await {
                let open = metric_sum(&text, "mta_stsd_open_connections", &[]);
                samples
                    .max_open_connections
                    .fetch_max(open as u64, Ordering::Relaxed);
                samples.scrapes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The metrics in the classic text format.
pub async fn scrape(shared: &Shared) -> Result<String, String> {
    let (status, body) = crate::net::admin(shared.admin, http::Method::GET, "/metrics").await?;
    if !status.is_success() {
        return Err(format!("/metrics: {status}"));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The sum of every sample of `name` whose labels include all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let (n, lab) = match head.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (head, ""),
            };
            if n != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| lab.split(',').any(|p| p == format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum::<f64>()
        + 0.0 // an empty sum is -0
}

/// Least-squares slope of `y` over `t` (per second); `None` with fewer than 3 points.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The database check, with Python's sqlite3 module (independent of the daemon's SQLite
/// binding): `PRAGMA integrity_check`, and every acknowledged report present.
pub fn check_database(db: &Path, acked_tsv: &Path) -> Result<serde_json::Value, String> {
    const SCRIPT: &str = r#"
import json, sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
integrity = [r[0] for r in db.execute("PRAGMA integrity_check")]
fk = db.execute("PRAGMA foreign_key_check").fetchall()
rows = db.execute("SELECT organization, report_id, tenant, source FROM reports").fetchall()
stored = {}
for r in rows:
    stored.setdefault((r[0], r[1], r[2]), []).append(r[3])
acked = set()
for line in open(sys.argv[2], encoding="utf-8"):
    org, rid, tenant, source = line.rstrip("\n").split("\t")
    acked.add((org, rid, tenant, source))
missing = [a for a in acked if a[3] not in stored.get(a[:3], [])]
doubled = [k for k, v in stored.items() if len(v) > 1]
print(json.dumps({"integrity": integrity, "foreign_key_violations": len(fk),
    "rows": len(rows), "acked": len(acked), "missing": len(missing),
    "missing_examples": missing[:5], "stored_twice": len(doubled),
    "policies": db.execute("SELECT count(*) FROM policies").fetchone()[0]}))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(db)
        .arg(acked_tsv)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "python3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}
