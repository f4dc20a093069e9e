//! How long a one-tenant edit takes to apply with 100 000 tenants loaded.
//!
//! `cargo bench --bench reload` (optionally `-- <tenants>`). Prints figures; asserts nothing
//! about time. Two layouts: one file per tenant (an edit re-reads one small file but the
//! directory is stat'ed in full) and one bulk file (an edit re-parses the whole file).
//! The certificate provider is a no-op here: issuing 100 000 certificates is not what is
//! measured, and the snapshot is swapped before the provider runs.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mta_stsd::certs::{CertBoard, CertProvider, HostChanges};
use mta_stsd::config::Tenant;
use mta_stsd::registry::{Registry, Snapshot};
use mta_stsd::reload::{self, Reloader, Scope, Trigger};
use mta_stsd::stats::Metrics;
use mta_stsd::stats::Stats;

struct NoCertificates;

impl CertProvider for NoCertificates {
    fn name(&self) -> &'static str {
        "none"
    }
    fn sync(&self, _: &[Arc<Tenant>]) {}
    fn sync_changes(&self, _: &HostChanges, _: &dyn Fn() -> Vec<Arc<Tenant>>) {}
}

fn tenant(i: usize, mode: &str) -> String {
    format!("domain: t{i}.example\nmode: {mode}\nmx: [mx.t{i}.example]\nmax_age: 604800\n")
}

fn reloader(dir: &Path) -> (Arc<Reloader>, Duration) {
    let started = Instant::now();
    let config = mta_stsd::config::load_server_config(dir).expect("server file");
    // As the daemon loads: through the retirement state of the state directory (written).
    let (store, _) = reload::Retirements::open(&config, true);
    let (cache, set) = reload::initial_load_with(&config, Arc::new(store)).expect("tenants");
    let registry = Arc::new(Registry::new(Snapshot::new(set.tenants, set.diagnostics)));
    let r = Reloader::new(
        reload::Parts {
            config,
            registry,
            board: Arc::new(CertBoard::new()),
            provider: Arc::new(NoCertificates),
            stats: Arc::new(Stats::default()),
            metrics: Arc::new(Metrics::new()),
        },
        cache,
    );
    (Arc::new(r), started.elapsed())
}

/// Edits with `edit` and reloads the way the watcher does: only the file it reported.
fn measure(label: &str, r: &Reloader, file: &Path, edit: impl Fn(usize)) {
    let scope = Scope::Files(BTreeSet::from([file.to_path_buf()]));
    let mut figures = Vec::new();
    for round in 0..7 {
        edit(round);
        let t = Instant::now();
        let outcome = r.reload_blocking_scoped(Trigger::Watch, scope.clone());
        let wall = t.elapsed();
        assert_eq!(outcome.changed_files.len(), 1, "{outcome:?}");
        figures.push(wall);
    }
    figures.sort();
    println!(
        "{label}: one-tenant edit applied in median {:.1} ms (min {:.1}, max {:.1}) over {} runs",
        figures[figures.len() / 2].as_secs_f64() * 1e3,
        figures[0].as_secs_f64() * 1e3,
        figures[figures.len() - 1].as_secs_f64() * 1e3,
        figures.len()
    );
    let t = Instant::now();
    r.reload_blocking(Trigger::Signal);
    println!(
        "{label}: full rescan with nothing changed (SIGHUP, POST /reload, ConfigMap swap) {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let server =
        "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: internal\nreload:\n  watch: false\n";

    // One file per tenant.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("mta-stsd.yaml"), server).unwrap();
    let tenants = dir.join("tenants");
    std::fs::create_dir(&tenants).unwrap();
    for i in 0..n {
        std::fs::write(
            tenants.join(format!("t{i}.example.yaml")),
            tenant(i, "testing"),
        )
        .unwrap();
    }
    let (r, load) = reloader(dir);
    println!(
        "{n} tenants, one file each: initial load {:.0} ms (retirement state written)",
        load.as_secs_f64() * 1e3
    );
    drop(r);
    let state = dir.join("state").join(reload::retire::STATE_FILE);
    let bytes = std::fs::metadata(&state).map_or(0, |m| m.len());
    let (r, load) = reloader(dir);
    println!(
        "{n} tenants, one file each: restart load {:.0} ms (retirement state of {} KiB read)",
        load.as_secs_f64() * 1e3,
        bytes / 1024
    );
    let target = tenants.join(format!("t{}.example.yaml", n / 2));
    measure("one file per tenant", &r, &target, |round| {
        let mode = if round % 2 == 0 { "enforce" } else { "testing" };
        std::fs::write(&target, tenant(n / 2, mode)).unwrap();
    });
    drop(r);
    drop(tmp);

    // Bulk files of BULK tenants each (serde-saphyr's default node budget stops a single file
    // somewhere above 40 000 tenants).
    const BULK: usize = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("mta-stsd.yaml"), server).unwrap();
    let tenants = dir.join("tenants");
    std::fs::create_dir(&tenants).unwrap();
    let bulk = |file: usize, changed_mode: &str| {
        let mut text = String::with_capacity(BULK * 80);
        for i in file * BULK..((file + 1) * BULK).min(n) {
            let mode = if i == n / 2 { changed_mode } else { "testing" };
            text.push_str(&format!(
                "- {{domain: t{i}.example, mode: {mode}, mx: [mx.t{i}.example], max_age: 604800}}\n"
            ));
        }
        text
    };
    let files = n.div_ceil(BULK);
    for f in 0..files {
        std::fs::write(tenants.join(format!("bulk{f:03}.yaml")), bulk(f, "testing")).unwrap();
    }
    let (r, load) = reloader(dir);
    println!(
        "{n} tenants in {files} files of {BULK}: initial load {:.0} ms",
        load.as_secs_f64() * 1e3
    );
    let changed = n / 2 / BULK;
    let target = tenants.join(format!("bulk{changed:03}.yaml"));
    measure("bulk files", &r, &target, |round| {
        let mode = if round % 2 == 0 { "enforce" } else { "testing" };
        std::fs::write(&target, bulk(changed, mode)).unwrap();
    });
}
