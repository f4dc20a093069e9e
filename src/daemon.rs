//! Wires the parts together: configuration → snapshot → certificates → report store →
//! listener; starts the background tasks (TLS-RPT retention) next to the listener.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::certs::internal::InternalCa;
use crate::certs::provider::{FilesProvider, InternalProvider};
use crate::certs::{CertBoard, CertProvider, CertResolver};
use crate::config::{self, IssuerConfig, ServerConfig, TenantSet};
use crate::registry::{Registry, Snapshot};
use crate::server::{self, Server};
use crate::tlsrpt::{HttpsIntake, TlsRpt};

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
    /// TLS-RPT: report store, intake counters, summaries for the admin API and metrics.
    pub tlsrpt: Arc<TlsRpt>,
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
        let (config, tenants) = load(dir)?;
        for diag in &tenants.diagnostics {
            if diag.is_error() {
                tracing::error!(file = %diag.file.display(), line = diag.line, field = %diag.field, "{diag}");
            } else {
                tracing::warn!(file = %diag.file.display(), line = diag.line, field = %diag.field, "{diag}");
            }
        }
        crate::fsutil::create_private_dir(&config.state_dir)
            .with_context(|| format!("creating state directory {}", config.state_dir.display()))?;

        let resolver = Arc::new(CertResolver::new());
        let board = Arc::new(CertBoard::new());
        let provider = make_provider(&config, resolver.clone(), board.clone())?;
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
            Server::new(resolver.clone(), registry.clone(), config.limits.clone())?
                .with_report_intake(intake),
        );
        Ok(Daemon {
            config,
            registry,
            resolver,
            board,
            provider,
            server,
            tlsrpt,
        })
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> anyhow::Result<TcpListener> {
        TcpListener::bind(self.config.listen)
            .await
            .with_context(|| format!("binding {}", self.config.listen))
    }

    /// Serves `listener` until `shutdown` completes. Background tasks start here and stop
    /// with the listener.
    pub async fn run(self, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
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
        server::run(listener, self.server.clone(), shutdown).await;
        retention.abort();
        tracing::info!("mta-stsd stopped");
    }
}

/// The certificate provider the server file asks for.
fn make_provider(
    config: &ServerConfig,
    resolver: Arc<CertResolver>,
    board: Arc<CertBoard>,
) -> anyhow::Result<Arc<dyn CertProvider>> {
    Ok(match &config.issuer {
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
    })
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
