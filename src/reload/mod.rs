//! Live configuration changes: file watching, SIGHUP and `POST /reload` all end in
//! [`Reloader::reload`], which builds new snapshots off the request path and swaps them in.
//!
//! Incremental: the last result of every tenant file is cached with the file's identity and
//! timestamps (`cache::Stamp`); a reload re-reads only files whose stamp changed and compares the
//! parsed result with the cached one, so a one-tenant edit among 100 000 tenants parses one
//! file. A file that now fails keeps its last good tenants served (marked stale) while its
//! errors are logged, counted and shown; other files' changes still apply.
//!
//! Per file, as soon as it is parsed: files are read in parallel outside the reloader's lock
//! (`pool::Slots`, smallest first, a big file never holding the last slot), and each file's
//! result is swapped in on its own, all of its changes at once, so a huge bulk file being
//! parsed does not hold up another file's change. A swap costs the tenants that changed: the
//! duplicate rule is kept by `config::Claims`, the snapshot copies only the shards it touches,
//! and the certificate provider and the record log get that file's changes only.
//!
//! Watching: directories, not files (editors save by rename, Kubernetes swaps the `..data`
//! symlink of a ConfigMap mount), any event → a debounced reload that compares results.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::ArcSwap;

mod cache;
mod pool;
mod watch;

use cache::{Applied, FileChange, Job};
pub use cache::{Refresh, TenantCache, initial_load, load, load_server};
pub use watch::{DirWatch, sighup_task, watch_task};

use crate::certs::{CertBoard, CertProvider, HostChanges};
use crate::config::{self, Claims, Diagnostic, ServerConfig, Tenant};
use crate::registry::{Registry, Served, Snapshot};
use crate::stats::{Metrics, ReloadResult, Stats};

/// What started a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The first load.
    Startup,
    /// A file event.
    Watch,
    /// SIGHUP.
    Signal,
    /// `POST /reload` on the admin listener.
    Api,
}

impl Trigger {
    /// Explicit requests also re-sync certificates (a renewed PEM file with `issuer: files`)
    /// even when no tenant changed.
    fn explicit(self) -> bool {
        matches!(self, Trigger::Signal | Trigger::Api)
    }
}

/// Which tenant files a reload looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every file of the tenants directory (SIGHUP, `POST /reload`, a ConfigMap swap, a lost
    /// event).
    #[default]
    All,
    /// Only these paths, as reported by the watcher.
    Files(BTreeSet<PathBuf>),
}

/// The state of live configuration, for the admin API and metrics.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReloadStatus {
    /// Generation of the snapshot being served.
    pub generation: u64,
    /// What started the last reload.
    pub last_trigger: Option<Trigger>,
    /// How it ended.
    pub last_result: Option<ReloadResult>,
    /// When it ran, Unix seconds.
    pub last_attempt: i64,
    /// When a reload (or the start) last applied without errors, Unix seconds.
    pub last_success: Option<i64>,
    /// Every current error: the server file's and every tenant file's.
    pub errors: Vec<Diagnostic>,
    /// Server-file settings changed on disk that need a restart to apply.
    pub restart_required: Vec<&'static str>,
    /// Tenants served from their last good definition.
    pub stale_tenants: Vec<String>,
    /// `public_hostname` from the server file (applied live).
    pub public_hostname: Option<String>,
}

impl ReloadStatus {
    /// Number of errors per file name, sorted by file.
    pub fn errors_per_file(&self) -> BTreeMap<String, usize> {
        let mut map = BTreeMap::new();
        for d in &self.errors {
            *map.entry(d.file.display().to_string()).or_default() += 1;
        }
        map
    }
}

/// The result of one reload, as `POST /reload` returns it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReloadOutcome {
    /// How it ended.
    pub result: ReloadResult,
    /// What started it.
    pub trigger: Trigger,
    /// Generation served afterwards.
    pub generation: u64,
    /// Tenant files read again.
    pub reparsed_files: usize,
    /// Tenant files whose result changed.
    pub changed_files: Vec<PathBuf>,
    /// Tenants served afterwards.
    pub tenants: usize,
    /// Current errors, formatted `file:line:col: error: field: message`.
    pub errors: Vec<String>,
    /// Settings that need a restart.
    pub restart_required: Vec<&'static str>,
    /// Time from start to swap, milliseconds.
    pub elapsed_ms: f64,
}

/// What the reloader mutates, behind one lock: held to plan a reload and to apply one file's
/// result, never while a file is read.
struct State {
    cache: TenantCache,
    /// Who serves each domain several files define.
    claims: Claims,
    /// The server file as last read (to log a change once).
    server: Result<ServerConfig, Vec<Diagnostic>>,
}

/// Applies configuration changes to the running daemon.
pub struct Reloader {
    running: ServerConfig,
    registry: Arc<Registry>,
    board: Arc<CertBoard>,
    provider: Arc<dyn CertProvider>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    status: ArcSwap<ReloadStatus>,
    /// Parse slots shared by concurrent reloads.
    slots: pool::Slots,
    /// Taken before the state lock is let go after a swap: providers see the swaps' changes in
    /// swap order, while the next file is already being applied.
    provider_turn: Mutex<()>,
    /// Called before each file is parsed, so a test can hold one file's parse.
    #[cfg(test)]
    parse_hook: Option<Box<dyn Fn(&std::path::Path) + Send + Sync>>,
}

/// Everything a [`Reloader`] is wired to.
pub struct Parts {
    /// The server configuration the process started with.
    pub config: ServerConfig,
    /// The live snapshot.
    pub registry: Arc<Registry>,
    /// Certificate status.
    pub board: Arc<CertBoard>,
    /// Certificate provider, synced after every swap.
    pub provider: Arc<dyn CertProvider>,
    /// Listener counters (per-tenant counters are pruned on removal).
    pub stats: Arc<Stats>,
    /// Reload counters.
    pub metrics: Arc<Metrics>,
}

impl Reloader {
    /// A reloader over the state [`initial_load`] produced and the daemon already serves.
    pub fn new(parts: Parts, cache: TenantCache) -> Reloader {
        let snapshot = parts.registry.load();
        let now = crate::util::unix_now();
        let errors: Vec<Diagnostic> = snapshot
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .cloned()
            .collect();
        let result = if errors.is_empty() {
            ReloadResult::Success
        } else {
            ReloadResult::Error
        };
        parts.metrics.reload(result);
        let status = ReloadStatus {
            generation: snapshot.generation,
            last_trigger: Some(Trigger::Startup),
            last_result: Some(result),
            last_attempt: now,
            last_success: errors.is_empty().then_some(now),
            errors,
            restart_required: Vec::new(),
            stale_tenants: cache.stale(),
            public_hostname: parts.config.public_hostname.clone(),
        };
        let mut claims = Claims::default();
        claims.adopt(cache.tenants(), &|h| snapshot.get(h).cloned());
        Reloader {
            state: Mutex::new(State {
                cache,
                claims,
                server: Ok(parts.config.clone()),
            }),
            slots: pool::Slots::new(),
            provider_turn: Mutex::new(()),
            #[cfg(test)]
            parse_hook: None,
            running: parts.config,
            registry: parts.registry,
            board: parts.board,
            provider: parts.provider,
            stats: parts.stats,
            metrics: parts.metrics,
            status: ArcSwap::from_pointee(status),
        }
    }

    /// The server configuration the process runs with.
    pub fn running(&self) -> &ServerConfig {
        &self.running
    }

    /// The current status.
    pub fn status(&self) -> Arc<ReloadStatus> {
        self.status.load_full()
    }

    /// Reloads on a blocking thread (file reads and parsing stay off the runtime's workers).
    pub async fn reload(self: &Arc<Self>, trigger: Trigger) -> ReloadOutcome {
        self.reload_scoped(trigger, Scope::All).await
    }

    /// [`Reloader::reload`] limited to `scope`.
    pub async fn reload_scoped(self: &Arc<Self>, trigger: Trigger, scope: Scope) -> ReloadOutcome {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.reload_blocking_scoped(trigger, scope)).await {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::error!(error = %err, "reload task failed");
                self.metrics.reload(ReloadResult::Error);
                ReloadOutcome {
                    result: ReloadResult::Error,
                    trigger,
                    generation: self.registry.load().generation,
                    reparsed_files: 0,
                    changed_files: Vec::new(),
                    tenants: self.registry.load().len(),
                    errors: vec![format!("reload task failed: {err}")],
                    restart_required: Vec::new(),
                    elapsed_ms: 0.0,
                }
            }
        }
    }

    /// Re-reads the server file and the changed tenant files; swaps in a new snapshot when the
    /// parsed result differs, then lets the certificate provider catch up and logs the TXT
    /// records that changed.
    pub fn reload_blocking(&self, trigger: Trigger) -> ReloadOutcome {
        self.reload_blocking_scoped(trigger, Scope::All)
    }

    /// [`Reloader::reload_blocking`] limited to `scope`. Files gone are dropped in one swap;
    /// each file read again is swapped in as soon as it is parsed. Returns once every file
    /// this reload read is applied (a reload that reads a huge file answers after it).
    pub fn reload_blocking_scoped(&self, trigger: Trigger, scope: Scope) -> ReloadOutcome {
        let started = Instant::now();
        let mut state = self.lock_state();
        let server = self.reread_server(&mut state);
        let server_changed = server.changed;
        let mut attempt = Attempt::new(trigger, started, server);
        let plan = match self.plan(&mut state.cache, &scope) {
            Ok(plan) => plan,
            Err(diag) => {
                attempt.errors.push(diag);
                attempt.stale_tenants = state.cache.stale();
                drop(state);
                return self.finish(ReloadResult::Error, attempt);
            }
        };
        attempt.reparsed_files = plan.jobs.len();
        let gone: Vec<FileChange> = plan
            .gone
            .iter()
            .filter_map(|p| state.cache.remove(p))
            .collect();
        attempt.changed_files = self.swap_files(state, gone);
        let applied = self.slots.run(
            plan.jobs,
            Job::size,
            |job| self.parse(job),
            |job, parsed| self.apply(job, parsed),
        );
        attempt.changed_files.extend(applied.into_iter().flatten());
        attempt.changed_files.sort();
        let changed = !attempt.changed_files.is_empty();
        if trigger.explicit() {
            self.sync_all();
        }
        let result = self.conclude(&mut attempt, changed || server_changed);
        let outcome = self.finish(result, attempt);
        if result != ReloadResult::Unchanged {
            log_outcome(&outcome);
        }
        outcome
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the current errors and stale tenants to `attempt` and says how it ended.
    fn conclude(&self, attempt: &mut Attempt, changed: bool) -> ReloadResult {
        let state = self.lock_state();
        let snapshot = self.registry.load();
        attempt.stale_tenants = state.cache.stale();
        drop(state);
        let errors = snapshot.diagnostics.iter().filter(|d| d.is_error());
        attempt.errors.extend(errors.cloned());
        if !changed && !attempt.trigger.explicit() {
            ReloadResult::Unchanged
        } else if attempt.errors.is_empty() {
            ReloadResult::Success
        } else {
            ReloadResult::Error
        }
    }

    /// Looks at the files `scope` names and logs the warnings of entries newly skipped. An
    /// unreadable tenants directory changes nothing.
    fn plan(&self, cache: &mut TenantCache, scope: &Scope) -> Result<cache::Plan, Diagnostic> {
        let dir = &self.running.tenants_dir;
        match cache.plan(dir, scope) {
            Ok(plan) => {
                log_diagnostics(&plan.new_diagnostics);
                Ok(plan)
            }
            Err(diag) => {
                tracing::error!(dir = %dir.display(), "{diag}; keeping every tenant as it is");
                Err(diag)
            }
        }
    }

    /// Reads one file (no lock held).
    fn parse(&self, job: &Job) -> config::FileTenants {
        #[cfg(test)]
        if let Some(hook) = &self.parse_hook {
            hook(&job.path);
        }
        job.parse()
    }

    /// Takes one parsed file in and swaps its changes in; returns the file if its result
    /// changed.
    fn apply(&self, job: Job, parsed: config::FileTenants) -> Option<std::path::PathBuf> {
        let mut state = self.lock_state();
        let diagnostics = parsed.diagnostics.clone();
        match state.cache.apply(&job, parsed) {
            Applied::Superseded => None,
            Applied::Same => {
                log_diagnostics(&diagnostics);
                None
            }
            Applied::Changed(change) => {
                log_diagnostics(&diagnostics);
                self.swap_files(state, vec![change]).pop()
            }
        }
    }

    /// Swaps in the changes of `files` (all of each file's, in one snapshot) and lets the
    /// certificate provider, the request counters and the record log follow. Returns the
    /// files. The body is live from the swap on; certificates follow (issuance is queued for
    /// added tenants, removed ones are dropped), then the records are logged with readiness.
    fn swap_files(
        &self,
        mut state: MutexGuard<'_, State>,
        files: Vec<FileChange>,
    ) -> Vec<std::path::PathBuf> {
        if files.is_empty() {
            return Vec::new();
        }
        let current = self.registry.load();
        let served = served_changes(&mut state.claims, &current, &files);
        let diagnostics = {
            let State { cache, claims, .. } = &*state;
            cache.diagnostics(claims.files_with_errors(), |f| claims.duplicates(f))
        };
        self.registry
            .swap(current.with_changes(&served, diagnostics));
        let new = self.registry.load();
        let turn = self.provider_turn.lock().unwrap_or_else(|e| e.into_inner());
        drop(state);
        let hosts = HostChanges::of(&served);
        self.provider
            .sync_changes(&hosts, &|| new.tenants().cloned().collect());
        if !hosts.removed.is_empty() {
            self.stats
                .tenant_requests
                .retain(|d| new.by_domain(d).is_some());
        }
        crate::publish::log_served(
            &served,
            &new,
            &self.board,
            crate::publish::Publishing::of(&self.running),
        );
        drop(turn);
        files.into_iter().map(|f| f.path).collect()
    }

    /// Gives the provider the whole tenant list (explicit reloads: a renewed PEM file with
    /// `issuer: files` is picked up even when no tenant changed).
    fn sync_all(&self) {
        let _turn = self.provider_turn.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.registry.load();
        let tenants: Vec<Arc<Tenant>> = current.tenants().cloned().collect();
        self.provider.sync(&tenants);
    }

    /// Reads the server file again: its errors and restart-only changes are reported (once,
    /// when the file changed), never half-applied.
    fn reread_server(&self, state: &mut State) -> ServerCheck {
        let server = config::load_server_config(&self.running.dir);
        let changed = server != state.server;
        let (errors, restart_required, public_hostname) = match &server {
            Ok(next) => (
                Vec::new(),
                self.running.restart_required(next),
                next.public_hostname.clone(),
            ),
            Err(diags) => (
                diags.clone(),
                self.status().restart_required.clone(),
                self.status().public_hostname.clone(),
            ),
        };
        if changed {
            for d in &errors {
                tracing::error!(file = %d.file.display(), line = d.line, field = %d.field, "{d}; keeping the running server configuration");
            }
            if !restart_required.is_empty() {
                tracing::warn!(
                    settings = %restart_required.join(", "),
                    "server file changed: these settings apply only after a restart; still running with the previous values"
                );
            }
        }
        state.server = server;
        ServerCheck {
            changed,
            errors,
            restart_required,
            public_hostname,
        }
    }

    /// Counts the reload and publishes its status.
    fn finish(&self, result: ReloadResult, attempt: Attempt) -> ReloadOutcome {
        self.metrics.reload(result);
        let snapshot = self.registry.load();
        let previous = self.status();
        let last_success = if result == ReloadResult::Success
            || (result == ReloadResult::Unchanged && attempt.errors.is_empty())
        {
            Some(attempt.now)
        } else {
            previous.last_success
        };
        let outcome = ReloadOutcome {
            result,
            trigger: attempt.trigger,
            generation: snapshot.generation,
            reparsed_files: attempt.reparsed_files,
            changed_files: attempt.changed_files,
            tenants: snapshot.len(),
            errors: attempt.errors.iter().map(ToString::to_string).collect(),
            restart_required: attempt.restart_required.clone(),
            elapsed_ms: attempt.started.elapsed().as_secs_f64() * 1000.0,
        };
        self.status.store(Arc::new(ReloadStatus {
            generation: snapshot.generation,
            last_trigger: Some(attempt.trigger),
            last_result: Some(result),
            last_attempt: attempt.now,
            last_success,
            errors: attempt.errors,
            restart_required: attempt.restart_required,
            stale_tenants: attempt.stale_tenants,
            public_hostname: attempt.public_hostname,
        }));
        outcome
    }
}

/// What re-reading the server file found.
struct ServerCheck {
    /// The file differs from the last read.
    changed: bool,
    errors: Vec<Diagnostic>,
    restart_required: Vec<&'static str>,
    /// `public_hostname` as it now applies (the last good one while the file is broken).
    public_hostname: Option<String>,
}

impl Attempt {
    /// A reload that started at `started`, with what the server file said.
    fn new(trigger: Trigger, started: Instant, server: ServerCheck) -> Attempt {
        Attempt {
            trigger,
            started,
            now: crate::util::unix_now(),
            errors: server.errors,
            restart_required: server.restart_required,
            public_hostname: server.public_hostname,
            stale_tenants: Vec::new(),
            reparsed_files: 0,
            changed_files: Vec::new(),
        }
    }
}

/// One reload's findings, on their way into [`ReloadOutcome`] and [`ReloadStatus`].
struct Attempt {
    trigger: Trigger,
    started: Instant,
    now: i64,
    errors: Vec<Diagnostic>,
    restart_required: Vec<&'static str>,
    public_hostname: Option<String>,
    stale_tenants: Vec<String>,
    reparsed_files: usize,
    changed_files: Vec<PathBuf>,
}

/// What `files`' changes do to the served table: each file's old tenants replaced by its new
/// ones under the duplicate rule, a host changed by several files merged into one change.
fn served_changes(claims: &mut Claims, current: &Snapshot, files: &[FileChange]) -> Vec<Served> {
    let mut merged: std::collections::HashMap<String, Served> = std::collections::HashMap::new();
    for file in files {
        let lookup = |h: &str| match merged.get(h) {
            Some(s) => s.after.clone(),
            None => current.get(h).cloned(),
        };
        let changes = claims.redefine_file(&file.path, &file.old, &file.new, &lookup);
        for c in changes {
            merged
                .entry(c.host.clone())
                .and_modify(|m| m.after = c.after.clone())
                .or_insert(c);
        }
    }
    let same = |s: &Served| match (&s.before, &s.after) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    };
    merged.into_values().filter(|s| !same(s)).collect()
}

/// The one info line of a reload that did something.
fn log_outcome(outcome: &ReloadOutcome) {
    tracing::info!(
        trigger = ?outcome.trigger,
        result = outcome.result.as_str(),
        generation = outcome.generation,
        tenants = outcome.tenants,
        changed_files = outcome.changed_files.len(),
        errors = outcome.errors.len(),
        elapsed_ms = format!("{:.1}", outcome.elapsed_ms),
        "configuration reloaded"
    );
}

/// Logs the diagnostics of the files parsed again, once each.
pub fn log_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        if d.is_error() {
            tracing::error!(file = %d.file.display(), line = d.line, field = %d.field, "{d}");
        } else {
            tracing::warn!(file = %d.file.display(), line = d.line, field = %d.field, "{d}");
        }
    }
}
