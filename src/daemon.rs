//! Wires the parts together: configuration → snapshot → certificates → report store →
//! listener; starts the background tasks (TLS-RPT retention) next to the listener.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::certs::acme::AcmeProvider;
use crate::certs::internal::InternalCa;
use crate::certs::provider::{FilesProvider, InternalProvider};
use crate::certs::{CertBoard, CertProvider, CertResolver};
use crate::config::{self, IssuerConfig, ServerConfig, TenantSet};
use crate::registry::{Registry, Snapshot};
use crate::server::{self, Server};
use crate::tlsrpt::{HttpsIntake, TlsRpt};
// live configuration, metrics, admin
use crate::admin::{self, AdminState};
use crate::metrics::{self, Exporter};
use crate::reload::{self, Reloader};
use crate::stats::Metrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Time the background tasks get to finish after the listener stopped.
const TASK_STOP_GRACE: Duration = Duration::from_secs(10);

/// A configured daemon, ready to serve.
pub struct Daemon {
    /// The server configuration it was built from.
    pub config: ServerConfig,
    /// Live tenant table.
    pub registry: Arc<Registry>,
    /// Certificates served per host.
    pub resolver: Arc<CertResolver>,
    /// Certificate status per host.
    pub board: Arc<CertBoard>,
    /// Keeps certificates in step with the tenant list.
    pub provider: Arc<dyn CertProvider>,
    /// The HTTPS listener state.
    pub server: Arc<Server>,
    // --- live configuration, metrics, admin (reload.rs, metrics.rs, admin.rs) ---
    /// Event counters (reloads, ACME orders).
    pub metrics: Arc<Metrics>,
    /// Applies configuration changes.
    pub reloader: Arc<Reloader>,
    /// Admin API state, when the server file has an `admin:` section or a listener is given.
    pub admin: Arc<AdminState>,
    /// The admin listener: pre-bound by tests, or bound by [`Daemon::bind_admin`].
    admin_listener: Option<TcpListener>,
    // --- end live ---
    /// TLS-RPT: report store, intake counters, summaries for the admin API and metrics.
    pub tlsrpt: Arc<TlsRpt>,
    /// ACME background work, when the issuer is `acme`.
    pub acme: Option<AcmeTasks>,
}

/// The ACME scheduler and its optional HTTP-01 listener, started by [`Daemon::run`].
pub struct AcmeTasks {
    /// The provider whose scheduler runs in the background.
    pub provider: Arc<AcmeProvider>,
    /// The plain-HTTP listener for HTTP-01, bound at build time so a busy port fails startup.
    pub http_listener: Option<std::net::TcpListener>,
}

/// Loads the server file and every tenant file of `dir`. Tenant errors do not stop the
/// daemon (one customer's bad file must not take the others down); server-file errors do.
pub fn load(dir: &Path) -> anyhow::Result<(ServerConfig, TenantSet)> {
    let server = config::load_server_config(dir).map_err(|diags| {
        let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid server configuration:\n{}", lines.join("\n"))
    })?;
    let files = config::load_tenant_dir(&server.tenants_dir).map_err(|d| anyhow::anyhow!("{d}"))?;
    Ok((server, config::assemble(files)))
}

impl Daemon {
    /// Builds the daemon from a configuration directory, obtaining a certificate for every
    /// tenant the issuer can serve now.
    pub fn build(dir: &Path) -> anyhow::Result<Daemon> {
        let config = config::load_server_config(dir).map_err(|diags| {
            let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("invalid server configuration:\n{}", lines.join("\n"))
        })?;
        // The reloader's per-file cache is filled by the first load, so the first change only
        // re-reads the file that changed.
        let (cache, tenants) = reload::initial_load(&config).map_err(|d| anyhow::anyhow!("{d}"))?;
        for diag in &tenants.diagnostics {
            if diag.is_error() {
                tracing::error!(file = %diag.file.display(), line = diag.line, field = %diag.field, "{diag}");
            } else {
                tracing::warn!(file = %diag.file.display(), line = diag.line, field = %diag.field, "{diag}");
            }
        }
        crate::fsutil::create_private_dir(&config.state_dir)
            .with_context(|| format!("creating state directory {}", config.state_dir.display()))?;

        // Created first so every part (e.g. an ACME provider counting orders) can hold it.
        let metrics = Arc::new(Metrics::new());
        let resolver = Arc::new(CertResolver::new());
        let board = Arc::new(CertBoard::new());
        let (provider, acme) =
            make_provider(&config, resolver.clone(), board.clone(), metrics.clone())?;
        provider.sync(&tenants.tenants);
        let registry = Arc::new(Registry::new(Snapshot::new(
            tenants.tenants.clone(),
            tenants.diagnostics.clone(),
        )));
        let tlsrpt = Arc::new(TlsRpt::open(&config.tlsrpt, registry.clone()).with_context(
            || {
                format!(
                    "opening the report database {}",
                    config.tlsrpt.database.display()
                )
            },
        )?);
        // The report host is served with a certificate from the tenants' issuer.
        let extra: Vec<String> = config.tlsrpt.report_host.iter().cloned().collect();
        provider.sync_extra(&extra);
        let intake = HttpsIntake::new(tlsrpt.clone()).map(Arc::new);
        let server = Arc::new(
            Server::new(
                resolver.clone(),
                registry.clone(),
                config.limits.clone(),
                &config.tls,
            )?
            .with_report_intake(intake),
        );
        // --- live configuration, metrics, admin ---
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
        let token = match config.admin.as_ref().and_then(|a| a.token_file.as_deref()) {
            Some(path) => Some(admin::read_token(path)?),
            None => None,
        };
        let admin = Arc::new(AdminState {
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
            }),
            tlsrpt: tlsrpt.clone(),
            token,
            listening: AtomicBool::new(false),
        });
        // --- end live ---
        Ok(Daemon {
            config,
            registry,
            resolver,
            board,
            provider,
            server,
            tlsrpt,
            acme,
            metrics,
            reloader,
            admin,
            admin_listener: None,
        })
    }

    /// Serves the admin API on `listener` instead of binding `admin.listen` (tests pass
    /// 127.0.0.1:0).
    pub fn set_admin_listener(&mut self, listener: TcpListener) {
        self.admin_listener = Some(listener);
    }

    /// Binds `admin.listen` (when configured and no listener was given), so a busy port fails
    /// the start with an error instead of surfacing inside `run`.
    pub async fn bind_admin(&mut self) -> anyhow::Result<()> {
        if self.admin_listener.is_none()
            && let Some(admin) = &self.config.admin
        {
            let listener = TcpListener::bind(admin.listen)
                .await
                .with_context(|| format!("binding admin listener {}", admin.listen))?;
            self.admin_listener = Some(listener);
        }
        Ok(())
    }

    /// Starts the live-configuration tasks: the file watcher, SIGHUP, the admin listener.
    /// Each is a named task stopped by `stop`. The SIGHUP handler is installed before this
    /// returns, so a SIGHUP after startup is never the default (fatal) one.
    async fn start_live_tasks(
        &mut self,
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<Vec<(&'static str, JoinHandle<()>)>> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut tasks = Vec::new();
        let hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        tasks.push((
            "sighup",
            tokio::spawn(reload::sighup_task(
                self.reloader.clone(),
                hup,
                stop.clone(),
            )),
        ));
        if self.config.reload.watch {
            match reload::DirWatch::new(&self.config) {
                Ok(dirs) => tasks.push((
                    "watcher",
                    tokio::spawn(reload::watch_task(
                        self.reloader.clone(),
                        dirs,
                        stop.clone(),
                    )),
                )),
                Err(err) => {
                    tracing::error!(error = %err, "cannot watch the configuration; reload with SIGHUP or POST /reload")
                }
            }
        }
        self.bind_admin().await?;
        if let Some(listener) = self.admin_listener.take() {
            if let Ok(addr) = listener.local_addr() {
                admin::announce(addr, self.admin.token.is_some());
            }
            tasks.push((
                "admin",
                tokio::spawn(admin::serve(listener, self.admin.clone(), stop.clone())),
            ));
        }
        Ok(tasks)
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> anyhow::Result<TcpListener> {
        TcpListener::bind(self.config.listen)
            .await
            .with_context(|| format!("binding {}", self.config.listen))
    }

    /// Serves `listener` until `shutdown` completes. Background tasks start here and stop
    /// with the listener.
    pub async fn run(
        mut self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        // Background tasks, stopped together after the listener drains.
        let (stop_tx, stop_rx) = watch::channel(false);
        // --- live: watcher, SIGHUP, admin ---
        let tasks = match self.start_live_tasks(&stop_rx).await {
            Ok(tasks) => tasks,
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "cannot start; stopping");
                return;
            }
        };
        // --- end live ---
        let addr = listener.local_addr().ok();
        let snapshot = self.registry.load();
        let retention = tokio::spawn(crate::tlsrpt::service::retention_task(self.tlsrpt.clone()));
        tracing::info!(
            tenants = snapshot.len(),
            certificates = self.resolver.len(),
            https = %addr.map(|a| a.to_string()).unwrap_or_default(),
            issuer = self.config.issuer.name(),
            state_dir = %self.config.state_dir.display(),
            report_host = self.config.tlsrpt.report_host.as_deref().unwrap_or(""),
            "mta-stsd serving"
        );
        let mut background = tokio::task::JoinSet::new();
        if let Some(acme) = self.acme.take() {
            start_acme(acme, &mut background, stop_rx.clone());
        }
        self.admin.listening.store(true, Ordering::Relaxed);
        server::run(listener, self.server.clone(), shutdown).await;
        self.admin.listening.store(false, Ordering::Relaxed);
        retention.abort();
        let _ = stop_tx.send(true);
        while background.join_next().await.is_some() {}
        // --- live: wait for the live tasks ---
        for (name, task) in tasks {
            if tokio::time::timeout(TASK_STOP_GRACE, task).await.is_err() {
                tracing::warn!(task = name, "background task did not stop in time");
            }
        }
        // --- end live ---
        tracing::info!("mta-stsd stopped");
    }
}

/// Starts the named ACME tasks: `acme-scheduler` and, when configured, `acme-http01`.
fn start_acme(
    acme: AcmeTasks,
    tasks: &mut tokio::task::JoinSet<()>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    if let Some(std_listener) = acme.http_listener {
        match TcpListener::from_std(std_listener) {
            Ok(listener) => {
                let addr = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                tracing::info!(task = "acme-http01", http = %addr, "HTTP-01 listener started");
                let tokens = acme.provider.tokens.clone();
                tasks.spawn(crate::certs::acme::http01::run(
                    listener,
                    tokens,
                    stop.clone(),
                ));
            }
            Err(err) => tracing::error!(error = %err, "HTTP-01 listener unusable"),
        }
    }
    tracing::info!(task = "acme-scheduler", "ACME scheduler starting");
    tasks.spawn(acme.provider.run(stop));
}

/// The certificate provider the server file asks for, and the ACME tasks if it is ACME.
fn make_provider(
    config: &ServerConfig,
    resolver: Arc<CertResolver>,
    board: Arc<CertBoard>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(Arc<dyn CertProvider>, Option<AcmeTasks>)> {
    if let IssuerConfig::Acme(acme) = &config.issuer {
        let store = Arc::new(crate::certs::store::FileStore::new(&config.state_dir));
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
