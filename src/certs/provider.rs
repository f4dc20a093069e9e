//! Certificate providers: what turns the tenant list into published certificates.
//!
//! The daemon calls [`CertProvider::sync`] with the complete tenant list at startup and after
//! every snapshot swap. A provider publishes certificates into the [`CertResolver`], removes
//! those of tenants that left, and records each host's [`CertStatus`] on the [`CertBoard`].
//! Slow work (ACME orders) must not happen inside `sync`: queue it and return.
//!
//! Hosts that are not tenants but need a certificate from the same issuer (the TLS-RPT report
//! host) are handed over once with [`CertProvider::sync_extra`]; a provider keeps them across
//! later `sync` calls.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::internal::InternalCa;
use super::queue::IssueQueue;
use super::{CertInfo, CertResolver};
use crate::config::{Served, Tenant};
use crate::util::hash::{FastMap, FastSet};

/// Lifecycle state of one tenant's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertState {
    /// No certificate yet; handshakes for the host are refused.
    Pending,
    /// A valid certificate is served.
    Valid,
    /// Served, and a replacement is being obtained.
    Renewing,
    /// `mta-sts.<domain>` does not point at this server yet (ACME preflight).
    DnsNotReady,
    /// The last attempt failed; waiting until `next_attempt`.
    Backoff,
    /// The certificate could not be obtained or loaded and no retry is scheduled.
    Error,
}

impl CertState {
    /// Name used in tables and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Pending => "pending",
            CertState::Valid => "valid",
            CertState::Renewing => "renewing",
            CertState::DnsNotReady => "dns-not-ready",
            CertState::Backoff => "backoff",
            CertState::Error => "error",
        }
    }

    /// Every state, for metrics that export one series per state.
    pub const ALL: [CertState; 6] = [
        CertState::Pending,
        CertState::Valid,
        CertState::Renewing,
        CertState::DnsNotReady,
        CertState::Backoff,
        CertState::Error,
    ];
}

/// What is known about one host's certificate.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CertStatus {
    /// Current state.
    pub state: CertState,
    /// The provider (`internal`, `files`, `acme`).
    pub provider: &'static str,
    /// The served certificate, if any.
    pub cert: Option<CertInfo>,
    /// The last error, with the CA's or loader's detail.
    pub last_error: Option<String>,
    /// When the next issuance or renewal attempt is due, Unix seconds.
    pub next_attempt: Option<i64>,
    /// When this status last changed, Unix seconds.
    pub updated: i64,
}

impl CertStatus {
    /// A status with only a state.
    pub fn new(state: CertState, provider: &'static str) -> Self {
        CertStatus {
            state,
            provider,
            cert: None,
            last_error: None,
            next_attempt: None,
            updated: crate::util::unix_now(),
        }
    }
}

/// Per-host certificate status, read by the CLI, the admin API and metrics.
#[derive(Debug, Default)]
pub struct CertBoard {
    map: RwLock<FastMap<String, CertStatus>>,
}

impl CertBoard {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the status of `host`.
    pub fn set(&self, host: &str, mut status: CertStatus) {
        status.updated = crate::util::unix_now();
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_owned(), status);
    }

    /// The status of `host`.
    pub fn get(&self, host: &str) -> Option<CertStatus> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned()
    }

    /// `f` of `host`'s status, read in place: no copy for a check made per tenant.
    pub fn with_status<R>(&self, host: &str, f: impl FnOnce(Option<&CertStatus>) -> R) -> R {
        f(self.map.read().unwrap_or_else(|e| e.into_inner()).get(host))
    }

    /// `f` of every status by host, read in place (a scrape of a million tenants must not
    /// copy and sort them first). Writers wait while `f` runs: keep it short.
    pub fn with_all<R>(&self, f: impl FnOnce(&FastMap<String, CertStatus>) -> R) -> R {
        f(&self.map.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Forgets `host`.
    pub fn remove(&self, host: &str) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.remove(host);
        crate::util::hash::shrink_sparse(&mut map);
    }

    /// Every host and status, sorted by host.
    pub fn all(&self) -> Vec<(String, CertStatus)> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<_> = map.iter().map(|(h, s)| (h.clone(), s.clone())).collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }
}

/// The hosts one snapshot swap changed, for [`CertProvider::sync_changes`].
#[derive(Clone, Debug, Default)]
pub struct HostChanges {
    /// Tenants served now that were not before.
    pub added: Vec<Arc<Tenant>>,
    /// Tenants served before and now, with another definition.
    pub changed: Vec<Arc<Tenant>>,
    /// Policy hosts no longer served.
    pub removed: Vec<String>,
}

impl HostChanges {
    /// Sorts served-table changes into added, changed and removed hosts.
    pub fn of(changes: &[Served]) -> HostChanges {
        let mut out = HostChanges::default();
        for c in changes {
            match (&c.before, &c.after) {
                (None, Some(t)) => out.added.push(t.clone()),
                (Some(_), Some(t)) => out.changed.push(t.clone()),
                (Some(_), None) => out.removed.push(c.host.clone()),
                (None, None) => {}
            }
        }
        out
    }
}

/// Keeps the resolver in step with the tenant list.
pub trait CertProvider: Send + Sync {
    /// Short name for logs, metrics and [`CertStatus::provider`].
    fn name(&self) -> &'static str;
    /// Called with every current tenant at startup and after an explicit reload (SIGHUP,
    /// `POST /reload`).
    fn sync(&self, tenants: &[Arc<Tenant>]);
    /// Called after a swap that changed only `changes`, in swap order, so a one-tenant edit
    /// costs one host. `all` lists every current tenant; the default syncs that whole list.
    fn sync_changes(&self, changes: &HostChanges, all: &dyn Fn() -> Vec<Arc<Tenant>>) {
        let _ = changes;
        self.sync(&all());
    }
    /// Serves these non-tenant hosts too (replacing any earlier list) and keeps them across
    /// later [`CertProvider::sync`] calls. The default does nothing: such a provider serves
    /// tenants only.
    fn sync_extra(&self, hosts: &[String]) {
        let _ = hosts;
    }
    /// Obtains `host`'s certificate on this (blocking) thread if the provider can do so at
    /// once and it is still waiting; whether it is served now. A handshake for a host whose
    /// certificate is queued (internal CA) or not read from the store yet (ACME) calls this
    /// instead of refusing. The default can't (files are what they are).
    fn issue_now(&self, host: &str) -> bool {
        let _ = host;
        false
    }
    /// The provider's background work, for the daemon to run as a named task until `stop`.
    fn background(self: Arc<Self>, stop: Stop) -> Option<Background> {
        let _ = stop;
        None
    }
}

/// The daemon's stop signal, as tasks receive it.
pub type Stop = tokio::sync::watch::Receiver<bool>;
/// A provider's background task.
pub type Background = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Hosts issued inline in one `sync` before the rest is left to the background workers: a few
/// tenants (a first run, a small reload) are served with certificates the moment `sync`
/// returns; a bulk add does not hold the reload for seconds.
const INLINE_ISSUE_LIMIT: usize = 256;

/// Removes resolver entries and statuses of hosts neither in `tenants` nor in `extra`; returns
/// the hosts that remain, so providers share one definition of "removed".
pub(super) fn drop_removed(
    resolver: &CertResolver,
    board: &CertBoard,
    tenants: &[Arc<Tenant>],
    extra: &[String],
) -> FastSet<String> {
    let wanted: FastSet<String> = tenants
        .iter()
        .map(|t| t.host.clone())
        .chain(extra.iter().cloned())
        .collect();
    for (host, _) in board.all() {
        if !wanted.contains(&host) {
            resolver.remove(&host);
            board.remove(&host);
        }
    }
    wanted
}

/// Issues from the internal CA: a leaf for every tenant that has none, queued and issued by
/// background workers on every core (a handshake for a host still queued issues it at once).
pub struct InternalProvider {
    ca: InternalCa,
    resolver: Arc<CertResolver>,
    board: Arc<CertBoard>,
    extra: RwLock<Vec<String>>,
    queue: IssueQueue,
}

impl InternalProvider {
    /// A provider around a loaded CA.
    pub fn new(ca: InternalCa, resolver: Arc<CertResolver>, board: Arc<CertBoard>) -> Self {
        InternalProvider {
            ca,
            resolver,
            board,
            extra: RwLock::new(Vec::new()),
            queue: IssueQueue::default(),
        }
    }

    /// Queues a leaf for `host` unless one is served; the host is `pending` until issued.
    fn ensure(&self, host: &str) {
        if self.resolver.contains(host) {
            return;
        }
        if self.board.get(host).is_none() {
            self.board
                .set(host, CertStatus::new(CertState::Pending, self.name()));
        }
        self.queue.push(host);
    }

    /// Issues what `ensure` queued: inline when that is little, else by the workers.
    fn kick(&self) {
        if self.queue.len() <= INLINE_ISSUE_LIMIT {
            while let Some(host) = self.queue.pop() {
                self.issue(&host);
            }
        } else {
            self.queue.wake.notify_one();
        }
    }

    /// Issues a leaf for `host` if it is still wanted (on the board) and has none.
    fn issue(&self, host: &str) {
        if self.resolver.contains(host) || self.board.get(host).is_none() {
            return;
        }
        match self.ca.issue(host) {
            Ok(entry) => {
                let mut status = CertStatus::new(CertState::Valid, self.name());
                status.cert = Some(entry.info.clone());
                self.resolver.publish(host, entry);
                self.board.set(host, status);
                // Removed while it was being issued: drop_removed saw no certificate.
                if self.board.get(host).is_none() {
                    self.resolver.remove(host);
                }
            }
            Err(err) => {
                tracing::error!(host, error = %err, "internal CA could not issue");
                let mut status = CertStatus::new(CertState::Error, self.name());
                status.last_error = Some(err.to_string());
                self.board.set(host, status);
            }
        }
    }

    /// One worker per core drains the queue whenever hosts arrive, until `stop`.
    async fn work(self: Arc<Self>, mut stop: Stop) {
        loop {
            // Stopping leaves hosts queued; looking at the queue first would spin on them.
            if *stop.borrow() {
                return;
            }
            let woken = self.queue.wake.notified();
            if !self.queue.is_empty() {
                let started = std::time::Instant::now();
                let issued = super::queue::drain_on_every_core(
                    &self,
                    |p| &p.queue,
                    |p, host| p.issue(host),
                    &stop,
                )
                .await;
                tracing::info!(
                    task = "internal-ca",
                    certificates = issued,
                    still_queued = self.queue.len(),
                    elapsed_ms = started.elapsed().as_millis(),
                    "issued queued certificates"
                );
                continue;
            }
            tokio::select! {
                () = woken => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// The extra hosts a provider keeps, readable even after a panic elsewhere.
fn read_extra(extra: &RwLock<Vec<String>>) -> Vec<String> {
    extra.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Every host a provider serves: the tenants' policy hosts, then the extra hosts.
fn wanted_hosts<'a>(
    tenants: &'a [Arc<Tenant>],
    extra: &'a [String],
) -> impl Iterator<Item = &'a str> {
    tenants
        .iter()
        .map(|t| t.host.as_str())
        .chain(extra.iter().map(String::as_str))
}

fn replace_extra(extra: &RwLock<Vec<String>>, hosts: &[String]) {
    *extra.write().unwrap_or_else(|e| e.into_inner()) =
        hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
}

impl CertProvider for InternalProvider {
    fn name(&self) -> &'static str {
        "internal"
    }

    fn sync(&self, tenants: &[Arc<Tenant>]) {
        let extra = read_extra(&self.extra);
        drop_removed(&self.resolver, &self.board, tenants, &extra);
        for host in wanted_hosts(tenants, &extra) {
            self.ensure(host);
        }
        self.kick();
    }

    fn sync_changes(&self, changes: &HostChanges, _all: &dyn Fn() -> Vec<Arc<Tenant>>) {
        drop_hosts(&self.resolver, &self.board, &changes.removed, &self.extra);
        for t in &changes.added {
            self.ensure(&t.host);
        }
        self.kick();
    }

    fn sync_extra(&self, hosts: &[String]) {
        let old = read_extra(&self.extra);
        replace_extra(&self.extra, hosts);
        for host in old.iter().filter(|h| !hosts.contains(h)) {
            self.resolver.remove(host);
            self.board.remove(host);
        }
        for host in read_extra(&self.extra) {
            self.ensure(&host);
        }
        self.kick();
    }

    fn issue_now(&self, host: &str) -> bool {
        if self.queue.take(host) {
            self.issue(host);
        }
        self.resolver.contains(host)
    }

    fn background(self: Arc<Self>, stop: Stop) -> Option<Background> {
        Some(Box::pin(self.work(stop)))
    }
}

/// Removes the resolver entries and statuses of `removed` hosts that are not extra hosts.
fn drop_hosts(
    resolver: &CertResolver,
    board: &CertBoard,
    removed: &[String],
    extra: &RwLock<Vec<String>>,
) {
    if removed.is_empty() {
        return;
    }
    let extra = read_extra(extra);
    for host in removed.iter().filter(|h| !extra.contains(h)) {
        resolver.remove(host);
        board.remove(host);
    }
}

/// Loads PEM files per host on every sync, so a renewed file (cert-manager) is picked up by
/// the next reload. A host whose files are missing or bad keeps its last good certificate.
pub struct FilesProvider {
    dir: PathBuf,
    cert_file: String,
    key_file: String,
    resolver: Arc<CertResolver>,
    board: Arc<CertBoard>,
    extra: RwLock<Vec<String>>,
}

impl FilesProvider {
    /// A provider reading `<dir>/<host>/<cert_file>` and `<key_file>`.
    pub fn new(
        dir: PathBuf,
        cert_file: String,
        key_file: String,
        resolver: Arc<CertResolver>,
        board: Arc<CertBoard>,
    ) -> Self {
        FilesProvider {
            dir,
            cert_file,
            key_file,
            resolver,
            board,
            extra: RwLock::new(Vec::new()),
        }
    }

    /// (Re)loads `<dir>/<host>/` and publishes it if it changed; keeps the last good
    /// certificate when the files are missing or bad.
    fn load(&self, host: &str, now: i64) {
        match super::files::load(&self.dir, host, &self.cert_file, &self.key_file, now) {
            Ok(entry) => {
                let unchanged = self
                    .resolver
                    .get(host)
                    .is_some_and(|old| old.info == entry.info);
                if unchanged {
                    return;
                }
                let mut status = CertStatus::new(CertState::Valid, self.name());
                status.cert = Some(entry.info.clone());
                self.resolver.publish(host, entry);
                self.board.set(host, status);
            }
            Err(err) => {
                let served = self.resolver.get(host);
                tracing::error!(host, error = %err, kept_previous = served.is_some(), "certificate files unusable");
                let mut status = match &served {
                    Some(old) if old.info.not_after > now => {
                        let mut s = CertStatus::new(CertState::Valid, self.name());
                        s.cert = Some(old.info.clone());
                        s
                    }
                    _ => CertStatus::new(CertState::Error, self.name()),
                };
                status.last_error = Some(err.to_string());
                self.board.set(host, status);
            }
        }
    }
}

impl CertProvider for FilesProvider {
    fn name(&self) -> &'static str {
        "files"
    }

    fn sync(&self, tenants: &[Arc<Tenant>]) {
        let extra = read_extra(&self.extra);
        drop_removed(&self.resolver, &self.board, tenants, &extra);
        let now = crate::util::unix_now();
        for host in wanted_hosts(tenants, &extra) {
            self.load(host, now);
        }
    }

    fn sync_changes(&self, changes: &HostChanges, _all: &dyn Fn() -> Vec<Arc<Tenant>>) {
        drop_hosts(&self.resolver, &self.board, &changes.removed, &self.extra);
        let now = crate::util::unix_now();
        for t in changes.added.iter().chain(&changes.changed) {
            self.load(&t.host, now);
        }
    }

    fn sync_extra(&self, hosts: &[String]) {
        let old = read_extra(&self.extra);
        replace_extra(&self.extra, hosts);
        for host in old.iter().filter(|h| !hosts.contains(h)) {
            self.resolver.remove(host);
            self.board.remove(host);
        }
        let now = crate::util::unix_now();
        for host in read_extra(&self.extra) {
            self.load(&host, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_tenants;

    fn tenants(domains: &[&str]) -> Vec<Arc<Tenant>> {
        domains
            .iter()
            .flat_map(|d| {
                parse_tenants(
                    std::path::Path::new("t.yaml"),
                    &format!("domain: {d}\nmode: testing\nmx: [mx.{d}]\nmax_age: 86400\n"),
                )
                .tenants
            })
            .map(Arc::new)
            .collect()
    }

    /// An internal-CA provider over a fresh CA in a temporary state directory (kept alive by
    /// the returned guard).
    fn internal_provider() -> (
        tempfile::TempDir,
        InternalProvider,
        Arc<CertResolver>,
        Arc<CertBoard>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let ca =
            InternalCa::load_or_create(dir.path(), std::time::Duration::from_secs(86_400)).unwrap();
        let resolver = Arc::new(CertResolver::new());
        let board = Arc::new(CertBoard::new());
        let provider = InternalProvider::new(ca, resolver.clone(), board.clone());
        (dir, provider, resolver, board)
    }

    #[test]
    fn extra_hosts_are_served_and_survive_tenant_syncs() {
        let (_dir, provider, resolver, board) = internal_provider();
        provider.sync(&tenants(&["a.example"]));
        provider.sync_extra(&["tlsrpt.operator.example".to_owned()]);
        assert!(resolver.can_serve("tlsrpt.operator.example", false));
        assert_eq!(
            board.get("tlsrpt.operator.example").unwrap().state,
            CertState::Valid
        );
        // A reload with another tenant list keeps the report host and drops the old tenant.
        provider.sync(&tenants(&["b.example"]));
        assert!(resolver.contains("tlsrpt.operator.example"));
        assert!(resolver.contains("mta-sts.b.example"));
        assert!(!resolver.contains("mta-sts.a.example"));
        // Replacing the extra list stops serving the old name.
        provider.sync_extra(&[]);
        assert!(!resolver.contains("tlsrpt.operator.example"));
        assert!(board.get("tlsrpt.operator.example").is_none());
    }

    #[tokio::test]
    async fn a_bulk_sync_is_queued_and_removed_hosts_are_never_issued() {
        let (_dir, provider, resolver, board) = internal_provider();
        let provider = Arc::new(provider);
        let names: Vec<String> = (0..300).map(|i| format!("t{i}.example")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        provider.sync(&tenants(&names));
        assert_eq!(
            resolver.len(),
            0,
            "over the inline limit: nothing issued in sync"
        );
        assert!(
            board
                .all()
                .iter()
                .all(|(_, s)| s.state == CertState::Pending)
        );
        assert!(provider.issue_now("mta-sts.t299.example"));
        assert!(!provider.issue_now("mta-sts.unknown.example"));
        // t100..t299 leave while queued (t299 already issued): none of them is served later.
        provider.sync(&tenants(&names[..100]));
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let work = tokio::spawn(provider.clone().background(stop).unwrap());
        for _ in 0..600 {
            if resolver.len() == 100 && board.all().iter().all(|(_, s)| s.state == CertState::Valid)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(resolver.len(), 100);
        assert_eq!(board.all().len(), 100);
        assert!(board.all().iter().all(|(_, s)| s.state == CertState::Valid));
        assert!(!resolver.contains("mta-sts.t299.example"));
        stop_tx.send(true).unwrap();
        work.await.unwrap();
    }

    #[tokio::test]
    async fn stopping_with_hosts_still_queued_ends_the_workers() {
        let (_dir, provider, resolver, _board) = internal_provider();
        let provider = Arc::new(provider);
        let names: Vec<String> = (0..5000).map(|i| format!("t{i}.example")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        provider.sync(&tenants(&names));
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        stop_tx.send(true).unwrap();
        // A worker that looked at the queue before the stop flag spun here for ever.
        let work = tokio::spawn(provider.clone().background(stop).unwrap());
        tokio::time::timeout(std::time::Duration::from_secs(30), work)
            .await
            .expect("the workers end once stopped")
            .unwrap();
        assert!(
            resolver.len() < names.len(),
            "stopped before the queue ran dry"
        );
        assert!(!provider.queue.is_empty());
    }

    #[test]
    fn a_tenant_added_by_a_swap_is_issued_without_waiting_for_a_handshake() {
        let (_dir, provider, resolver, board) = internal_provider();
        provider.sync(&tenants(&["a.example"]));
        let changes = HostChanges {
            added: tenants(&["b.example"]),
            changed: Vec::new(),
            removed: vec!["mta-sts.a.example".to_owned()],
        };
        provider.sync_changes(&changes, &|| tenants(&["b.example"]));
        assert!(resolver.contains("mta-sts.b.example"));
        assert_eq!(
            board.get("mta-sts.b.example").unwrap().state,
            CertState::Valid
        );
        assert!(!resolver.contains("mta-sts.a.example"));
    }
}
