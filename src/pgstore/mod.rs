//! Cluster mode's store on PostgreSQL: the connection pool, the schema migrations and the
//! bridge from the stores' synchronous traits to the asynchronous client.
//!
//! The traits (`ReportStore`, `CertStore`) are synchronous: SQLite and the file store block
//! the calling thread for a moment, and callers already run them off the request path. The
//! PostgreSQL client is asynchronous, so [`Db`] owns a small runtime of its own and each call
//! is a task there whose result the caller waits for on a channel: no caller needs to know
//! which runtime (if any) it is on, and a database that stops answering costs the caller at
//! most [`QUERY_TIMEOUT`], never a stuck thread.
//!
//! Schema: numbered migrations in `mta_stsd_schema`, applied in one transaction under an
//! advisory lock, so replicas starting together migrate once; a replica refuses a schema
//! newer than it knows.

pub mod certs;
pub mod challenges;
pub mod cluster;
pub mod reports;
pub mod session;
pub mod tls;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;

/// Longest wait for one store call (connection included); past it the store is unavailable.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per replica: intake, API readers and the issuer share them.
const POOL_SIZE: usize = 8;
/// The advisory-lock key of schema migrations ("mta-stsd" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d74_612d_7374_7364;

/// Schema migrations, in order; `mta_stsd_schema.version` counts how many have run. Never
/// edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: TLS-RPT reports, as in the SQLite store: times are Unix seconds (UTC), one row per
    // report and tenant, one per policy concerning it, one per failure detail. The unique key
    // decides duplicates across replicas.
    "CREATE TABLE tlsrpt_reports (
        id BIGSERIAL PRIMARY KEY,
        organization TEXT NOT NULL,
        report_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        contact_info TEXT,
        start_time BIGINT NOT NULL,
        end_time BIGINT NOT NULL,
        received_time BIGINT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('https', 'mail')),
        raw_gzip BYTEA NOT NULL,
        digest TEXT NOT NULL,
        conflict BOOLEAN NOT NULL DEFAULT false,
        signing_domain TEXT,
        submitter_mismatch BOOLEAN NOT NULL DEFAULT false,
        UNIQUE (organization, report_id, tenant, digest)
    );
    CREATE INDEX tlsrpt_reports_tenant_end ON tlsrpt_reports (tenant, end_time);
    CREATE INDEX tlsrpt_reports_received ON tlsrpt_reports (received_time);
    CREATE INDEX tlsrpt_reports_report_id ON tlsrpt_reports (report_id);
    CREATE INDEX tlsrpt_reports_end ON tlsrpt_reports (end_time);
    CREATE TABLE tlsrpt_policies (
        id BIGSERIAL PRIMARY KEY,
        report BIGINT NOT NULL REFERENCES tlsrpt_reports (id) ON DELETE CASCADE,
        policy_domain TEXT NOT NULL,
        policy_type TEXT NOT NULL,
        successful BIGINT NOT NULL CHECK (successful >= 0),
        failed BIGINT NOT NULL CHECK (failed >= 0)
    );
    CREATE INDEX tlsrpt_policies_report ON tlsrpt_policies (report);
    CREATE TABLE tlsrpt_failures (
        id BIGSERIAL PRIMARY KEY,
        policy BIGINT NOT NULL REFERENCES tlsrpt_policies (id) ON DELETE CASCADE,
        result_type TEXT NOT NULL,
        receiving_mx_hostname TEXT,
        receiving_ip TEXT,
        sending_mta_ip TEXT,
        failed_sessions BIGINT NOT NULL CHECK (failed_sessions >= 0),
        failure_reason_code TEXT
    );
    CREATE INDEX tlsrpt_failures_policy ON tlsrpt_failures (policy);",
    // 2: the ACME account, certificates with their keys and issuance facts, per-host status
    // (as the file store keeps them). One row per host in each; keys are readable by the
    // database role alone, as the file store's are by the service user.
    "CREATE TABLE acme_account (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        document BYTEA NOT NULL,
        updated BIGINT NOT NULL
    );
    CREATE TABLE certificates (
        host TEXT PRIMARY KEY,
        chain_pem TEXT NOT NULL,
        key_pem TEXT NOT NULL,
        directory TEXT NOT NULL,
        order_url TEXT,
        issued_at BIGINT NOT NULL,
        updated BIGINT NOT NULL
    );
    CREATE TABLE cert_status (
        host TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        updated BIGINT NOT NULL
    );",
    // 3: the ACME challenges in flight: the CA may validate against any replica, so each one
    // answers every pending challenge from these rows (the answer is derived from the key
    // authorization; nothing secret is stored). Rows expire so a leader that died mid-order
    // leaves nothing behind for long.
    "CREATE TABLE acme_challenges (
        host TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('tls-alpn-01', 'http-01', 'dns-01')),
        token TEXT NOT NULL,
        key_authorization TEXT NOT NULL,
        expires BIGINT NOT NULL,
        PRIMARY KEY (host, kind, token)
    );",
    // 4: the cluster-wide ready gate: the replicas alive (heartbeat in database time, so
    // replicas' clocks do not matter) and which policy id each serves per host.
    "CREATE TABLE cluster_replicas (
        name TEXT PRIMARY KEY,
        last_seen TIMESTAMPTZ NOT NULL,
        started TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE cluster_served (
        replica TEXT NOT NULL,
        host TEXT NOT NULL,
        policy_id TEXT NOT NULL,
        cert_ok BOOLEAN NOT NULL,
        PRIMARY KEY (host, replica)
    );
    CREATE INDEX cluster_served_replica ON cluster_served (replica);",
    // 5: which replicas answer each shared challenge, so the leader asks the CA to validate
    // only once every live replica can answer it.
    "CREATE TABLE acme_challenge_acks (
        host TEXT NOT NULL,
        kind TEXT NOT NULL,
        token TEXT NOT NULL,
        replica TEXT NOT NULL,
        PRIMARY KEY (host, kind, token, replica),
        FOREIGN KEY (host, kind, token) REFERENCES acme_challenges ON DELETE CASCADE
    );",
];

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The server cannot be reached, is shutting down, or did not answer in time: retry later.
    #[error("PostgreSQL unavailable: {0}")]
    Unavailable(String),
    /// The schema is newer than this binary, or a row breaks an invariant.
    #[error("PostgreSQL schema: {0}")]
    Schema(String),
    /// Any other error the server reported.
    #[error("PostgreSQL: {0}")]
    Query(String),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        let text = describe(&e);
        match e.code() {
            // No SQLSTATE: the connection failed or closed; these states are the server
            // refusing for now (starting up, shutting down, out of connections).
            None => DbError::Unavailable(text),
            Some(code) if is_temporary(code) => DbError::Unavailable(text),
            Some(_) => DbError::Query(text),
        }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => DbError::from(e),
            other => DbError::Unavailable(other.to_string()),
        }
    }
}

fn is_temporary(code: &SqlState) -> bool {
    [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::CONNECTION_EXCEPTION,
        SqlState::CONNECTION_FAILURE,
        SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::QUERY_CANCELED,
    ]
    .contains(code)
}

/// The server's message with its detail, or the client's error and its cause.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        },
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// A pool of connections to one database and the runtime that drives them.
pub struct Db {
    pool: Pool,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics on an async thread; its tasks are ours.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Db {
    /// The pool and its runtime; nothing is asked of the server yet.
    fn pool(endpoint: tls::Endpoint) -> Result<Db, DbError> {
        // The parser's message never repeats the URL, so a password cannot reach the log.
        let config = tokio_postgres::Config::from_str(&endpoint.url)
            .map_err(|e| DbError::Query(format!("the PostgreSQL URL is not valid: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("postgres")
            .enable_all()
            .build()
            .map_err(|e| DbError::Unavailable(format!("starting the PostgreSQL runtime: {e}")))?;
        let manager = Manager::from_config(
            config,
            endpoint.tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            // The pool's timeouts need a runtime; building it inside ours gives it one.
            let _guard = runtime.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(QUERY_TIMEOUT))
                .create_timeout(Some(QUERY_TIMEOUT))
                .recycle_timeout(Some(QUERY_TIMEOUT))
                .build()
                .map_err(|e| DbError::Query(format!("building the connection pool: {e}")))?
        };
        Ok(Db {
            pool,
            runtime: Some(runtime),
        })
    }

    /// Connects to `endpoint` (a URL `postgresql://…` or `host=… user=…`, and its TLS roots)
    /// and brings the schema up to date. Fails when the server cannot be reached within [`QUERY_TIMEOUT`].
    pub fn connect(endpoint: impl Into<tls::Endpoint>) -> Result<Db, DbError> {
        let db = Db::pool(endpoint.into())?;
        db.run(migrate)?;
        Ok(db)
    }

    /// Connects for a command run by hand: it never migrates, since a newer `mta-stsd` must
    /// not move the schema ahead of the running replicas; it fails unless the schema is the
    /// one this release knows.
    pub fn connect_existing(endpoint: impl Into<tls::Endpoint>) -> Result<Db, DbError> {
        let db = Db::pool(endpoint.into())?;
        let version = db.run(|pool| async move {
            let client = pool.get().await?;
            let exists: bool = client
                .query_one("SELECT to_regclass('mta_stsd_schema') IS NOT NULL", &[])
                .await?
                .get(0);
            if exists {
                current_version(&client).await
            } else {
                Ok(0)
            }
        })?;
        match version {
            0 => Err(DbError::Schema(
                "the database holds no mta-stsd schema yet: no replica has started on it".into(),
            )),
            v if v == known_version() => Ok(db),
            v => Err(DbError::Schema(format!(
                "the database has schema version {v}, this mta-stsd knows {}: run the release \
                 the replicas run",
                known_version()
            ))),
        }
    }

    /// Runs `call` with the pool on the store's runtime and waits for its result, at most
    /// [`QUERY_TIMEOUT`].
    pub fn run<T, F, Fut>(&self, call: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T, DbError>> + Send + 'static,
    {
        let runtime = self.runtime.as_ref().expect("present until drop");
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let work = call(self.pool.clone());
        runtime.spawn(async move {
            let result = tokio::time::timeout(QUERY_TIMEOUT, work)
                .await
                .unwrap_or_else(|_| {
                    Err(DbError::Unavailable(format!(
                        "no answer within {} s",
                        QUERY_TIMEOUT.as_secs()
                    )))
                });
            let _ = tx.send(result);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(DbError::Unavailable("the store is shutting down".into())))
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<usize, DbError> {
        self.run(|pool| async move {
            let client = pool.get().await?;
            current_version(&client).await
        })
    }
}

async fn current_version(client: &impl GenericClient) -> Result<usize, DbError> {
    let row = client
        .query_opt("SELECT version FROM mta_stsd_schema", &[])
        .await?;
    let version: i32 = row.map_or(0, |r| r.get(0));
    usize::try_from(version).map_err(|_| DbError::Schema(format!("negative version {version}")))
}

/// Applies the pending migrations in one transaction, holding the migration lock so two
/// replicas starting at once do not both run them (the second waits, then finds none).
async fn migrate(pool: Pool) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS mta_stsd_schema (version INTEGER NOT NULL)")
        .await?;
    let current = current_version(&tx).await?;
    if current > MIGRATIONS.len() {
        return Err(DbError::Schema(format!(
            "the database has schema version {current}, newer than this mta-stsd knows ({}): \
             run the newer release, or restore a backup",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.batch_execute(sql).await?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute("DELETE FROM mta_stsd_schema", &[]).await?;
        tx.execute(
            "INSERT INTO mta_stsd_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(version, "PostgreSQL schema migrated");
    }
    tx.commit().await?;
    Ok(())
}

/// Parameters of one statement, owned so the call can move to the store's runtime.
pub(crate) type Params = Vec<Box<dyn tokio_postgres::types::ToSql + Send + Sync>>;

/// `params` as the client takes them.
pub(crate) fn param_refs(params: &Params) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// One query's rows, on a pooled connection.
pub(crate) async fn query(
    pool: Pool,
    sql: &'static str,
    params: Params,
) -> Result<Vec<tokio_postgres::Row>, DbError> {
    let client = pool.get().await?;
    Ok(client.query(sql, &param_refs(&params)).await?)
}

/// How many migrations this binary knows: the schema version it brings a database to.
pub fn known_version() -> usize {
    MIGRATIONS.len()
}

/// Opens `store.postgres` for a replica: connects and migrates. Also gives the endpoint, for
/// the replica's session. The error names the setting, never the URL.
pub fn open(config: &crate::config::PostgresConfig) -> anyhow::Result<(Db, tls::Endpoint)> {
    let endpoint = tls::Endpoint::new(&config.url.0, config.ca_file.as_deref())?;
    let db = Db::connect(endpoint.clone()).map_err(|e| match e {
        DbError::Schema(why) => anyhow::anyhow!("store.postgres: {why}"),
        other => anyhow::anyhow!("store.postgres: cannot start without the database: {other}"),
    })?;
    Ok((db, endpoint))
}

/// Opens `store.postgres` for a command (`mta-stsd reports`, `certs`, `ingest-mail`): the
/// replicas own the schema, so it is used as it is.
pub fn open_existing(config: &crate::config::PostgresConfig) -> anyhow::Result<Db> {
    let endpoint = tls::Endpoint::new(&config.url.0, config.ca_file.as_deref())?;
    Db::connect_existing(endpoint).map_err(|e| anyhow::anyhow!("store.postgres: {e}"))
}
