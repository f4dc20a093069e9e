//! Live configuration changes: file watching, SIGHUP and `POST /reload` all end in
//! [`Reloader::reload`], which builds a complete new snapshot off the request path and swaps it
//! in once.
//!
//! Incremental: the last result of every tenant file is cached with the file's identity and
//! timestamps ([`Stamp`]); a reload re-reads only files whose stamp changed and compares the
//! parsed result with the cached one, so a one-tenant edit among 100 000 tenants parses one
//! file. A file that now fails keeps its last good tenants served (marked stale) while its
//! errors are logged, counted and shown; other files' changes still apply.
//!
//! Watching: directories, not files (editors save by rename, Kubernetes swaps the `..data`
//! symlink of a ConfigMap mount), any event → a debounced reload that compares results.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::certs::{CertBoard, CertProvider};
use crate::config::{self, Diagnostic, FileTenants, ServerConfig, Tenant, TenantSet};
use crate::registry::{Registry, Snapshot};
use crate::stats::{Metrics, ReloadResult, Stats};

/// Longest a burst of file events may postpone a reload: a file rewritten continuously still
/// gets applied about once a second.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

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

/// Identity and timestamps of a file (following symlinks): any write, rename-over or
/// ConfigMap swap changes at least one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The cached state of one tenant file.
#[derive(Clone, Debug)]
struct CachedFile {
    stamp: Stamp,
    /// Tenants served from this file: the new valid ones plus, while the file has errors, the
    /// last good version of those that no longer validate.
    tenants: Vec<Arc<Tenant>>,
    /// Diagnostics of the current file contents.
    diagnostics: Vec<Diagnostic>,
    /// Domains served from the last good version.
    stale: Vec<String>,
}

impl CachedFile {
    /// Combines a fresh parse with the previous state: errors never remove a tenant that was
    /// served; only a clean file (or deleting the file) does.
    fn merge(previous: Option<&CachedFile>, parsed: FileTenants, stamp: Stamp) -> CachedFile {
        let has_errors = parsed.diagnostics.iter().any(Diagnostic::is_error);
        let mut tenants: Vec<Arc<Tenant>> = parsed.tenants.into_iter().map(Arc::new).collect();
        let mut stale = Vec::new();
        if has_errors && let Some(prev) = previous {
            let fresh: HashSet<&str> = tenants.iter().map(|t| t.domain.as_str()).collect();
            let kept: Vec<Arc<Tenant>> = prev
                .tenants
                .iter()
                .filter(|t| !fresh.contains(t.domain.as_str()))
                .cloned()
                .collect();
            stale = kept.iter().map(|t| t.domain.clone()).collect();
            tenants.extend(kept);
        }
        CachedFile {
            stamp,
            tenants,
            diagnostics: parsed.diagnostics,
            stale,
        }
    }

    fn same_result(&self, other: &CachedFile) -> bool {
        self.tenants == other.tenants
            && self.diagnostics == other.diagnostics
            && self.stale == other.stale
    }
}

/// What [`TenantCache::refresh`] found.
#[derive(Debug, Default)]
pub struct Refresh {
    /// Files read and parsed again.
    pub reparsed: usize,
    /// Files whose result differs (including added and removed files).
    pub changed_files: Vec<PathBuf>,
    /// Diagnostics of the files parsed again, to log once.
    pub new_diagnostics: Vec<Diagnostic>,
}

/// The last result of every tenant file of a directory.
#[derive(Debug, Default)]
pub struct TenantCache {
    files: BTreeMap<PathBuf, CachedFile>,
}

impl TenantCache {
    /// Brings the cache in step with `dir`. An unreadable directory is an error and leaves the
    /// cache as it was (a directory being replaced must not unload every tenant).
    pub fn refresh(&mut self, dir: &Path) -> Result<Refresh, Diagnostic> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Diagnostic::error(dir, 0, 0, "", format!("cannot read tenants directory: {e}"))
        })?;
        let mut refresh = Refresh::default();
        let mut seen = BTreeSet::new();
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if self.update(&path, &mut refresh) {
                seen.insert(path);
            }
        }
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !seen.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            self.files.remove(&path);
            refresh.changed_files.push(path);
        }
        Ok(refresh)
    }

    /// Looks at the named files of `dir` only (what the watcher saw change): a one-file edit
    /// then costs one `stat` and one parse however many files the directory holds.
    pub fn refresh_files(&mut self, dir: &Path, paths: &BTreeSet<PathBuf>) -> Refresh {
        let mut refresh = Refresh::default();
        for path in paths.iter().filter(|p| p.parent() == Some(dir)) {
            if !self.update(path, &mut refresh) && self.files.remove(path).is_some() {
                refresh.changed_files.push(path.clone());
            }
        }
        refresh
    }

    /// Re-reads `path` if its stamp changed. Returns whether it is a tenant file that exists.
    fn update(&mut self, path: &Path, refresh: &mut Refresh) -> bool {
        if !config::is_tenant_file(path) {
            return false;
        }
        // Stat before reading: if the file changes in between, the stored stamp is older than
        // the contents and the next event reads it again.
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        let stamp = Stamp::of(&meta);
        let previous = self.files.get(path);
        if previous.is_some_and(|p| p.stamp == stamp) {
            return true;
        }
        let parsed = config::load_tenant_file(path);
        refresh.reparsed += 1;
        refresh
            .new_diagnostics
            .extend(parsed.diagnostics.iter().cloned());
        let next = CachedFile::merge(previous, parsed, stamp);
        if previous.is_none_or(|p| !p.same_result(&next)) {
            refresh.changed_files.push(path.to_path_buf());
        }
        self.files.insert(path.to_path_buf(), next);
        true
    }

    /// The tenant table of the cached files, in path order (first definition wins).
    pub fn assemble(&self) -> TenantSet {
        config::assemble_shared(
            self.files
                .values()
                .map(|f| (f.tenants.as_slice(), f.diagnostics.as_slice())),
        )
    }

    /// Domains currently served from a last good version.
    pub fn stale(&self) -> Vec<String> {
        let mut list: Vec<String> = self
            .files
            .values()
            .flat_map(|f| f.stale.iter().cloned())
            .collect();
        list.sort();
        list
    }
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

/// What the reloader mutates, behind one lock so reloads never interleave.
struct State {
    cache: TenantCache,
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

/// The first load: the tenant cache of `config.tenants_dir` and its table.
pub fn initial_load(config: &ServerConfig) -> Result<(TenantCache, TenantSet), Diagnostic> {
    let mut cache = TenantCache::default();
    cache.refresh(&config.tenants_dir)?;
    let set = cache.assemble();
    Ok((cache, set))
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
            parts.metrics.reload(ReloadResult::Success, now);
            ReloadResult::Success
        } else {
            parts.metrics.reload(ReloadResult::Error, now);
            ReloadResult::Error
        };
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
        Reloader {
            state: Mutex::new(State {
                cache,
                server: Ok(parts.config.clone()),
            }),
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
                self.metrics
                    .reload(ReloadResult::Error, crate::util::unix_now());
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

    /// [`Reloader::reload_blocking`] limited to `scope`.
    pub fn reload_blocking_scoped(&self, trigger: Trigger, scope: Scope) -> ReloadOutcome {
        let started = Instant::now();
        let now = crate::util::unix_now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());

        // The server file: errors and restart-only changes are reported, never half-applied.
        let server = config::load_server_config(&self.running.dir);
        let server_changed = server != state.server;
        let (server_errors, restart_required, public_hostname) = match &server {
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
        if server_changed {
            for d in &server_errors {
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

        let dir = &self.running.tenants_dir;
        let refreshed = match &scope {
            Scope::All => state.cache.refresh(dir),
            Scope::Files(paths) => Ok(state.cache.refresh_files(dir, paths)),
        };
        let refresh = match refreshed {
            Ok(r) => r,
            Err(diag) => {
                tracing::error!(dir = %self.running.tenants_dir.display(), "{diag}; keeping every tenant as it is");
                let mut errors = server_errors;
                errors.push(diag);
                return self.finish(
                    trigger,
                    ReloadResult::Error,
                    errors,
                    restart_required,
                    public_hostname,
                    state.cache.stale(),
                    (0, Vec::new()),
                    started,
                    now,
                );
            }
        };
        for d in &refresh.new_diagnostics {
            if d.is_error() {
                tracing::error!(file = %d.file.display(), line = d.line, field = %d.field, "{d}");
            } else {
                tracing::warn!(file = %d.file.display(), line = d.line, field = %d.field, "{d}");
            }
        }

        let changed = !refresh.changed_files.is_empty();
        if changed {
            let set = state.cache.assemble();
            let tenants = set.tenants.clone();
            let old = self
                .registry
                .swap(Snapshot::new(set.tenants, set.diagnostics));
            // The body is live from here on; certificates follow (issuance is queued for added
            // tenants, removed ones are dropped), then the records are logged with readiness.
            self.provider.sync(&tenants);
            let new = self.registry.load();
            self.stats
                .tenant_requests
                .retain(|d| new.by_domain(d).is_some());
            crate::publish::log_changes(&old, &new, &self.board);
        } else if trigger.explicit() {
            let current = self.registry.load();
            let tenants: Vec<Arc<Tenant>> = current.tenants().cloned().collect();
            self.provider.sync(&tenants);
        }

        let snapshot = self.registry.load();
        let mut errors = server_errors;
        errors.extend(
            snapshot
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .cloned(),
        );
        let result = if !changed && !server_changed && !trigger.explicit() {
            ReloadResult::Unchanged
        } else if errors.is_empty() {
            ReloadResult::Success
        } else {
            ReloadResult::Error
        };
        let stale = state.cache.stale();
        drop(state);
        let outcome = self.finish(
            trigger,
            result,
            errors,
            restart_required,
            public_hostname,
            stale,
            (refresh.reparsed, refresh.changed_files),
            started,
            now,
        );
        if result != ReloadResult::Unchanged {
            tracing::info!(
                trigger = ?trigger,
                result = result.as_str(),
                generation = outcome.generation,
                tenants = outcome.tenants,
                changed_files = outcome.changed_files.len(),
                errors = outcome.errors.len(),
                elapsed_ms = format!("{:.1}", outcome.elapsed_ms),
                "configuration reloaded"
            );
        }
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        trigger: Trigger,
        result: ReloadResult,
        errors: Vec<Diagnostic>,
        restart_required: Vec<&'static str>,
        public_hostname: Option<String>,
        stale_tenants: Vec<String>,
        (reparsed_files, changed_files): (usize, Vec<PathBuf>),
        started: Instant,
        now: i64,
    ) -> ReloadOutcome {
        self.metrics.reload(result, now);
        let snapshot = self.registry.load();
        let previous = self.status();
        let last_success = if result == ReloadResult::Success
            || (result == ReloadResult::Unchanged && errors.is_empty())
        {
            Some(now)
        } else {
            previous.last_success
        };
        let outcome = ReloadOutcome {
            result,
            trigger,
            generation: snapshot.generation,
            reparsed_files,
            changed_files,
            tenants: snapshot.len(),
            errors: errors.iter().map(ToString::to_string).collect(),
            restart_required: restart_required.clone(),
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        self.status.store(Arc::new(ReloadStatus {
            generation: snapshot.generation,
            last_trigger: Some(trigger),
            last_result: Some(result),
            last_attempt: now,
            last_success,
            errors,
            restart_required,
            stale_tenants,
            public_hostname,
        }));
        outcome
    }
}

/// The directories to watch: the configuration directory (server file, a ConfigMap's `..data`)
/// and the tenants directory when it is elsewhere.
fn watch_dirs(config: &ServerConfig) -> Vec<PathBuf> {
    let mut dirs = vec![config.dir.clone()];
    if config.tenants_dir != config.dir {
        dirs.push(config.tenants_dir.clone());
    }
    dirs
}

/// `(dev, inode)` of a directory, to notice it being replaced (then the watch must be renewed:
/// inotify follows the old inode).
fn dir_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Adds what `event` touched to `scope`. A visible tenant file in the tenants directory is
/// looked at alone; a Kubernetes `..` entry there (the ConfigMap `..data` swap changes every
/// visible link at once), an event without paths, or the tenants directory itself being moved
/// asks for a full rescan. Editor temporaries (`.a.yaml.swp`, `a.yaml~`) need nothing: the
/// rename that saves them names the tenant file too. Nor do other entries of the configuration
/// directory: the server file is read on every reload.
fn widen(scope: &mut Scope, event: &notify::Event, tenants_dir: &Path) {
    let Scope::Files(files) = scope else { return };
    if event.paths.is_empty() {
        *scope = Scope::All;
        return;
    }
    for path in &event.paths {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let tenant_name =
            !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"));
        if path.parent() == Some(tenants_dir) && tenant_name {
            files.insert(path.clone());
        } else if (path.parent() == Some(tenants_dir) && name.starts_with(".."))
            || path.as_path() == tenants_dir
        {
            *scope = Scope::All;
            return;
        }
    }
}

/// Whether a notify event can mean a configuration change. Our own reads produce open and
/// close-without-write events; reacting to them would reload forever.
fn is_relevant(event: &notify::Event) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// An established watch on the configuration directories; [`watch_task`] drives it.
pub struct DirWatch {
    watcher: notify::RecommendedWatcher,
    wake: Arc<tokio::sync::Notify>,
    pending: Arc<Mutex<Scope>>,
    dirs: Vec<PathBuf>,
    identities: Vec<Option<(u64, u64)>>,
}

impl DirWatch {
    /// Starts watching the configuration directory and the tenants directory. Done before the
    /// daemon reports ready, so no change after that point can be missed.
    pub fn new(config: &ServerConfig) -> notify::Result<DirWatch> {
        use notify::{RecursiveMode, Watcher};
        let wake = Arc::new(tokio::sync::Notify::new());
        let pending = Arc::new(Mutex::new(Scope::Files(BTreeSet::new())));
        let (signal, collect) = (wake.clone(), pending.clone());
        let tenants_dir = config.tenants_dir.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let mut scope = collect.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    Ok(event) if !is_relevant(&event) => return,
                    Ok(event) => widen(&mut scope, &event, &tenants_dir),
                    // Errors include a dropped-events overflow: a full rescan is the answer.
                    Err(_) => *scope = Scope::All,
                }
                drop(scope);
                signal.notify_one();
            })?;
        let dirs = watch_dirs(config);
        let mut identities = Vec::new();
        for dir in &dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
            identities.push(dir_identity(dir));
        }
        Ok(DirWatch {
            watcher,
            wake,
            pending,
            dirs,
            identities,
        })
    }

    /// Renews the watch of a directory that was replaced (inotify follows the old inode).
    fn renew_replaced(&mut self) {
        use notify::{RecursiveMode, Watcher};
        for (dir, identity) in self.dirs.iter().zip(self.identities.iter_mut()) {
            let now = dir_identity(dir);
            if now == *identity {
                continue;
            }
            let _ = self.watcher.unwatch(dir);
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "directory replaced; watching the new one")
                }
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), error = %err, "cannot watch replaced directory")
                }
            }
            *identity = now;
            // Whatever happened in the new directory before the watch must be looked at.
            *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Scope::All;
            self.wake.notify_one();
        }
    }
}

/// The file-watching task: any relevant event in the watched directories starts a reload once
/// events have been quiet for `debounce` (at most [`MAX_DEBOUNCE`] after the first).
pub async fn watch_task(
    reloader: Arc<Reloader>,
    mut watch: DirWatch,
    mut stop: watch::Receiver<bool>,
) {
    let debounce = reloader.running().reload.debounce;
    tracing::info!(dirs = ?watch.dirs, debounce_ms = debounce.as_millis() as u64, "watching configuration");
    let wake = watch.wake.clone();
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = stop.changed() => break,
        }
        let first = tokio::time::Instant::now();
        loop {
            let deadline = (tokio::time::Instant::now() + debounce).min(first + MAX_DEBOUNCE);
            tokio::select! {
                _ = wake.notified() => {
                    if tokio::time::Instant::now() >= first + MAX_DEBOUNCE { break; }
                }
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop.changed() => return,
            }
        }
        let scope = std::mem::replace(
            &mut *watch.pending.lock().unwrap_or_else(|e| e.into_inner()),
            Scope::Files(BTreeSet::new()),
        );
        reloader.reload_scoped(Trigger::Watch, scope).await;
        watch.renew_replaced();
    }
}

/// The SIGHUP task. The daemon creates the signal stream (which installs the handler) before
/// spawning this, so a SIGHUP right after startup never meets the default, fatal, action.
pub async fn sighup_task(
    reloader: Arc<Reloader>,
    mut hup: tokio::signal::unix::Signal,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            got = hup.recv() => {
                if got.is_none() { return; }
                tracing::info!("SIGHUP: reloading configuration");
                reloader.reload(Trigger::Signal).await;
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn cache_rereads_only_changed_files_and_keeps_last_good() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(
            dir,
            "a.yaml",
            "domain: a.example\nmode: testing\nmx: [mx.a.example]\n",
        );
        write(
            dir,
            "b.yaml",
            "domain: b.example\nmode: testing\nmx: [mx.b.example]\n",
        );
        let mut cache = TenantCache::default();
        let r = cache.refresh(dir).unwrap();
        assert_eq!(r.reparsed, 2);
        assert_eq!(cache.assemble().tenants.len(), 2);

        let r = cache.refresh(dir).unwrap();
        assert_eq!(r.reparsed, 0);
        assert!(r.changed_files.is_empty());

        // Broken YAML: a.example stays, stale, with the error reported.
        write(dir, "a.yaml", "domain: a.example\nmode: [broken\n");
        let r = cache.refresh(dir).unwrap();
        assert_eq!(r.reparsed, 1);
        assert_eq!(r.changed_files, vec![dir.join("a.yaml")]);
        let set = cache.assemble();
        assert_eq!(set.tenants.len(), 2);
        assert!(set.has_errors());
        assert_eq!(cache.stale(), vec!["a.example".to_owned()]);

        // A validation error on one tenant of a list keeps that tenant's last good version.
        write(
            dir,
            "a.yaml",
            "- {domain: a.example, mode: enforce, mx: []}\n- {domain: c.example, mode: testing, mx: [mx.c.example]}\n",
        );
        cache.refresh(dir).unwrap();
        let set = cache.assemble();
        let domains: BTreeSet<_> = set.tenants.iter().map(|t| t.domain.as_str()).collect();
        assert_eq!(
            domains,
            BTreeSet::from(["a.example", "b.example", "c.example"])
        );
        assert_eq!(
            set.tenants
                .iter()
                .find(|t| t.domain == "a.example")
                .unwrap()
                .policy
                .mode,
            crate::policy::Mode::Testing
        );

        // Fixed: the file's own content rules again; deleting removes.
        write(
            dir,
            "a.yaml",
            "domain: c.example\nmode: testing\nmx: [mx.c.example]\n",
        );
        cache.refresh(dir).unwrap();
        assert!(cache.stale().is_empty());
        std::fs::remove_file(dir.join("b.yaml")).unwrap();
        let r = cache.refresh(dir).unwrap();
        assert_eq!(r.changed_files, vec![dir.join("b.yaml")]);
        let set = cache.assemble();
        assert_eq!(set.tenants.len(), 1);
        assert_eq!(set.tenants[0].domain, "c.example");
        assert!(!set.has_errors());
    }

    #[test]
    fn touching_a_file_is_not_a_change() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let text = "domain: a.example\nmode: testing\nmx: [mx.a.example]\n";
        write(dir, "a.yaml", text);
        let mut cache = TenantCache::default();
        cache.refresh(dir).unwrap();
        // Same content through a rename: a new inode, same parsed result.
        write(dir, ".a.yaml.swp", text);
        std::fs::rename(dir.join(".a.yaml.swp"), dir.join("a.yaml")).unwrap();
        let r = cache.refresh(dir).unwrap();
        assert_eq!(r.reparsed, 1);
        assert!(r.changed_files.is_empty());
    }

    #[test]
    fn watcher_scope() {
        use notify::event::{CreateKind, EventKind};
        let dir = Path::new("/cfg/tenants");
        let ev =
            |p: &str| notify::Event::new(EventKind::Create(CreateKind::Any)).add_path(p.into());
        let mut scope = Scope::Files(BTreeSet::new());
        widen(&mut scope, &ev("/cfg/tenants/a.yaml"), dir);
        widen(&mut scope, &ev("/cfg/mta-stsd.yaml"), dir);
        widen(&mut scope, &ev("/cfg/tenants/.a.yaml.swp"), dir);
        widen(&mut scope, &ev("/cfg/tenants/a.yaml~"), dir);
        assert_eq!(
            scope,
            Scope::Files(BTreeSet::from([PathBuf::from("/cfg/tenants/a.yaml")]))
        );
        widen(&mut scope, &ev("/cfg/tenants/..data"), dir);
        assert_eq!(scope, Scope::All, "a ConfigMap swap changes every file");
        let mut scope = Scope::Files(BTreeSet::new());
        widen(&mut scope, &ev("/cfg/tenants"), dir);
        assert_eq!(scope, Scope::All);
    }

    #[test]
    fn refresh_files_looks_only_at_named_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(
            dir,
            "a.yaml",
            "domain: a.example\nmode: testing\nmx: [mx.a.example]\n",
        );
        let mut cache = TenantCache::default();
        cache.refresh(dir).unwrap();
        write(
            dir,
            "b.yaml",
            "domain: b.example\nmode: testing\nmx: [mx.b.example]\n",
        );
        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        let r = cache.refresh_files(dir, &BTreeSet::from([dir.join("b.yaml")]));
        assert_eq!(r.changed_files, vec![dir.join("b.yaml")]);
        assert_eq!(cache.assemble().tenants.len(), 2, "a.yaml was not named");
        let r = cache.refresh_files(dir, &BTreeSet::from([dir.join("a.yaml")]));
        assert_eq!(r.changed_files, vec![dir.join("a.yaml")]);
        assert_eq!(cache.assemble().tenants.len(), 1);
    }

    #[test]
    fn access_events_are_ignored() {
        use notify::event::{AccessKind, AccessMode, CreateKind, EventKind};
        let ev = |kind| notify::Event::new(kind);
        assert!(!is_relevant(&ev(EventKind::Access(AccessKind::Open(
            AccessMode::Any
        )))));
        assert!(!is_relevant(&ev(EventKind::Access(AccessKind::Close(
            AccessMode::Read
        )))));
        assert!(is_relevant(&ev(EventKind::Access(AccessKind::Close(
            AccessMode::Write
        )))));
        assert!(is_relevant(&ev(EventKind::Create(CreateKind::File))));
    }
}
