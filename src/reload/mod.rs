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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Instant;

use arc_swap::ArcSwap;

mod cache;
mod pool;
pub mod retire;
mod watch;

use cache::{Applied, FileChange, Job};
pub use cache::{Refresh, TenantCache, initial_load, initial_load_with, load, load_server};
pub use retire::Retirements;
use retire::retire_gone;
pub use retire::retire_task;
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

/// What a test runs before a file is parsed.
#[cfg(test)]
type ParseHook = Box<dyn Fn(&std::path::Path) + Send + Sync>;

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
    /// What the provider and the record log still have to hear of, queued under the state
    /// lock so it is in swap order.
    follow: Mutex<VecDeque<Follow>>,
    /// Held by the one thread carrying out `follow`: a provider busy with a big file's
    /// certificates delays no other file's swap, only its own certificates.
    provider_turn: Mutex<()>,
    /// Called before each file is parsed, so a test can hold one file's parse.
    #[cfg(test)]
    parse_hook: Option<ParseHook>,
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
            follow: Mutex::default(),
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
        if let Some(store) = self.lock_state().cache.retirements() {
            store.settle();
        }
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
        let mut served = served_changes(&mut state.claims, &current, &files);
        if let Some(store) = state.cache.retirements().cloned() {
            retire_gone(&store, &current, &mut served, &self.publishing());
            store.flush();
        }
        let diagnostics = {
            let State { cache, claims, .. } = &*state;
            cache.diagnostics(claims.files_with_errors(), |f| claims.duplicates(f))
        };
        self.swap_served(state, &current, served, diagnostics);
        files.into_iter().map(|f| f.path).collect()
    }

    /// Swaps `served` into `current` and lets the provider and the record log follow.
    fn swap_served(
        &self,
        state: MutexGuard<'_, State>,
        current: &Snapshot,
        served: Vec<Served>,
        diagnostics: Vec<Diagnostic>,
    ) {
        self.registry
            .swap(current.with_changes(&served, diagnostics));
        let snapshot = self.registry.load();
        self.lock_follow()
            .push_back(Follow::Swap { served, snapshot });
        drop(state);
        self.carry_out();
    }

    fn publishing(&self) -> crate::publish::Publishing<'_> {
        crate::publish::Publishing::of(&self.running)
    }

    /// Ends the retirements due by now: a tenant no file defines leaves the table, one whose
    /// file says `retire: true` is read again (and left out). Each is logged with the records
    /// to remove. Called every second by the daemon; costs nothing while none is due.
    pub fn expire_retirements(&self) {
        let state = self.lock_state();
        let Some(store) = state.cache.retirements().cloned() else {
            return;
        };
        let now = crate::util::unix_now();
        let due = store.take_due(now);
        if due.is_empty() {
            return;
        }
        let current = self.registry.load();
        let (mut orphans, mut files, mut ended) = (Vec::new(), BTreeSet::new(), Vec::new());
        for domain in &due {
            let Some(t) = current.by_domain(domain) else {
                continue;
            };
            match t.retiring {
                Some(r) if r.orphan => {
                    ended.push(t.clone());
                    orphans.push(Served {
                        host: t.host.clone(),
                        before: Some(t.clone()),
                        after: None,
                    });
                }
                // Read again: the file's tenant leaves (and is logged) in that swap.
                Some(_) => {
                    files.insert(t.source.to_path_buf());
                }
                None => {}
            }
        }
        retire::log_retired(&ended, &self.publishing());
        let mut state = state;
        for path in &files {
            state.cache.invalidate(path);
        }
        if !orphans.is_empty() {
            let diagnostics = current.diagnostics.clone();
            self.swap_served(state, &current, orphans, diagnostics);
        } else {
            drop(state);
        }
        if !files.is_empty() {
            self.reload_blocking_scoped(Trigger::Watch, Scope::Files(files));
        }
    }

    /// Ends the retirement of `domain` at once (the operator confirmed the removal): `false`
    /// when it is not retiring.
    pub fn forget(&self, domain: &str) -> bool {
        let state = self.lock_state();
        let Some(store) = state.cache.retirements().cloned() else {
            return false;
        };
        drop(state);
        let forgotten = store.forget(domain, crate::util::unix_now());
        store.flush();
        if forgotten {
            self.expire_retirements();
        }
        forgotten
    }

    /// The retirement state, when the daemon keeps one.
    pub fn retirements(&self) -> Option<Arc<Retirements>> {
        self.lock_state().cache.retirements().cloned()
    }

    /// Gives the provider the whole tenant list (explicit reloads: a renewed PEM file with
    /// `issuer: files` is picked up even when no tenant changed).
    fn sync_all(&self) {
        let state = self.lock_state();
        self.lock_follow()
            .push_back(Follow::All(self.registry.load()));
        drop(state);
        self.carry_out();
    }

    fn lock_follow(&self) -> MutexGuard<'_, VecDeque<Follow>> {
        self.follow.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Carries out what is queued in `follow`, unless another thread is at it (that thread
    /// then carries out this thread's items too, in order).
    fn carry_out(&self) {
        loop {
            let turn = match self.provider_turn.try_lock() {
                Ok(turn) => turn,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            loop {
                let next = self.lock_follow().pop_front();
                let Some(item) = next else { break };
                self.follow_one(item);
            }
            drop(turn);
            if self.lock_follow().is_empty() {
                return;
            }
        }
    }

    /// The certificate provider, the request counters and the record log follow one swap.
    fn follow_one(&self, item: Follow) {
        let (served, new) = match item {
            Follow::All(snapshot) => {
                let tenants: Vec<Arc<Tenant>> = snapshot.tenants().cloned().collect();
                self.provider.sync(&tenants);
                return;
            }
            Follow::Swap { served, snapshot } => (served, snapshot),
        };
        let hosts = HostChanges::of(&served);
        self.provider
            .sync_changes(&hosts, &|| new.tenants().cloned().collect());
        let removed = hosts.removed.iter();
        let domains = removed.filter_map(|h| h.strip_prefix("mta-sts."));
        self.stats.tenant_requests.forget(domains);
        crate::publish::log_served(
            &served,
            &new,
            &self.board,
            crate::publish::Publishing::of(&self.running),
        );
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

/// What the certificate provider and the record log still have to follow.
enum Follow {
    /// One swap's served-table changes, and the snapshot they produced.
    Swap {
        served: Vec<Served>,
        snapshot: Arc<Snapshot>,
    },
    /// An explicit reload: the whole tenant list of this snapshot.
    All(Arc<Snapshot>),
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
        // A retiring tenant no file defines is no file's claim.
        let lookup = |h: &str| match merged.get(h) {
            Some(s) => s.after.clone(),
            None => current.get(h).filter(|t| !retire::is_orphan(t)).cloned(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Long enough for anything on a loaded machine; a wait that reaches it is a failure.
    const LIMIT: Duration = Duration::from_secs(20);

    /// Records the tenant set after every swap (the provider hears of each one).
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<HashSet<String>>>,
    }

    impl CertProvider for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn sync(&self, _: &[Arc<Tenant>]) {}
        fn sync_changes(&self, _: &HostChanges, all: &dyn Fn() -> Vec<Arc<Tenant>>) {
            let domains = all().iter().map(|t| t.domain.clone()).collect();
            self.seen.lock().unwrap().push(domains);
        }
    }

    fn tenant(domain: &str, mode: &str) -> String {
        format!("- {{domain: {domain}, mode: {mode}, mx: [mx.{domain}], max_age: 86400}}\n")
    }

    fn list(domains: &[&str], mode: &str) -> String {
        domains.iter().map(|d| tenant(d, mode)).collect()
    }

    /// A reloader over `dir` (server file and `tenants/` already written).
    fn reloader(dir: &Path, recorder: Arc<Recorder>) -> Reloader {
        let config = config::load_server_config(dir).expect("server file");
        let (cache, set) = cache::initial_load_plain(&config).expect("tenants");
        let registry = Arc::new(Registry::new(Snapshot::new(set.tenants, set.diagnostics)));
        let parts = Parts {
            config,
            registry,
            board: Arc::new(CertBoard::new()),
            provider: recorder,
            stats: Arc::new(Stats::default()),
            metrics: Arc::new(Metrics::new()),
        };
        Reloader::new(parts, cache)
    }

    /// [`reloader`] with the retirement state of the state directory.
    fn retiring_reloader(dir: &Path) -> Reloader {
        let config = config::load_server_config(dir).expect("server file");
        let (store, _) = Retirements::open(&config, true);
        let (cache, set) = initial_load_with(&config, Arc::new(store)).expect("tenants");
        let registry = Arc::new(Registry::new(Snapshot::new(set.tenants, set.diagnostics)));
        let parts = Parts {
            config,
            registry,
            board: Arc::new(CertBoard::new()),
            provider: Arc::new(Recorder::default()),
            stats: Arc::new(Stats::default()),
            metrics: Arc::new(Metrics::new()),
        };
        Reloader::new(parts, cache)
    }

    #[test]
    fn a_tenant_moved_to_another_file_in_one_reload_is_not_retired() {
        let (_tmp, tenants) = setup();
        std::fs::write(tenants.join("a.yaml"), tenant("a.example", "enforce")).unwrap();
        let r = retiring_reloader(tenants.parent().unwrap());
        let first = r.registry.load().by_domain("a.example").unwrap().clone();
        std::fs::rename(tenants.join("a.yaml"), tenants.join("b.yaml")).unwrap();
        let outcome = r.reload_blocking(Trigger::Api);
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        let moved = r.registry.load().by_domain("a.example").unwrap().clone();
        assert!(moved.retiring.is_none());
        assert_eq!(
            moved.policy.id, first.policy.id,
            "the same id: it never retired"
        );
        let store = r.retirements().unwrap();
        assert_eq!(store.entry("a.example").unwrap().generation, 0);
        assert!(store.take_due(i64::MAX).is_empty(), "no window left open");
    }

    #[test]
    fn a_retiring_tenant_defined_again_in_another_file_is_no_duplicate() {
        let (_tmp, tenants) = setup();
        std::fs::write(tenants.join("a.yaml"), tenant("a.example", "enforce")).unwrap();
        let r = retiring_reloader(tenants.parent().unwrap());
        let first = r.registry.load().by_domain("a.example").unwrap().clone();
        std::fs::remove_file(tenants.join("a.yaml")).unwrap();
        r.reload_blocking(Trigger::Api);
        let retiring = r.registry.load().by_domain("a.example").unwrap().clone();
        assert!(retire::is_orphan(&retiring));
        assert_eq!(retiring.policy.mode, crate::policy::Mode::None);

        std::fs::write(tenants.join("b.yaml"), tenant("a.example", "testing")).unwrap();
        let outcome = r.reload_blocking(Trigger::Api);
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        let back = r.registry.load().by_domain("a.example").unwrap().clone();
        assert_eq!(back.policy.mode, crate::policy::Mode::Testing);
        assert!(back.retiring.is_none());
        assert_ne!(back.policy.id, first.policy.id);

        std::fs::remove_file(tenants.join("b.yaml")).unwrap();
        r.reload_blocking(Trigger::Api);
        assert!(
            r.registry
                .load()
                .by_domain("a.example")
                .unwrap()
                .retiring
                .is_some()
        );
        assert!(r.forget("a.example"));
        assert!(r.registry.load().by_domain("a.example").is_none());
        assert_eq!(r.registry.load().len(), 0);
    }

    fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let server = "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: internal\n";
        std::fs::write(tmp.path().join("mta-stsd.yaml"), server).unwrap();
        let tenants = tmp.path().join("tenants");
        std::fs::create_dir(&tenants).unwrap();
        (tmp, tenants)
    }

    fn mode_of(r: &Reloader, domain: &str) -> Option<String> {
        let snap = r.registry.load();
        snap.by_domain(domain).map(|t| t.policy.mode.to_string())
    }

    /// Holds the parse of every file named `big.yaml` until `release` is sent; says when one
    /// started on `started`.
    fn hold_big(r: &mut Reloader) -> (mpsc::Receiver<()>, mpsc::SyncSender<()>) {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::sync_channel::<()>(0);
        let started_tx = Mutex::new(started_tx);
        let release_rx = Mutex::new(release_rx);
        r.parse_hook = Some(Box::new(move |path: &Path| {
            if path.file_name().is_some_and(|n| n == "big.yaml") {
                started_tx.lock().unwrap().send(()).unwrap();
                release_rx.lock().unwrap().recv().unwrap();
            }
        }));
        (started, release)
    }

    #[test]
    fn a_file_being_parsed_does_not_hold_up_another_reload() {
        let (_tmp, dir) = setup();
        std::fs::write(dir.join("big.yaml"), list(&["b1.example"], "testing")).unwrap();
        std::fs::write(dir.join("small.yaml"), list(&["s.example"], "testing")).unwrap();
        let mut r = reloader(dir.parent().unwrap(), Arc::default());
        let (started, release) = hold_big(&mut r);
        let r = Arc::new(r);
        let big = ["b1.example", "b2.example", "b3.example"];
        std::fs::write(dir.join("big.yaml"), list(&big, "enforce")).unwrap();
        std::fs::write(dir.join("small.yaml"), list(&["s.example"], "enforce")).unwrap();
        let first = {
            let r = r.clone();
            let scope = Scope::Files(BTreeSet::from([dir.join("big.yaml")]));
            std::thread::spawn(move || r.reload_blocking_scoped(Trigger::Watch, scope))
        };
        started
            .recv_timeout(LIMIT)
            .expect("the big file is being parsed");
        // A second reload, for the other file, while the first still reads the big one.
        let (done_tx, done) = mpsc::channel();
        {
            let r = r.clone();
            let scope = Scope::Files(BTreeSet::from([dir.join("small.yaml")]));
            std::thread::spawn(move || {
                let _ = done_tx.send(r.reload_blocking_scoped(Trigger::Watch, scope));
            });
        }
        let second = done
            .recv_timeout(LIMIT)
            .expect("the second reload finished while the big file was being parsed");
        assert_eq!(second.changed_files, vec![dir.join("small.yaml")]);
        assert_eq!(mode_of(&r, "s.example").as_deref(), Some("enforce"));
        assert_eq!(mode_of(&r, "b1.example").as_deref(), Some("testing"));
        assert_eq!(mode_of(&r, "b2.example"), None);
        release.send(()).unwrap();
        let first = first.join().unwrap();
        assert_eq!(first.changed_files, vec![dir.join("big.yaml")]);
        for d in big {
            assert_eq!(mode_of(&r, d).as_deref(), Some("enforce"), "{d}");
        }
    }

    #[test]
    fn one_reload_applies_a_small_file_while_a_big_one_is_parsed_each_in_one_swap() {
        let (_tmp, dir) = setup();
        std::fs::write(
            dir.join("big.yaml"),
            list(&["b1.example", "gone.example"], "testing"),
        )
        .unwrap();
        std::fs::write(dir.join("small.yaml"), list(&["s.example"], "testing")).unwrap();
        let recorder = Arc::new(Recorder::default());
        let mut r = reloader(dir.parent().unwrap(), recorder.clone());
        let (started, release) = hold_big(&mut r);
        let r = Arc::new(r);
        let big = ["b1.example", "b2.example", "b3.example", "b4.example"];
        std::fs::write(dir.join("big.yaml"), list(&big, "enforce")).unwrap();
        std::fs::write(dir.join("small.yaml"), list(&["s.example"], "enforce")).unwrap();
        let reload = {
            let r = r.clone();
            std::thread::spawn(move || r.reload_blocking(Trigger::Api))
        };
        started
            .recv_timeout(LIMIT)
            .expect("the big file is being parsed");
        let deadline = Instant::now() + LIMIT;
        while mode_of(&r, "s.example").as_deref() != Some("enforce") {
            assert!(Instant::now() < deadline, "the small file was not applied");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(mode_of(&r, "b1.example").as_deref(), Some("testing"));
        release.send(()).unwrap();
        let outcome = reload.join().unwrap();
        assert_eq!(outcome.result, ReloadResult::Success, "{outcome:?}");
        assert_eq!(outcome.changed_files.len(), 2);
        // Every swap showed all of the big file's new version or none of it.
        let seen = recorder.seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "one swap per file");
        for tenants in seen.iter() {
            let new = big[1..].iter().filter(|d| tenants.contains(**d)).count();
            assert!(new == 0 || new == 3, "half a file: {tenants:?}");
            assert_eq!(tenants.contains("gone.example"), new == 0, "{tenants:?}");
        }
    }

    /// A tiny deterministic generator, so a failure replays.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// Domain → (file, mode) served, and the error lines, as a first load gives them.
    fn fresh(config_dir: &Path) -> (BTreeMap<String, (PathBuf, String)>, Vec<String>) {
        let config = config::load_server_config(config_dir).unwrap();
        let (_, set) = cache::initial_load_plain(&config).unwrap();
        let snap = Snapshot::new(set.tenants, set.diagnostics);
        view(&snap)
    }

    fn view(snap: &Snapshot) -> (BTreeMap<String, (PathBuf, String)>, Vec<String>) {
        let served = snap
            .tenants()
            .map(|t| {
                let value = (t.source.to_path_buf(), t.policy.mode.to_string());
                (t.domain.clone(), value)
            })
            .collect();
        let errors = snap.diagnostics.iter().map(ToString::to_string).collect();
        (served, errors)
    }

    #[test]
    fn duplicates_follow_path_order_after_any_sequence_of_edits() {
        let (_tmp, dir) = setup();
        let r = reloader(dir.parent().unwrap(), Arc::default());
        let files = ["a.yaml", "b.yaml", "c.yaml", "d.yaml"];
        let domains = [
            "p.example",
            "q.example",
            "r.example",
            "s.example",
            "t.example",
        ];
        let mut rng = Lcg(7);
        for step in 0..300 {
            let file = dir.join(files[rng.below(4) as usize]);
            let mode = ["testing", "enforce"][rng.below(2) as usize];
            let chosen: Vec<&str> = domains
                .iter()
                .copied()
                .filter(|_| rng.below(2) == 0)
                .collect();
            // An empty file is broken YAML and keeps its last good tenants: gone instead.
            if chosen.is_empty() || rng.below(5) == 0 {
                let _ = std::fs::remove_file(&file);
            } else {
                std::fs::write(&file, list(&chosen, mode)).unwrap();
            }
            let scope = if rng.below(4) == 0 {
                Scope::All
            } else {
                Scope::Files(BTreeSet::from([file]))
            };
            r.reload_blocking_scoped(Trigger::Watch, scope);
            let incremental = view(&r.registry.load());
            assert_eq!(incremental, fresh(dir.parent().unwrap()), "step {step}");
        }
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_tenants_through_incremental_swaps() {
        let (_tmp, dir) = setup();
        std::fs::write(
            dir.join("a.yaml"),
            list(&["a.example", "b.example"], "testing"),
        )
        .unwrap();
        let r = reloader(dir.parent().unwrap(), Arc::default());
        let scope = Scope::Files(BTreeSet::from([dir.join("a.yaml")]));
        let broken = format!(
            "{}- {{domain: b.example, mode: [broken\n",
            tenant("a.example", "enforce")
        );
        std::fs::write(dir.join("a.yaml"), broken).unwrap();
        let outcome = r.reload_blocking_scoped(Trigger::Watch, scope.clone());
        assert_eq!(outcome.result, ReloadResult::Error);
        assert_eq!(
            mode_of(&r, "a.example").as_deref(),
            Some("testing"),
            "last good"
        );
        assert_eq!(
            mode_of(&r, "b.example").as_deref(),
            Some("testing"),
            "last good"
        );
        assert_eq!(r.status().stale_tenants, vec!["a.example", "b.example"]);
        std::fs::write(dir.join("a.yaml"), list(&["a.example"], "enforce")).unwrap();
        let outcome = r.reload_blocking_scoped(Trigger::Watch, scope);
        assert_eq!(outcome.result, ReloadResult::Success, "{outcome:?}");
        assert_eq!(mode_of(&r, "a.example").as_deref(), Some("enforce"));
        assert_eq!(mode_of(&r, "b.example"), None);
        assert!(r.status().stale_tenants.is_empty());
    }
}
