//! Live configuration changes: file watching, SIGHUP and `POST /reload` all end in
//! [`Reloader::reload`], which builds a complete new snapshot off the request path and swaps it
//! in once.
//!
//! Incremental: the last result of every tenant file is cached with the file's identity and
//! timestamps (`cache::Stamp`); a reload re-reads only files whose stamp changed and compares the
//! parsed result with the cached one, so a one-tenant edit among 100 000 tenants parses one
//! file. A file that now fails keeps its last good tenants served (marked stale) while its
//! errors are logged, counted and shown; other files' changes still apply.
//!
//! Watching: directories, not files (editors save by rename, Kubernetes swaps the `..data`
//! symlink of a ConfigMap mount), any event → a debounced reload that compares results.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

mod cache;
mod watch;

pub use cache::{Refresh, TenantCache, initial_load, load, load_server};
pub use watch::{DirWatch, sighup_task, watch_task};

use crate::certs::{CertBoard, CertProvider};
use crate::config::{self, Diagnostic, ServerConfig, Tenant};
use crate::registry::{Registry, Snapshot};
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

    /// [`Reloader::reload_blocking`] limited to `scope`.
    pub fn reload_blocking_scoped(&self, trigger: Trigger, scope: Scope) -> ReloadOutcome {
        let started = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let server = self.reread_server(&mut state);
        let server_changed = server.changed;
        let mut attempt = Attempt::new(trigger, started, server);
        let refresh = match self.refresh(&mut state.cache, &scope) {
            Ok(r) => r,
            Err(diag) => {
                attempt.errors.push(diag);
                attempt.stale_tenants = state.cache.stale();
                return self.finish(ReloadResult::Error, attempt);
            }
        };
        let changed = !refresh.changed_files.is_empty();
        if changed {
            self.swap(&state.cache);
        } else if trigger.explicit() {
            let current = self.registry.load();
            let tenants: Vec<Arc<Tenant>> = current.tenants().cloned().collect();
            self.provider.sync(&tenants);
        }
        let snapshot = self.registry.load();
        attempt.errors.extend(
            snapshot
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .cloned(),
        );
        let result = if !changed && !server_changed && !trigger.explicit() {
            ReloadResult::Unchanged
        } else if attempt.errors.is_empty() {
            ReloadResult::Success
        } else {
            ReloadResult::Error
        };
        attempt.stale_tenants = state.cache.stale();
        attempt.reparsed_files = refresh.reparsed;
        attempt.changed_files = refresh.changed_files;
        drop(state);
        let outcome = self.finish(result, attempt);
        if result != ReloadResult::Unchanged {
            log_outcome(&outcome);
        }
        outcome
    }

    /// Brings the tenant cache in step with the files `scope` names and logs what the files
    /// parsed again say. An unreadable tenants directory changes nothing.
    fn refresh(&self, cache: &mut TenantCache, scope: &Scope) -> Result<Refresh, Diagnostic> {
        let dir = &self.running.tenants_dir;
        let refreshed = match scope {
            Scope::All => cache.refresh(dir),
            Scope::Files(paths) => Ok(cache.refresh_files(dir, paths)),
        };
        match refreshed {
            Ok(r) => {
                log_diagnostics(&r.new_diagnostics);
                Ok(r)
            }
            Err(diag) => {
                tracing::error!(dir = %dir.display(), "{diag}; keeping every tenant as it is");
                Err(diag)
            }
        }
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

    /// Swaps in the cache's tenant table. The body is live from here on; certificates follow
    /// (issuance is queued for added tenants, removed ones are dropped), then the records are
    /// logged with readiness.
    fn swap(&self, cache: &TenantCache) {
        let set = cache.assemble();
        let tenants = set.tenants.clone();
        let old = self
            .registry
            .swap(Snapshot::new(set.tenants, set.diagnostics));
        self.provider.sync(&tenants);
        let new = self.registry.load();
        self.stats
            .tenant_requests
            .retain(|d| new.by_domain(d).is_some());
        crate::publish::log_changes(
            &old,
            &new,
            &self.board,
            crate::publish::Publishing::of(&self.running),
        );
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
