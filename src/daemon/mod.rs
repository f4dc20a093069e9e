//! Wires the parts together: configuration → snapshot → certificates → report store →
//! listeners; starts every background task in one place (`tasks::Supervisor`) and stops
//! them with one signal after the HTTPS listener has drained.

mod cluster;
mod tasks;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::admin::{self, AdminState};
use crate::certs::acme::AcmeProvider;
use crate::certs::internal::InternalCa;
use crate::certs::provider::{FilesProvider, InternalProvider};
use crate::certs::{CertBoard, CertProvider, CertResolver};
use crate::config::{IssuerConfig, ServerConfig, TenantSet};
use crate::metrics::{self, Exporter};
use crate::registry::{Registry, Snapshot};
use crate::reload::{self, Reloader, TenantCache};
use crate::server::{self, Server};
use crate::stats::Metrics;
use crate::tlsrpt::{HttpsIntake, TlsRpt};
use tasks::Supervisor;

/// Time the background tasks get, in all, to finish after the listener stopped.
const TASK_STOP_GRACE: Duration = Duration::from_secs(10);

/// A configured daemon, ready to serve.
pub struct Daemon {
    config: ServerConfig,
    registry: Arc<Registry>,
    resolver: Arc<CertResolver>,
    board: Arc<CertBoard>,
    server: Arc<Server>,
    reloader: Arc<Reloader>,
    admin: Arc<AdminState>,
    tlsrpt: Arc<TlsRpt>,
    acme: Option<AcmeTasks>,
    /// The tenants' certificate issuer, whose background work (if any) runs as a task.
    provider: Arc<dyn CertProvider>,
    /// The SIGHUP stream, installed by [`Daemon::build`]; taken by the `sighup` task.
    hup: Option<tokio::signal::unix::Signal>,
    /// The delegated zone (`dns:`), shared by the DNS task and the admin API.
    dns: Option<Arc<crate::dns::DnsZone>>,
    /// Event counters (the RFC 2136 publisher counts its updates here).
    metrics: Arc<Metrics>,
    /// The watchdog's latest validation per tenant, read by the admin API and `/metrics`.
    validation: Arc<crate::validate::Board>,
    /// Cluster mode (`store: postgres:`): the shared database, the role, the ready gate.
    cluster: Option<cluster::Cluster>,
}

/// The ACME scheduler and its optional HTTP-01 listener, started by [`Daemon::run`].
struct AcmeTasks {
    provider: Arc<AcmeProvider>,
    /// Bound at build time so a busy port fails startup.
    http_listener: Option<std::net::TcpListener>,
}

/// The sockets a daemon serves: bound by [`Daemon::bind`], or pre-bound (tests pass
/// 127.0.0.1:0).
pub struct Listeners {
    /// The HTTPS listener for policies (and the report host).
    pub https: TcpListener,
    /// The admin listener, if any.
    pub admin: Option<TcpListener>,
    /// The DNS server's UDP and TCP sockets, when the server file has a `dns:` section
    /// ([`Daemon::bind_dns`]).
    pub dns: Option<crate::dns::Sockets>,
}

/// What the first load produced.
struct Loaded {
    config: ServerConfig,
    cache: TenantCache,
    tenants: TenantSet,
}

/// Loads the server file (errors stop the start) and every tenant file (errors are logged and
/// the file skipped: one customer's bad file must not take the others down).
fn load(dir: &Path) -> anyhow::Result<Loaded> {
    // Absolute once, here: every path derived from it (tenants directory, cache keys) then
    // compares equal to what the watcher reports, which is absolute, and a relative `--config`
    // keeps meaning the directory it meant at start.
    let dir = std::path::absolute(dir)
        .with_context(|| format!("resolving configuration directory {}", dir.display()))?;
    let config = reload::load_server(&dir)?;
    // The reloader's per-file cache is filled by the first load, so the first change only
    // re-reads the file that changed.
    crate::fsutil::create_private_dir(&config.state_dir)
        .with_context(|| format!("creating state directory {}", config.state_dir.display()))?;
    tighten_state_dir(&config.state_dir)?;
    let (retirements, _) = reload::Retirements::open(&config, true);
    let (cache, tenants) = reload::initial_load_with(&config, Arc::new(retirements))
        .map_err(|d| anyhow::anyhow!("{d}"))?;
    reload::log_diagnostics(&tenants.diagnostics);
    let retiring = tenants.tenants.iter().filter(|t| t.retiring.is_some());
    reload::retire::log_retiring(&retiring.cloned().collect::<Vec<_>>());
    Ok(Loaded {
        config,
        cache,
        tenants,
    })
}

/// The first snapshot, built while the provider takes in the same tenants: with a million
/// tenants each is a second or more on its own, and they share nothing.
fn index_and_sync(tenants: &TenantSet, provider: &dyn CertProvider) -> Snapshot {
    std::thread::scope(|scope| {
        let index =
            scope.spawn(|| Snapshot::new(tenants.tenants.clone(), tenants.diagnostics.clone()));
        provider.sync(&tenants.tenants);
        index
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Makes an existing state directory owner-only: it holds private keys and the report
/// database, and `create_private_dir` leaves the mode of a directory that already exists.
fn tighten_state_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("reading state directory {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(
            || {
                format!(
                    "state directory {} is accessible to others ({:o}) and cannot be made 0700",
                    dir.display(),
                    mode & 0o777
                )
            },
        )?;
        tracing::warn!(state_dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "state directory was accessible to others; now 0700");
    }
    Ok(())
}

impl Daemon {
    /// Builds the daemon from a configuration directory, obtaining a certificate for every
    /// tenant the issuer can serve now. Must run inside the Tokio runtime: the SIGHUP handler
    /// is installed first, before the (possibly long) first load, so a SIGHUP meanwhile is
    /// held and applied as one reload once the daemon runs instead of killing it.
    pub fn build(dir: &Path) -> anyhow::Result<Daemon> {
        let hup = install_sighup()?;
        tracing::info!(config = %dir.display(), "loading configuration");
        let Loaded {
            config,
            cache,
            tenants,
        } = load(dir)?;
        // Created first so every part (e.g. an ACME provider counting orders) can hold it.
        let metrics = Arc::new(Metrics::new());
        let resolver = Arc::new(CertResolver::new());
        let board = Arc::new(CertBoard::new());
        let cluster = config.postgres.as_ref().map(cluster::open).transpose()?;
        let (provider, acme) = make_provider(
            &config,
            (resolver.clone(), board.clone(), metrics.clone()),
            cluster.as_ref(),
        )?;
        let mut first = index_and_sync(&tenants, provider.as_ref());
        first.cluster = cluster.as_ref().map(|c| c.gate.clone());
        let registry = Arc::new(Registry::new(first));
        let tlsrpt = open_tlsrpt(&config, &registry, cluster.as_ref());
        // The report host is served with a certificate from the tenants' issuer.
        let extra: Vec<String> = config.tlsrpt.report_host.iter().cloned().collect();
        provider.sync_extra(&extra);
        let server = make_server(&config, &resolver, &registry, &tlsrpt, &provider)?;
        let reloader = Arc::new(Reloader::new(
            reload::Parts {
                config: config.clone(),
                registry: registry.clone(),
                board: board.clone(),
                provider: provider.clone(),
                stats: server.stats.clone(),
                metrics: metrics.clone(),
            },
            cache,
        ));
        let dns = make_zone(&config, &metrics, acme.as_ref())?;
        let parts = (&metrics, &registry, &board, &server, &reloader, &tlsrpt);
        let mut admin = admin_state(&config, parts, cluster.as_ref().map(|c| &c.status))?;
        admin.dns = dns.clone();
        let (validation, admin) = (admin.validation.clone(), Arc::new(admin));
        Ok(Daemon {
            config,
            registry,
            resolver,
            board,
            server,
            reloader,
            admin,
            tlsrpt,
            acme,
            provider,
            hup: Some(hup),
            dns,
            metrics,
            validation,
            cluster,
        })
    }

    /// Binds `listen` and, when configured, `admin.listen`, so a busy port fails the start
    /// with an error instead of surfacing inside [`Daemon::run`].
    pub async fn bind(&self) -> anyhow::Result<Listeners> {
        let https = TcpListener::bind(self.config.listen)
            .await
            .with_context(|| format!("binding {}", self.config.listen))?;
        let admin = match &self.config.admin {
            Some(admin) => Some(
                TcpListener::bind(admin.listen)
                    .await
                    .with_context(|| format!("binding admin listener {}", admin.listen))?,
            ),
            None => None,
        };
        let dns = self.bind_dns()?;
        Ok(Listeners { https, admin, dns })
    }

    /// Binds `dns.listen` (UDP, then TCP on the same port) when the server file has a `dns:`
    /// section, so a busy port fails the start like the other listeners.
    pub fn bind_dns(&self) -> anyhow::Result<Option<crate::dns::Sockets>> {
        self.config
            .dns
            .as_ref()
            .map(|dns| crate::dns::Sockets::bind(dns.listen))
            .transpose()
    }

    /// Serves `listeners` until `shutdown` completes. Background tasks start here and stop
    /// with the listener.
    pub async fn run(
        mut self,
        listeners: Listeners,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut tasks = Supervisor::new();
        // Logged below, so a listener given port 0 (tests) says where it is.
        let dns_addr = listeners.dns.as_ref().and_then(|d| d.local_addr().ok());
        if let Err(err) = self
            .start_tasks(&mut tasks, listeners.admin)
            .and_then(|()| self.start_dns(&mut tasks, listeners.dns))
            .and_then(|()| self.start_dns_update(&mut tasks))
        {
            tracing::error!(error = %format!("{err:#}"), "cannot start; stopping");
            tasks.shutdown(TASK_STOP_GRACE).await;
            return;
        }
        let addr = listeners.https.local_addr().ok();
        let snapshot = self.registry.load();
        tracing::info!(
            tenants = snapshot.len(),
            retiring = snapshot.tenants().filter(|t| t.retiring.is_some()).count(),
            certificates = self.resolver.len(),
            https = %addr.map(|a| a.to_string()).unwrap_or_default(),
            issuer = self.config.issuer.name(),
            state_dir = %self.config.state_dir.display(),
            report_host = self.config.tlsrpt.report_host.as_deref().unwrap_or(""),
            dns = %dns_addr.map(|a| a.to_string()).unwrap_or_default(),
            "mta-stsd serving"
        );
        self.admin.listening.store(true, Ordering::Relaxed);
        server::run(listeners.https, self.server.clone(), shutdown).await;
        self.admin.listening.store(false, Ordering::Relaxed);
        tasks.shutdown(TASK_STOP_GRACE).await;
        tracing::info!("mta-stsd stopped");
    }

    /// Starts every background task: SIGHUP, the file watcher, the admin listener, TLS-RPT
    /// retention and the ACME tasks. A SIGHUP that arrived since [`Daemon::build`] is pending
    /// on the stream, so the `sighup` task reloads once for it.
    fn start_tasks(
        &mut self,
        tasks: &mut Supervisor,
        admin: Option<TcpListener>,
    ) -> anyhow::Result<()> {
        let hup = self
            .hup
            .take()
            .context("the SIGHUP stream was already taken")?;
        tasks.spawn(
            "sighup",
            reload::sighup_task(self.reloader.clone(), hup, tasks.stop_signal()),
        );
        if let Some(work) = self.provider.clone().background(tasks.stop_signal()) {
            tasks.spawn("certificate-issuer", work);
        }
        if self.config.reload.watch {
            match reload::DirWatch::new(&self.config) {
                Ok(dirs) => tasks.spawn(
                    "watcher",
                    reload::watch_task(self.reloader.clone(), dirs, tasks.stop_signal()),
                ),
                Err(err) => {
                    tracing::error!(error = %err, "cannot watch the configuration; reload with SIGHUP or POST /reload")
                }
            }
        }
        if let Some(listener) = admin {
            if let Ok(addr) = listener.local_addr() {
                admin::announce(addr, self.admin.token.is_some());
            }
            tasks.spawn(
                "admin",
                admin::serve(listener, self.admin.clone(), tasks.stop_signal()),
            );
        }
        if !self.tlsrpt.store_status().up {
            tasks.spawn(
                "tlsrpt-store-reopen",
                crate::tlsrpt::service::reopen_task(self.tlsrpt.clone(), tasks.stop_signal()),
            );
        }
        tasks.spawn(
            "retirements",
            reload::retire_task(self.reloader.clone(), tasks.stop_signal()),
        );
        self.start_shared(tasks);
        if let Some(acme) = self.acme.take() {
            start_acme(acme, tasks);
        }
        self.start_validation(tasks);
        Ok(())
    }

    /// Starts what works on the shared state: report retention and, in cluster mode, the
    /// session, the gate sync and the change feed.
    fn start_shared(&self, tasks: &mut Supervisor) {
        // In cluster mode only the leader prunes: one DELETE per round, not one per replica.
        let prunes = self.cluster.as_ref().map(cluster::Cluster::may_order);
        tasks.spawn_until_stopped(
            "tlsrpt-retention",
            crate::tlsrpt::service::retention_task(self.tlsrpt.clone(), prunes),
        );
        if let Some(cluster) = &self.cluster {
            cluster.start(tasks, &self.registry, &self.board, |event| {
                tracing::debug!(?event, "cluster change");
            });
        }
    }

    /// Starts the `validation` watchdog unless `validation.enabled` is false; a resolver that
    /// cannot be set up is logged and leaves the daemon serving without it.
    fn start_validation(&self, tasks: &mut Supervisor) {
        if !self.config.validation.enabled {
            return;
        }
        let settings = crate::validate::Settings::of(&self.config);
        match crate::validate::Validator::new(settings) {
            Ok(validator) => tasks.spawn(
                "validation",
                crate::validate::watchdog::run(
                    Arc::new(validator),
                    Arc::new(self.config.clone()),
                    self.registry.clone(),
                    self.validation.clone(),
                    tasks.stop_signal(),
                ),
            ),
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "validation: cannot start the watchdog")
            }
        }
    }

    /// Starts the DNS task when the server file has a `dns:` section (its sockets were bound
    /// by [`Daemon::bind_dns`]).
    fn start_dns(
        &self,
        tasks: &mut Supervisor,
        sockets: Option<crate::dns::Sockets>,
    ) -> anyhow::Result<()> {
        let Some(zone) = self.dns.clone() else {
            return Ok(());
        };
        let sockets = sockets.context("dns: is configured but its sockets were not bound")?;
        tasks.spawn(
            "dns",
            crate::dns::run(
                sockets,
                zone,
                self.registry.clone(),
                self.board.clone(),
                tasks.stop_signal(),
            ),
        );
        Ok(())
    }

    /// Starts the RFC 2136 publisher when the server file has a `dns_update:` section.
    fn start_dns_update(&self, tasks: &mut Supervisor) -> anyhow::Result<()> {
        let Some(publisher) = crate::dnsupdate::Publisher::new(&self.config, self.metrics.clone())
            .context("dns_update: building the publisher")?
        else {
            return Ok(());
        };
        let _ = self.admin.dns_update.set(publisher.clone());
        tasks.spawn(
            "dns_update",
            crate::dnsupdate::run(
                publisher,
                self.registry.clone(),
                self.board.clone(),
                tasks.stop_signal(),
            ),
        );
        Ok(())
    }

    /// The server configuration the daemon was built from.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The live tenant table.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The certificates served per host.
    pub fn resolver(&self) -> &Arc<CertResolver> {
        &self.resolver
    }

    /// Certificate status per host.
    pub fn board(&self) -> &Arc<CertBoard> {
        &self.board
    }

    /// The HTTPS listener state (its counters are in `server.stats`).
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// What applies configuration changes.
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// TLS-RPT: report store, intake counters, summaries.
    pub fn tlsrpt(&self) -> &Arc<TlsRpt> {
        &self.tlsrpt
    }

    /// The ACME provider, when the issuer is `acme`.
    pub fn acme_provider(&self) -> Option<&Arc<AcmeProvider>> {
        self.acme.as_ref().map(|a| &a.provider)
    }
}

/// The built-in zone (`dns:`), answering DNS-01 challenges when ACME uses them.
fn make_zone(
    config: &ServerConfig,
    metrics: &Arc<Metrics>,
    acme: Option<&AcmeTasks>,
) -> anyhow::Result<Option<Arc<crate::dns::DnsZone>>> {
    let uses_dns01 = matches!(&config.issuer, IssuerConfig::Acme(a) if a.dns01_zone.is_some());
    let dns01 = acme
        .filter(|_| uses_dns01)
        .map(|a| a.provider.dns01.clone());
    crate::dns::DnsZone::new(config, metrics.clone(), dns01)
}

/// Installs the SIGHUP handler: from here on a SIGHUP is held for the stream, not fatal.
fn install_sighup() -> anyhow::Result<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup()).context("installing the SIGHUP handler")
}

/// The HTTPS server: policies, the report host, and first handshakes that issue a queued
/// internal-CA certificate at once.
fn make_server(
    config: &ServerConfig,
    resolver: &Arc<CertResolver>,
    registry: &Arc<Registry>,
    tlsrpt: &Arc<TlsRpt>,
    provider: &Arc<dyn CertProvider>,
) -> anyhow::Result<Arc<Server>> {
    let intake = HttpsIntake::new(tlsrpt.clone()).map(Arc::new);
    let mut server = Server::new(
        resolver.clone(),
        registry.clone(),
        config.limits.clone(),
        &config.tls,
    )?
    .with_report_intake(intake);
    // A tenant without a certificate yet asks the provider at its handshake: the internal CA
    // issues a queued host at once, ACME reads a stored certificate not read yet.
    server = server.with_issuer(provider.clone());
    Ok(Arc::new(server))
}

/// The report store the server file names: PostgreSQL in cluster mode, else SQLite. Never
/// fails: policies are served whether or not the store opens (see
/// [`TlsRpt::open_or_unavailable`]); PostgreSQL's calls fail one by one while it is away.
fn open_tlsrpt(
    config: &ServerConfig,
    registry: &Arc<Registry>,
    cluster: Option<&cluster::Cluster>,
) -> Arc<TlsRpt> {
    if let Some(cluster) = cluster {
        let store = Arc::new(crate::pgstore::reports::PgReportStore::new(
            cluster.db.clone(),
        ));
        return Arc::new(TlsRpt::new(&config.tlsrpt, store, registry.clone()));
    }
    Arc::new(TlsRpt::open_or_unavailable(
        &config.tlsrpt,
        registry.clone(),
    ))
}

/// What the admin API reads, built before it.
type AdminParts<'a> = (
    &'a Arc<Metrics>,
    &'a Arc<Registry>,
    &'a Arc<CertBoard>,
    &'a Arc<Server>,
    &'a Arc<Reloader>,
    &'a Arc<TlsRpt>,
);

/// The admin API's state: what it reads, the exporter over the same parts, the token.
fn admin_state(
    config: &ServerConfig,
    (metrics, registry, board, server, reloader, tlsrpt): AdminParts<'_>,
    cluster: Option<&Arc<crate::pgstore::cluster::ClusterStatus>>,
) -> anyhow::Result<AdminState> {
    // Filled by the watchdog (`Daemon::start_validation`), read by the API and `/metrics`.
    let validation = Arc::new(crate::validate::Board::new());
    let token = match config.admin.as_ref().and_then(|a| a.token_file.as_deref()) {
        Some(path) => Some(admin::AdminToken::load(path, reloader)?),
        None => None,
    };
    Ok(AdminState {
        registry: registry.clone(),
        board: board.clone(),
        reloader: reloader.clone(),
        exporter: Exporter::new(metrics::Sources {
            metrics: metrics.clone(),
            registry: registry.clone(),
            board: board.clone(),
            stats: server.stats.clone(),
            reloader: reloader.clone(),
            tlsrpt: Some(tlsrpt.clone()),
            validation: Some(validation.clone()),
            cluster: cluster.cloned(),
        }),
        tlsrpt: tlsrpt.clone(),
        token,
        listening: AtomicBool::new(false),
        dns: None,
        dns_update: std::sync::OnceLock::new(),
        validation: validation.clone(),
        cluster: cluster.cloned(),
    })
}

/// Starts the named ACME tasks: `acme-scheduler` and, when configured, `acme-http01`.
fn start_acme(acme: AcmeTasks, tasks: &mut Supervisor) {
    if let Some(std_listener) = acme.http_listener {
        match TcpListener::from_std(std_listener) {
            Ok(listener) => {
                let addr = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                tracing::info!(task = "acme-http01", http = %addr, "HTTP-01 listener started");
                let tokens = acme.provider.tokens.clone();
                tasks.spawn(
                    "acme-http01",
                    crate::certs::acme::http01::run(listener, tokens, tasks.stop_signal()),
                );
            }
            Err(err) => tracing::error!(error = %err, "HTTP-01 listener unusable"),
        }
    }
    tracing::info!(task = "acme-scheduler", "ACME scheduler starting");
    let stop = tasks.stop_signal();
    tasks.spawn("acme-scheduler", acme.provider.clone().run(stop));
}

/// The certificate provider the server file asks for, and the ACME tasks if it is ACME.
fn make_provider(
    config: &ServerConfig,
    (resolver, board, metrics): (Arc<CertResolver>, Arc<CertBoard>, Arc<Metrics>),
    cluster: Option<&cluster::Cluster>,
) -> anyhow::Result<(Arc<dyn CertProvider>, Option<AcmeTasks>)> {
    if let IssuerConfig::Acme(acme) = &config.issuer {
        // In cluster mode the account, certificates and status are the cluster's.
        let store: Arc<dyn crate::certs::store::CertStore> = match cluster {
            Some(c) => Arc::new(crate::pgstore::certs::PgCertStore::new(c.db.clone())),
            None => Arc::new(crate::certs::store::FileStore::new(&config.state_dir)),
        };
        let provider = Arc::new(
            AcmeProvider::new((**acme).clone(), store, resolver, board, metrics)
                .context("setting up the ACME issuer")?,
        );
        let http_listener = match acme.http_listen {
            Some(addr) => {
                let listener = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("binding the HTTP-01 listener {addr}"))?;
                listener.set_nonblocking(true)?;
                Some(listener)
            }
            None => None,
        };
        let tasks = AcmeTasks {
            provider: provider.clone(),
            http_listener,
        };
        return Ok((provider, Some(tasks)));
    }
    let provider: Arc<dyn CertProvider> = match &config.issuer {
        IssuerConfig::Internal { leaf_validity } => {
            let ca = InternalCa::load_or_create(&config.state_dir, *leaf_validity)?;
            tracing::info!(ca = %ca.cert_path().display(), "internal CA: clients must trust this certificate");
            Arc::new(InternalProvider::new(ca, resolver, board))
        }
        IssuerConfig::Files {
            dir,
            cert_file,
            key_file,
        } => Arc::new(FilesProvider::new(
            dir.clone(),
            cert_file.clone(),
            key_file.clone(),
            resolver,
            board,
        )),
        IssuerConfig::Acme(_) => unreachable!("handled above"),
    };
    Ok((provider, None))
}

/// Resolves when the process receives SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}
