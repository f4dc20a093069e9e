//! The soak driver behind `benches/soak.sh`: the real `mta-stsd serve` with thousands of
//! tenants under mixed load for a fixed time, a `kill -9` and restart in the middle, then one
//! table of what was sent, what came back and how the process behaved. Exits 1 when any
//! assertion fails. Everything listens on 127.0.0.1; the daemon is killed on every exit path.
//!
//! `benches/soak.sh --help` explains the options; this binary takes
//! `--bin PATH --work DIR --duration SECS [--bulk N] [--single N]`.

mod abuse;
mod churn;
mod fetch;
mod net;
mod reports;
mod sample;
mod setup;
mod state;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, pem::PemObject};

use crate::state::{Counts, Shared};

struct Args {
    bin: PathBuf,
    work: PathBuf,
    duration: Duration,
    bulk: usize,
    single: usize,
    /// Run the daemon with glibc's malloc defaults instead of the soak's settings.
    default_malloc: bool,
}

fn args() -> Args {
    let mut a = Args {
        bin: PathBuf::new(),
        work: PathBuf::new(),
        duration: Duration::from_secs(1800),
        bulk: 4,
        single: 1200,
        default_malloc: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{k} needs a value")))
        };
        match k.as_str() {
            "--bin" => a.bin = v().into(),
            "--work" => a.work = v().into(),
            "--duration" => {
                a.duration =
                    Duration::from_secs(v().parse().unwrap_or_else(|_| die("--duration SECS")))
            }
            "--bulk" => a.bulk = v().parse().unwrap_or_else(|_| die("--bulk N")),
            "--single" => a.single = v().parse().unwrap_or_else(|_| die("--single N")),
            // `cargo bench` passes this to every bench binary.
            "--default-malloc" => a.default_malloc = true,
            "--bench" => {}
            _ => die(&format!("unknown argument {k}")),
        }
    }
    if a.bin.as_os_str().is_empty() && a.work.as_os_str().is_empty() {
        // `cargo bench` / `cargo test --benches` without arguments: the soak is not a test.
        println!("soak: nothing to do; run benches/soak.sh (see --help)");
        std::process::exit(0);
    }
    if a.bin.as_os_str().is_empty() || a.work.as_os_str().is_empty() {
        die("usage: soak --bin PATH --work DIR --duration SECS (run it through benches/soak.sh)");
    }
    if a.bulk < 2 || a.single < 1 {
        die("--bulk must be at least 2 and --single at least 1");
    }
    a
}

fn die(msg: &str) -> ! {
    eprintln!("soak: {msg}");
    std::process::exit(2)
}

/// A free loopback port (bound and released; the daemon binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| die(&format!("no free port: {e}")))
}

/// The running daemon process; SIGKILLed when dropped.
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// glibc malloc settings for the daemon, so that VmRSS follows the heap: two arenas (not one
/// per thread that happens to allocate, each adding steps of MiB) and a fixed mmap threshold
/// (large transient buffers, a gzip bomb's 8 MiB, go back to the kernel when freed instead of
/// raising the threshold and staying in an arena).
const MALLOC_ENV: [(&str, &str); 2] = [
    ("MALLOC_ARENA_MAX", "2"),
    ("MALLOC_MMAP_THRESHOLD_", "131072"),
];

fn spawn_daemon(args: &Args, n: usize) -> Daemon {
    let (bin, work) = (&args.bin, &args.work);
    let log = std::fs::File::create(work.join(format!("daemon-{n}.log"))).expect("log file");
    let mut cmd = Command::new(bin);
    if !args.default_malloc {
        cmd.envs(MALLOC_ENV);
    }
    let child = cmd
        .args(["--log-format", "json", "serve", "--config"])
        .arg(work.join("conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| die(&format!("spawn {}: {e}", bin.display())));
    std::fs::write(work.join("daemon.pid"), child.id().to_string()).expect("pid file");
    Daemon { child }
}

/// Waits (up to 5 min) for `/readyz` to answer 200.
async fn wait_ready(d: &mut Daemon, admin: std::net::SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = d.child.try_wait() {
            return Err(format!("the daemon exited: {status}"));
        }
        if let Ok((s, _)) = net::admin(admin, http::Method::GET, "/readyz").await
            && s == http::StatusCode::OK
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("not ready within 5 minutes".into())
}

/// Every tenant's id in the admin API against the expected one; also counts not-ready and
/// stale tenants. Returns (mismatched, not ready, stale, count).
async fn check_ids(shared: &Shared) -> Result<(usize, usize, usize, usize), String> {
    let v = net::admin_json(shared.admin, "/api/v1/tenants").await?;
    let list = v["tenants"].as_array().ok_or("no tenants array")?;
    let mut by_domain = std::collections::HashMap::new();
    for t in list {
        by_domain.insert(t["domain"].as_str().unwrap_or_default().to_owned(), t);
    }
    let (mut wrong, mut unready, mut stale) = (0, 0, 0);
    for (i, d) in shared.layout.domains.iter().enumerate() {
        match by_domain.get(d) {
            Some(t) => {
                if t["id"] != shared.expect.current_id(i).as_str() {
                    wrong += 1;
                }
                if t["ready"] != true {
                    unready += 1;
                }
                if t["stale"] == true {
                    stale += 1;
                }
            }
            None => wrong += 1,
        }
    }
    Ok((wrong, unready, stale, list.len()))
}

/// Waits up to `limit` for every tenant to be ready with the expected id.
async fn settle(shared: &Shared, limit: Duration) -> (usize, usize, usize, usize) {
    let start = Instant::now();
    loop {
        let r = check_ids(shared)
            .await
            .unwrap_or((usize::MAX, usize::MAX, usize::MAX, 0));
        if (r.0 == 0 && r.1 == 0 && r.2 == 0) || start.elapsed() > limit {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn write_config(args: &Args, port: u16, admin_port: u16) -> setup::Layout {
    let conf = args.work.join("conf");
    let tenants = conf.join("tenants");
    std::fs::create_dir_all(&tenants).expect("tenants dir");
    std::fs::write(
        conf.join("mta-stsd.yaml"),
        setup::server_yaml(port, admin_port),
    )
    .expect("server file");
    let layout = setup::layout(&tenants, args.bulk, args.single);
    for f in &layout.files {
        let v = churn::initial_version(f.large);
        std::fs::write(&f.path, setup::file_yaml(&layout, f, v)).expect("tenant file");
    }
    layout
}

struct Tasks {
    set: tokio::task::JoinSet<()>,
}

impl Tasks {
    fn spawn(&mut self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.set.spawn(f);
    }
}

struct Run {
    shared: Arc<Shared>,
    churn: Arc<churn::ChurnStats>,
    abuse: Arc<abuse::AbuseStats>,
    reports: Arc<reports::ReportStats>,
    samples: Arc<sample::Samples>,
}

fn start_load(run: &Run, tasks: &mut Tasks, args: &Args) {
    let s = &run.shared;
    for i in 0..6 {
        tasks.spawn(fetch::keep_alive(
            s.clone(),
            10 + i,
            false,
            1,
            Duration::from_millis(20),
        ));
    }
    for i in 0..3 {
        tasks.spawn(fetch::keep_alive(
            s.clone(),
            20 + i,
            true,
            4,
            Duration::from_millis(40),
        ));
    }
    for i in 0..4 {
        tasks.spawn(fetch::new_connections(
            s.clone(),
            30 + i,
            false,
            Duration::from_millis(100),
        ));
    }
    for i in 0..2 {
        tasks.spawn(fetch::new_connections(
            s.clone(),
            40 + i,
            true,
            Duration::from_millis(100),
        ));
    }
    let churner = churn::Churner::new(s.clone(), run.churn.clone(), 7);
    tasks.spawn(churner.run(Duration::from_millis(1500)));
    let flood_gap = (args.duration / 12).clamp(Duration::from_secs(10), Duration::from_secs(30));
    tasks.spawn(abuse::floods(s.clone(), run.abuse.clone(), flood_gap));
    tasks.spawn(abuse::slowloris(
        s.clone(),
        run.abuse.clone(),
        setup::LIMITS.max_connections / 4,
    ));
    let tag = format!("{}", std::process::id());
    tasks.spawn(reports::posts(
        s.clone(),
        run.reports.clone(),
        51,
        10,
        Duration::from_millis(300),
        tag.clone(),
    ));
    tasks.spawn(reports::posts(
        s.clone(),
        run.reports.clone(),
        52,
        60,
        Duration::from_millis(300),
        tag.clone(),
    ));
    tasks.spawn(reports::mails(
        s.clone(),
        run.reports.clone(),
        53,
        Duration::from_millis(800),
        tag,
    ));
    tasks.spawn(sample::run(s.clone(), run.samples.clone()));
}

/// Kills the daemon with SIGKILL under load and starts it again on the same configuration.
async fn restart(run: &Run, args: &Args, daemon: &mut Daemon) -> Result<Duration, String> {
    let s = &run.shared;
    s.pause_churn.store(true, Ordering::SeqCst);
    s.churn_idle.store(false, Ordering::SeqCst);
    let wait = Instant::now();
    while !s.churn_idle.load(Ordering::SeqCst) && wait.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.samples.add_cpu(daemon.child.id());
    let kill_at = Instant::now();
    s.restart.kill_at.set(kill_at).ok();
    daemon.child.kill().map_err(|e| format!("kill -9: {e}"))?;
    let status = daemon.child.wait().map_err(|e| e.to_string())?;
    eprintln!(
        "soak: daemon killed ({status}) at {:.1}s",
        s.t0.elapsed().as_secs_f64()
    );
    *daemon = spawn_daemon(args, 2);
    wait_ready(daemon, s.admin).await?;
    let ready = Instant::now();
    s.restart.ready_at.set(ready).ok();
    run.samples.begin(daemon.child.id());
    run.churn.pid.store(daemon.child.id(), Ordering::SeqCst);
    s.pause_churn.store(false, Ordering::SeqCst);
    eprintln!(
        "soak: restarted, ready after {:.2}s",
        (ready - kill_at).as_secs_f64()
    );
    Ok(ready - kill_at)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (port, admin_port) = (free_port(), free_port());
    let layout = write_config(&args, port, admin_port);
    let tenant_count = layout.domains.len();
    eprintln!(
        "soak: {tenant_count} tenants ({} bulk files of {}, {} single files), {}s",
        args.bulk,
        setup::BULK_SIZE,
        args.single,
        args.duration.as_secs()
    );
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let mut daemon = spawn_daemon(&args, 1);
    let started = Instant::now();
    if let Err(e) = wait_ready(&mut daemon, admin).await {
        die(&format!("first start: {e}"));
    }
    let ca_pem = std::fs::read(args.work.join("conf/state/ca/ca.crt")).expect("CA certificate");
    let ca = CertificateDer::from_pem_slice(&ca_pem).expect("CA PEM");
    let expect =
        setup::Expectations::new(&layout, |f| churn::initial_version(layout.files[f].large));
    let shared = Arc::new(Shared::new(
        ([127, 0, 0, 1], port).into(),
        admin,
        layout,
        expect,
        net::Tls::new(&ca),
    ));
    let initial = settle(&shared, Duration::from_secs(120)).await;
    if initial.0 != 0 || initial.1 != 0 {
        die(&format!(
            "at start: {} ids differ, {} tenants not ready",
            initial.0, initial.1
        ));
    }
    let startup = started.elapsed();
    let run = Run {
        shared: shared.clone(),
        churn: Arc::new(churn::ChurnStats::default()),
        abuse: Arc::new(abuse::AbuseStats::default()),
        reports: Arc::new(reports::ReportStats::new(
            args.bin.clone(),
            args.work.join("conf"),
        )),
        samples: Arc::new(sample::Samples::default()),
    };
    run.samples.begin(daemon.child.id());
    run.churn.pid.store(daemon.child.id(), Ordering::SeqCst);
    let mut tasks = Tasks {
        set: tokio::task::JoinSet::new(),
    };
    start_load(&run, &mut tasks, &args);
    let load_start = Instant::now();

    tokio::time::sleep(args.duration / 2).await;
    let downtime = restart(&run, &args, &mut daemon).await;
    let left = args.duration.saturating_sub(load_start.elapsed());
    tokio::time::sleep(left).await;
    shared.stop.store(true, Ordering::SeqCst);
    eprintln!("soak: stopping the load");
    let joined = tokio::time::timeout(Duration::from_secs(120), async {
        while tasks.set.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    let fin = finish(&run, &args, daemon, downtime, startup, joined).await;
    std::process::exit(if fin { 0 } else { 1 });
}

/// One row of the table: what, figure, bound, pass.
struct Table {
    rows: Vec<(String, String, String, bool)>,
}

impl Table {
    fn row(
        &mut self,
        what: impl Into<String>,
        figure: impl Into<String>,
        bound: impl Into<String>,
        ok: bool,
    ) {
        self.rows
            .push((what.into(), figure.into(), bound.into(), ok));
    }
    fn print(&self) {
        println!("| check | measured | required | |");
        println!("|---|---|---|---|");
        for (w, f, b, ok) in &self.rows {
            println!(
                "| {w} | {f} | {b} | {} |",
                if *ok { "ok" } else { "**FAIL**" }
            );
        }
    }
    fn ok(&self) -> bool {
        self.rows.iter().all(|r| r.3)
    }
}

async fn finish(
    run: &Run,
    args: &Args,
    mut daemon: Daemon,
    downtime: Result<Duration, String>,
    startup: Duration,
    joined: bool,
) -> bool {
    let s = &run.shared;
    let mut t = Table { rows: Vec::new() };
    t.row(
        "load tasks stopped",
        if joined { "yes" } else { "no (timed out)" },
        "within 120 s",
        joined,
    );
    match &downtime {
        Ok(d) => t.row(
            "kill -9 and restart mid-run: down until /readyz 200",
            format!("{:.2} s", d.as_secs_f64()),
            "restarts",
            true,
        ),
        Err(e) => t.row("kill -9 and restart mid-run", e.clone(), "restarts", false),
    }
    fetch_rows(run, &mut t);
    churn_rows(run, &mut t);
    abuse_rows(run, &mut t);
    report_rows(run, &mut t);
    // The daemon after the load: connections drained, ids as written, metrics as sent.
    let open = drained(s).await;
    t.row(
        "open connections after the load (mta_stsd_open_connections)",
        format!("{open}"),
        "0 within 40 s",
        open == 0.0,
    );
    let (wrong, unready, stale, count) = settle(s, Duration::from_secs(30)).await;
    t.row(
        "tenants in the admin API at the end: id differs / not ready / stale",
        format!("{wrong} / {unready} / {stale} of {count}"),
        format!("0 / 0 / 0 of {}", s.layout.domains.len()),
        wrong == 0 && unready == 0 && stale == 0 && count == s.layout.domains.len(),
    );
    let stored = metrics_rows(run, &mut t).await;
    process_rows(run, args, &mut t);
    // A graceful stop, then the database.
    run.samples.add_cpu(daemon.child.id());
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.child.id().to_string()])
        .status();
    let exit = wait_exit(&mut daemon.child, Duration::from_secs(30));
    t.row(
        "SIGTERM at the end: exit status",
        exit.clone(),
        "0 within 30 s",
        exit == "0",
    );
    database_rows(run, args, stored, &mut t);

    let failures = s.failures();
    print_header(run, args, startup);
    let secs = s.t0.elapsed().as_secs_f64();
    println!(
        "CPU over the run: daemon {:.0} % of one core, this driver {:.0} % (of {} cores; mail ingestion runs in child processes)",
        run.samples.daemon_cpu_ms.load(Ordering::Relaxed) as f64 / 10.0 / secs,
        sample::cpu_seconds("self").unwrap_or(0.0) * 100.0 / secs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!();
    t.print();
    println!();
    if !failures.is_empty() {
        println!(
            "failures ({} in all; the first {} shown):",
            Counts::get(&s.failure_count),
            failures.len().min(30)
        );
        for f in failures.iter().take(30) {
            println!("  {f}");
        }
    }
    let logged = Counts::get(&s.failure_count);
    let ok = t.ok() && logged == 0;
    println!("soak: {}", if ok { "PASS" } else { "FAIL" });
    ok
}

fn wait_exit(child: &mut Child, limit: Duration) -> String {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code().map_or(format!("{st}"), |c| c.to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    "still running".into()
}

fn print_header(run: &Run, args: &Args, startup: Duration) {
    let s = &run.shared;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(": ").nth(1).unwrap_or("").to_owned())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!(
        "soak: {} s, {} tenants ({} bulk files of {} (the last one alternating 1 and {} MX patterns per tenant), {} one-tenant files); startup to all tenants ready {:.1} s",
        args.duration.as_secs(),
        s.layout.domains.len(),
        args.bulk,
        setup::BULK_SIZE,
        setup::LARGE_MX + 2,
        args.single,
        startup.as_secs_f64()
    );
    println!(
        "machine: {cpu}, {} cores; load average at the end {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "limits: max_connections {}, header_read_timeout {} s, handshake_timeout 5 s, TLS-RPT caps {} KiB compressed / {} MiB decompressed",
        setup::LIMITS.max_connections,
        setup::LIMITS.header_read_timeout_s,
        setup::LIMITS.max_compressed >> 10,
        setup::LIMITS.max_decompressed >> 20
    );
    println!(
        "daemon malloc: {}",
        if args.default_malloc {
            "glibc defaults".to_string()
        } else {
            MALLOC_ENV.map(|(k, v)| format!("{k}={v}")).join(" ")
        }
    );
    println!();
}

fn fetch_rows(run: &Run, t: &mut Table) {
    let s = &run.shared;
    for (k, label) in state::FETCH_KINDS.iter().enumerate() {
        let c = &s.fetch[k];
        let (ok, failed) = (Counts::get(&c.ok), Counts::get(&c.failed));
        t.row(
            format!("policy fetches, {label}: ok / failed"),
            format!(
                "{ok} / {failed} (slowest {} ms, {} over 1 s; earlier body while an edit applied: {}; retried after the server closed a reused connection: {}; transport errors in the restart window: {})",
                Counts::get(&c.max_ms),
                Counts::get(&c.over_1s),
                Counts::get(&c.earlier_body),
                Counts::get(&c.retried),
                Counts::get(&c.in_window)
            ),
            "failed = 0, ok > 0",
            failed == 0 && ok > 0,
        );
    }
}

fn churn_rows(run: &Run, t: &mut Table) {
    let c = &run.churn;
    let applied = Counts::get(&c.applied);
    let avg = Counts::get(&c.apply_ms_sum)
        .checked_div(applied)
        .unwrap_or(0);
    t.row(
        "tenant file edits applied (new id in the admin API): single / bulk of 500 / large file toggles",
        format!(
            "{} / {} / {} (apply time mean {avg} ms, max {} ms)",
            Counts::get(&c.single_edits),
            Counts::get(&c.bulk_edits),
            Counts::get(&c.large_toggles),
            Counts::get(&c.apply_ms_max)
        ),
        "every edit shown within 15 s",
        Counts::get(&c.not_applied) == 0 && applied > 0,
    );
    t.row(
        "broken files written / seen stale (last good kept) / repaired",
        format!(
            "{} / {} / {}",
            Counts::get(&c.broken),
            Counts::get(&c.broken_seen_stale),
            Counts::get(&c.repaired)
        ),
        "all seen stale, all repaired",
        Counts::get(&c.broken) == Counts::get(&c.broken_seen_stale)
            && Counts::get(&c.broken) == Counts::get(&c.repaired),
    );
    t.row(
        "SIGHUPs / POST /reload / rewrites without a change",
        format!(
            "{} / {} / {}",
            Counts::get(&c.sighups),
            Counts::get(&c.admin_reloads),
            Counts::get(&c.unchanged_rewrites)
        ),
        "sent",
        true,
    );
}

fn abuse_rows(run: &Run, t: &mut Table) {
    let a = &run.abuse;
    t.row(
        "connection floods (cap + 64 at once, held 3 s): floods / connections / TLS handshakes done",
        format!(
            "{} / {} / {}",
            Counts::get(&a.floods),
            Counts::get(&a.flood_connections),
            Counts::get(&a.flood_handshakes)
        ),
        "no fetch failed meanwhile",
        Counts::get(&a.floods) > 0,
    );
    let max_open = run.samples.max_open_connections.load(Ordering::Relaxed);
    t.row(
        "highest mta_stsd_open_connections scraped (every 10 s)",
        format!("{max_open}"),
        format!("<= {}", setup::LIMITS.max_connections),
        max_open <= setup::LIMITS.max_connections as u64,
    );
    t.row(
        format!("slowloris ({} at once): request heads / ClientHellos closed by the server, longest open", setup::LIMITS.max_connections / 4),
        format!(
            "{} in {:.1} s max / {} in {:.1} s max",
            Counts::get(&a.slow_heads),
            Counts::get(&a.slow_head_max_ms) as f64 / 1000.0,
            Counts::get(&a.slow_hellos),
            Counts::get(&a.slow_hello_max_ms) as f64 / 1000.0
        ),
        format!(
            "< {} s / < {} s",
            abuse::slow_bound(false).as_secs(),
            abuse::slow_bound(true).as_secs()
        ),
        Counts::get(&a.slow_overdue) == 0 && Counts::get(&a.slow_heads) > 0 && Counts::get(&a.slow_hellos) > 0,
    );
}

fn report_rows(run: &Run, t: &mut Table) {
    let r = &run.reports;
    for (k, (label, want, _)) in reports::POST_KINDS.iter().enumerate() {
        let c = &r.posts[k];
        t.row(
            format!("TLS-RPT POST, {label}: answered {want} / otherwise"),
            format!(
                "{} / {} (transport errors in the restart window: {})",
                Counts::get(&c.ok),
                Counts::get(&c.failed),
                Counts::get(&c.in_window)
            ),
            "otherwise = 0",
            Counts::get(&c.failed) == 0 && Counts::get(&c.ok) > 0,
        );
    }
    t.row(
        "TLS-RPT POST retried after 503",
        format!("{}", Counts::get(&r.post_503_retries)),
        "reported",
        true,
    );
    t.row(
        "ingest-mail deferred (75) for a domain while a tenant file was broken (by design)",
        format!("{}", Counts::get(&r.mail_deferred)),
        "reported",
        true,
    );
    for (k, (label, want)) in reports::MAIL_KINDS.iter().enumerate() {
        let c = &r.mails[k];
        t.row(
            format!("ingest-mail, {label}: exit {want} / otherwise"),
            format!("{} / {}", Counts::get(&c.ok), Counts::get(&c.failed)),
            "otherwise = 0",
            Counts::get(&c.failed) == 0 && (k == 1 || Counts::get(&c.ok) > 0),
        );
    }
}

/// Waits for the open-connections gauge to reach 0 (up to 40 s); returns the last value.
async fn drained(s: &Shared) -> f64 {
    let start = Instant::now();
    let mut last = f64::NAN;
    while start.elapsed() < Duration::from_secs(40) {
        if let Ok(text) = sample::scrape(s).await {
            last = sample::metric_sum(&text, "mta_stsd_open_connections", &[]);
            if last == 0.0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    last
}

fn between(v: f64, lo: u64, hi: u64) -> bool {
    v >= lo as f64 && v <= hi as f64
}

/// The metrics rows; returns `mta_stsd_tlsrpt_reports_stored` (all sources).
async fn metrics_rows(run: &Run, t: &mut Table) -> f64 {
    let s = &run.shared;
    let text = match sample::scrape(s).await {
        Ok(text) => text,
        Err(e) => {
            t.row("final /metrics scrape", e, "200", false);
            return f64::NAN;
        }
    };
    let _ = std::fs::write(s_work(run).join("metrics-final.txt"), &text);
    let served = sample::metric_sum(&text, "mta_stsd_requests_total", &[("class", "2xx")]);
    let other: f64 = ["4xx", "5xx", "1xx", "3xx"]
        .iter()
        .map(|c| sample::metric_sum(&text, "mta_stsd_requests_total", &[("class", c)]))
        .sum();
    let (lo, hi) = s.fetch.iter().fold((0, 0), |(lo, hi), c| {
        (
            lo + Counts::get(&c.ok_after),
            hi + Counts::get(&c.ok_after) + Counts::get(&c.ok_straddle),
        )
    });
    t.row(
        "mta_stsd_requests_total 2xx since the restart vs. the driver's 200s answered by the new process",
        format!("{served} vs. {lo}..{hi}"),
        "within the range (the low end: started after the kill)",
        between(served, lo, hi),
    );
    t.row(
        "mta_stsd_requests_total non-2xx since the restart",
        format!("{other}"),
        "0",
        other == 0.0,
    );
    for label in [
        "stored",
        "duplicate",
        "invalid",
        "unknown_domain",
        "too_large",
        "unsupported_media_type",
    ] {
        let m = sample::metric_sum(
            &text,
            "mta_stsd_tlsrpt_reports_received_total",
            &[("source", "https"), ("outcome", label)],
        );
        let (lo, hi) = reports::POST_KINDS
            .iter()
            .enumerate()
            .filter(|(_, k)| k.2 == label)
            .fold((0, 0), |(lo, hi), (i, _)| {
                let (a, st) = reports::after(&run.reports.posts[i]);
                (lo + a, hi + a + st)
            });
        t.row(
            format!("mta_stsd_tlsrpt_reports_received_total{{outcome=\"{label}\"}} since the restart vs. the driver"),
            format!("{m} vs. {lo}..{hi}"),
            "within the range",
            between(m, lo, hi),
        );
    }
    let bad: f64 = ["over_quota", "failed", "timed_out", "throttled"]
        .iter()
        .map(|o| {
            sample::metric_sum(
                &text,
                "mta_stsd_tlsrpt_reports_received_total",
                &[("outcome", o)],
            )
        })
        .sum();
    t.row(
        "TLS-RPT over_quota + failed + timed_out + throttled since the restart",
        format!("{bad}"),
        "0",
        bad == 0.0,
    );
    let stored = sample::metric_sum(&text, "mta_stsd_tlsrpt_reports_stored", &[]);
    let errors = sample::metric_sum(&text, "mta_stsd_reloads_total", &[("result", "error")]);
    let cfg_errors = sample::metric_sum(&text, "mta_stsd_config_errors", &[]) + 0.0;
    t.row(
        "reloads with errors since the restart / config errors left at the end",
        format!("{errors} / {cfg_errors}"),
        "errors seen while files were broken; 0 left",
        cfg_errors == 0.0,
    );
    stored
}

fn s_work(run: &Run) -> PathBuf {
    run.reports.config.parent().unwrap().to_path_buf()
}

fn process_rows(run: &Run, args: &Args, t: &mut Table) {
    let segs = run.samples.segments.lock().unwrap().clone();
    let csv: String = segs
        .iter()
        .enumerate()
        .flat_map(|(i, seg)| {
            seg.iter()
                .map(move |x| format!("{i},{:.1},{},{},{}\n", x.t, x.rss_kib, x.fds, x.threads))
        })
        .collect();
    let _ = std::fs::write(
        args.work.join("samples.csv"),
        format!("process,t,rss_kib,fds,threads\n{csv}"),
    );
    // Warm-up: the first third of each process's life, at least 60 s, at most 300 s.
    let half = args.duration.as_secs_f64() / 2.0;
    let warm = (half / 3.0).clamp(60.0, 300.0);
    // Asserted only on a window of 3 minutes or more.
    let assert = half - warm >= 180.0;
    let note = if assert {
        ""
    } else {
        " (not asserted: window < 3 min)"
    };
    for (i, seg) in segs.iter().enumerate() {
        let name = if i == 0 {
            "first process"
        } else {
            "restarted process"
        };
        let after: Vec<&sample::Sample> = seg.iter().filter(|x| x.t >= warm).collect();
        let warmup: Vec<&sample::Sample> = seg.iter().filter(|x| x.t < warm).collect();
        let per10 = |p: &[(f64, f64)]| sample::slope(p).map(|s| s * 600.0);
        let rss: Vec<(f64, f64)> = after.iter().map(|x| (x.t, x.rss_kib / 1024.0)).collect();
        let rss_slope = per10(&rss);
        let (rlo, rhi) = min_max(seg.iter().map(|x| x.rss_kib / 1024.0));
        let fmt = |s: Option<f64>, unit: &str| {
            s.map_or("n/a".into(), |s| format!("{s:+.2} {unit}/10 min"))
        };
        t.row(
            format!(
                "{name}: VmRSS slope after {warm:.0} s warm-up ({} samples, every 2 s)",
                after.len()
            ),
            format!(
                "{} (whole life {rlo:.1}–{rhi:.1} MiB)",
                fmt(rss_slope, "MiB")
            ),
            format!("< {RSS_BOUND_MIB} MiB/10 min{note}"),
            !assert || rss_slope.is_some_and(|s| s < RSS_BOUND_MIB),
        );
        // Floods raise the fd count for seconds at a time: the baseline is each minute's
        // lowest sample.
        let fds = minute_minima(&after, |x| x.fds);
        let fd_slope = per10(&fds);
        let (flo, fhi) = min_max(seg.iter().map(|x| x.fds));
        t.row(
            format!("{name}: open fds, slope of each minute's lowest sample"),
            format!("{} (whole life {flo:.0}–{fhi:.0})", fmt(fd_slope, "fds")),
            format!("< {FD_BOUND} fds/10 min{note}"),
            !assert || fd_slope.is_some_and(|s| s < FD_BOUND),
        );
        let (_, warm_max) = min_max(warmup.iter().map(|x| x.threads));
        let (tlo, thi) = min_max(after.iter().map(|x| x.threads));
        let thr: Vec<(f64, f64)> = after.iter().map(|x| (x.t, x.threads)).collect();
        t.row(
            format!("{name}: threads after warm-up (tokio's task count is not exposed)"),
            format!(
                "{tlo:.0}–{thi:.0}, warm-up max {warm_max:.0}, slope {}",
                fmt(per10(&thr), "threads")
            ),
            format!("max <= warm-up max + 2{note}"),
            !assert || (thi <= warm_max + 2.0 && !after.is_empty()),
        );
    }
}

/// Bounds on growth per 10 minutes after warm-up.
const RSS_BOUND_MIB: f64 = 2.0;
const FD_BOUND: f64 = 5.0;

fn min_max(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    })
}

/// The lowest value of each whole minute of samples, at the minute's middle.
fn minute_minima(samples: &[&sample::Sample], f: fn(&sample::Sample) -> f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut bucket = f64::NAN;
    for x in samples {
        let b = (x.t / 60.0).floor();
        if b != bucket {
            bucket = b;
            out.push((b * 60.0 + 30.0, f(x)));
        } else if let Some(last) = out.last_mut() {
            last.1 = last.1.min(f(x));
        }
    }
    out
}

fn database_rows(run: &Run, args: &Args, stored: f64, t: &mut Table) {
    let acked = run.reports.acked.lock().unwrap().clone();
    let tsv = args.work.join("acked.tsv");
    let text: String = acked
        .iter()
        .map(|(o, r, d, s)| format!("{o}\t{r}\t{d}\t{s}\n"))
        .collect();
    std::fs::write(&tsv, text).expect("acked list");
    let db = args.work.join("conf/state/tlsrpt.sqlite3");
    match sample::check_database(&db, &tsv) {
        Ok(v) => {
            let integrity = v["integrity"].to_string();
            t.row(
                "PRAGMA integrity_check / foreign_key_check violations",
                format!("{integrity} / {}", v["foreign_key_violations"]),
                "[\"ok\"] / 0",
                integrity == "[\"ok\"]" && v["foreign_key_violations"] == 0,
            );
            let before = acked_before_kill(run);
            t.row(
                "acknowledged reports (200 or exit 0) in the database after the restart: missing",
                format!(
                    "{} of {} ({} acknowledged before the kill -9; examples {})",
                    v["missing"], v["acked"], before, v["missing_examples"]
                ),
                "0",
                v["missing"] == 0 && v["acked"].as_u64().unwrap_or(0) > 0,
            );
            let rows = v["rows"].as_u64().unwrap_or(0);
            let window_posts: u64 = run
                .reports
                .posts
                .iter()
                .map(|c| Counts::get(&c.in_window))
                .sum();
            let acked_n = v["acked"].as_u64().unwrap_or(0);
            t.row(
                "report rows in the database vs. acknowledged (duplicates stored once)",
                format!("{rows} vs. {acked_n} (+ up to {window_posts} cut off by the kill)"),
                "acknowledged <= rows <= + cut off; none stored twice",
                rows >= acked_n && rows <= acked_n + window_posts && v["stored_twice"] == 0,
            );
            t.row(
                "mta_stsd_tlsrpt_reports_stored (https + mail) vs. rows",
                format!("{stored} vs. {rows}"),
                "equal",
                stored == rows as f64,
            );
        }
        Err(e) => t.row("database check", e, "runs", false),
    }
}

/// New reports (posted or mailed) acknowledged before the kill.
fn acked_before_kill(run: &Run) -> u64 {
    let r = &run.reports;
    [&r.posts[0], &r.mails[0]]
        .iter()
        .map(|c| Counts::get(&c.ok) - Counts::get(&c.ok_after) - Counts::get(&c.ok_straddle))
        .sum()
}
