//! Durable report storage: the [`ReportStore`] trait and its SQLite implementation.
//!
//! One row per report and tenant, with the raw JSON kept gzip-compressed. A retry (senders
//! retry for up to 24 h, RFC 8460 §5.5) is the same organization, report-id and content
//! (SHA-256 of the canonical JSON) and stores nothing; a different report under a stored
//! organization and report-id is stored too, and every report under that key is flagged as
//! conflicting: both are sender-chosen, so the first one in must not silence the genuine one.
//! Each report row has plus one row per policy that
//! concerns the tenant and one per failure detail. An insert returns only after the
//! transaction is committed with `synchronous=FULL` in WAL mode, so an acknowledged report
//! survives `kill -9` and power loss.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use time::OffsetDateTime;

use super::report::{PolicyReport, PolicyType, Report, ResultType, normalize_domain};
use super::summary::{FailureGroup, PolicyTotals, ReportSpan, WindowData};
use crate::config::TlsRptConfig;

/// How long a writer waits for another writer's lock before giving up with [`StoreError::Busy`]:
/// long enough to ride out another process's insert, short enough for an MTA pipe to defer.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a report came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// POSTed to the HTTPS endpoint (RFC 8460 §5.4).
    Https,
    /// Delivered by mail (RFC 8460 §5.3).
    Mail,
}

impl Source {
    /// The spelling stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Https => "https",
            Source::Mail => "mail",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Source, StoreError> {
        match s {
            "https" => Ok(Source::Https),
            "mail" => Ok(Source::Mail),
            other => Err(StoreError::Corrupt(format!("unknown source {other:?}"))),
        }
    }
}

/// A report ready to store: the parsed report, its raw JSON and where and when it arrived.
#[derive(Debug, Clone)]
pub struct StoredReport {
    /// The tenant the report was routed to; only policies concerning it are counted.
    pub tenant: String,
    /// Intake path.
    pub source: Source,
    /// When mta-stsd accepted it.
    pub received: OffsetDateTime,
    /// The validated report.
    pub report: Report,
    /// The JSON to keep: as received (after gunzip), less any large unknown fields
    /// ([`super::intake::accept`] trims them).
    pub raw_json: Vec<u8>,
    /// The DKIM-verified signing domain of a mailed report (`None` over HTTPS, or when the
    /// DKIM policy is off).
    pub signing_domain: Option<String>,
    /// The `TLS-Report-Submitter` or `contact-info` domain is neither the signing domain nor
    /// below it: the signer may be vouching for someone else's name.
    pub submitter_mismatch: bool,
}

/// Outcome of a successful [`ReportStore::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored and committed.
    Inserted,
    /// The same report (organization, report-id, content) is stored; nothing was written.
    Duplicate,
    /// Stored, but another report with the same organization and report-id and different
    /// content is stored too: all of them are now flagged as conflicting.
    Conflicting,
}

/// A stored report as read back by [`ReportStore::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRecord {
    /// `organization-name`.
    pub organization: String,
    /// `report-id`.
    pub report_id: String,
    /// The tenant it was routed to.
    pub tenant: String,
    /// Intake path.
    pub source: Source,
    /// When it was accepted.
    pub received: OffsetDateTime,
    /// Start of the covered period.
    pub start: OffsetDateTime,
    /// End of the covered period.
    pub end: OffsetDateTime,
    /// The raw JSON, decompressed.
    pub raw_json: Vec<u8>,
    /// Hex SHA-256 of the canonical JSON (see [`canonical_digest`]).
    pub digest: String,
    /// Another report with the same organization and report-id has different content.
    pub conflict: bool,
    /// See [`StoredReport::signing_domain`].
    pub signing_domain: Option<String>,
    /// See [`StoredReport::submitter_mismatch`].
    pub submitter_mismatch: bool,
}

/// Hex SHA-256 of `raw_json` re-serialized with sorted object keys and no whitespace, so a
/// sender's retry with other formatting or key order is still the same report. serde_json's
/// map is ordered by key (its `preserve_order` feature is off).
pub fn canonical_digest(raw_json: &[u8]) -> Result<String, StoreError> {
    let value: serde_json::Value = serde_json::from_slice(raw_json)
        .map_err(|e| StoreError::Rejected(format!("report is not JSON: {e}")))?;
    let canonical = serde_json::to_vec(&value)
        .map_err(|e| StoreError::Db(format!("serializing report: {e}")))?;
    Ok(crate::policy::sha256_hex(&canonical))
}

/// Storage failures, split by what the caller should do about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer holds the lock: retry later (HTTP 503, sysexits 75).
    #[error("report database is busy: {0}")]
    Busy(String),
    /// The report cannot be stored as given (e.g. no policy concerns the tenant).
    #[error("report not storable: {0}")]
    Rejected(String),
    /// The store cannot be used right now: not open yet (unopenable, corrupt, locked), disk
    /// full, or an I/O error. Senders retry (HTTP 503 + `Retry-After`, sysexits 75).
    #[error("report store unavailable: {0}")]
    Unavailable(String),
    /// Storing the report would pass a quota on stored bytes per day: retry later (HTTP 429 +
    /// `Retry-After`, sysexits 75). The text names the quota, for the sender.
    #[error("{0}")]
    OverQuota(String),
    /// Stored data is not what this version expects.
    #[error("report database is corrupt or from another version: {0}")]
    Corrupt(String),
    /// Any other SQLite or I/O failure.
    #[error("report database error: {0}")]
    Db(String),
}

impl StoreError {
    /// Whether retrying later may succeed (everything but a rejected report).
    pub fn is_temporary(&self) -> bool {
        !matches!(self, StoreError::Rejected(_))
    }

    /// The HTTP status the HTTPS intake answers with: 400 for a rejected report, 503 when busy
    /// or unavailable (the sender retries), 500 otherwise. Never 2xx: nothing was stored.
    pub fn http_status(&self) -> u16 {
        match self {
            StoreError::Rejected(_) => 400,
            StoreError::Busy(_) | StoreError::Unavailable(_) => 503,
            StoreError::OverQuota(_) => 429,
            StoreError::Corrupt(_) | StoreError::Db(_) => 500,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StoreError::Busy(e.to_string())
            }
            // Conditions of the disk or the file, not of the report: they may clear (space
            // freed, file repaired), so the sender should retry rather than give up.
            Some(
                ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
                | ErrorCode::NotADatabase
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::PermissionDenied,
            ) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Db(e.to_string()),
        }
    }
}

/// Report storage, so the intake paths and the summary do not depend on SQLite.
pub trait ReportStore: Send + Sync {
    /// Store a report durably; a repeat of (organization, report-id, content) for the same
    /// tenant stores nothing, other content under a stored key is stored and flagged.
    fn insert(&self, report: &StoredReport) -> Result<InsertOutcome, StoreError>;
    /// Everything about `tenant` in reports whose period ends after `since`, grouped.
    fn summary(&self, tenant: &str, since: OffsetDateTime) -> Result<WindowData, StoreError>;
    /// All stored reports with this report-id (ids are unique only per organization).
    fn get(&self, report_id: &str) -> Result<Vec<ReportRecord>, StoreError>;
    /// Delete reports received before `older_than`; returns how many were deleted.
    fn prune(&self, older_than: OffsetDateTime) -> Result<usize, StoreError>;
    /// Session and failure totals of every tenant over reports whose period ends after `since`.
    fn window_totals(&self, since: OffsetDateTime) -> Result<Vec<TenantTotals>, StoreError>;
    /// Bytes stored (compressed raw JSON) for reports received at or after `since`: for all
    /// tenants, and for `tenant`.
    fn stored_bytes(&self, since: OffsetDateTime, tenant: &str) -> Result<StoredBytes, StoreError>;
    /// How many stored reports were received at or after `since`, by source (every source,
    /// zeros included). Counts the other processes' intake too (`ingest-mail`).
    fn received_by_source(&self, since: OffsetDateTime) -> Result<Vec<(Source, u64)>, StoreError>;
}

/// What [`ReportStore::stored_bytes`] measures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredBytes {
    /// All tenants.
    pub total: u64,
    /// The tenant asked about.
    pub tenant: u64,
}

/// One tenant's session counts over a window, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantTotals {
    /// The tenant domain.
    pub tenant: String,
    /// Successful sessions over all policy types.
    pub successful: u64,
    /// Failed sessions over all policy types.
    pub failed: u64,
    /// Failed sessions by `result-type` as reported (unknown types included verbatim).
    pub failures_by_result_type: Vec<(ResultType, u64)>,
}

/// Opens (creating and migrating) the report store `config` names: the one way code outside
/// `tlsrpt` gets a store, so no caller depends on which database is behind the trait.
pub fn open_store(config: &TlsRptConfig) -> Result<Arc<dyn ReportStore>, StoreError> {
    Ok(Arc::new(SqliteStore::open(&config.database)?))
}

/// [`open_store`] for read-only commands: `Ok(None)` when no store exists yet, since a reader
/// must not create one (possibly owned by the wrong user).
pub fn open_existing_store(
    config: &TlsRptConfig,
) -> Result<Option<Arc<dyn ReportStore>>, StoreError> {
    if !config.database.exists() {
        return Ok(None);
    }
    open_store(config).map(Some)
}

/// The cut-off for a retention of `days` days before `now`.
pub fn retention_cutoff(now: OffsetDateTime, days: u32) -> OffsetDateTime {
    now - time::Duration::days(i64::from(days))
}

/// Creates the database file owner-only (0600) before SQLite does (it would use 0644), and
/// tightens an existing one: reports name the tenants' senders and their failures. SQLite
/// gives the `-wal` and `-shm` files the database file's mode.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let unavailable = |what: &str, e: std::io::Error| {
        StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| unavailable("opening", e))?;
    let mode = file
        .metadata()
        .map_err(|e| unavailable("reading the mode of", e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| unavailable("restricting the mode of", e))?;
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "report database was readable by others; now 0600");
    }
    Ok(())
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how many have run.
/// Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema. Times are Unix seconds (UTC); counts are checked non-negative.
    "CREATE TABLE reports (
        id INTEGER PRIMARY KEY,
        organization TEXT NOT NULL,
        report_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        contact_info TEXT,
        start_time INTEGER NOT NULL,
        end_time INTEGER NOT NULL,
        received_time INTEGER NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('https', 'mail')),
        raw_gzip BLOB NOT NULL,
        UNIQUE (organization, report_id)
    );
    CREATE INDEX reports_tenant_end ON reports (tenant, end_time);
    CREATE INDEX reports_received ON reports (received_time);
    CREATE INDEX reports_report_id ON reports (report_id);
    CREATE TABLE policies (
        id INTEGER PRIMARY KEY,
        report INTEGER NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
        policy_domain TEXT NOT NULL,
        policy_type TEXT NOT NULL,
        successful INTEGER NOT NULL CHECK (successful >= 0),
        failed INTEGER NOT NULL CHECK (failed >= 0)
    );
    CREATE INDEX policies_report ON policies (report);
    CREATE TABLE failures (
        id INTEGER PRIMARY KEY,
        policy INTEGER NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
        result_type TEXT NOT NULL,
        receiving_mx_hostname TEXT,
        receiving_ip TEXT,
        sending_mta_ip TEXT,
        failed_sessions INTEGER NOT NULL CHECK (failed_sessions >= 0),
        failure_reason_code TEXT
    );
    CREATE INDEX failures_policy ON failures (policy);",
    // 2: window queries over every tenant (metrics at scrape time) filter on end_time alone.
    "CREATE INDEX reports_end ON reports (end_time);",
    // 3: duplicates are the same key *and* content (a forged report under a genuine key must
    // not suppress it). SQLite cannot drop a UNIQUE constraint, so the table is rebuilt
    // (https://www.sqlite.org/lang_altertable.html#otheralter); `migrate` turns foreign keys
    // off around it so dropping the old table does not cascade to the policies, and fills
    // `digest` from the stored JSON afterwards.
    "CREATE TABLE reports_v3 (
        id INTEGER PRIMARY KEY,
        organization TEXT NOT NULL,
        report_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        contact_info TEXT,
        start_time INTEGER NOT NULL,
        end_time INTEGER NOT NULL,
        received_time INTEGER NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('https', 'mail')),
        raw_gzip BLOB NOT NULL,
        digest TEXT NOT NULL,
        conflict INTEGER NOT NULL DEFAULT 0 CHECK (conflict IN (0, 1)),
        signing_domain TEXT,
        submitter_mismatch INTEGER NOT NULL DEFAULT 0 CHECK (submitter_mismatch IN (0, 1)),
        UNIQUE (organization, report_id, tenant, digest)
    );
    INSERT INTO reports_v3 (id, organization, report_id, tenant, contact_info, start_time,
        end_time, received_time, source, raw_gzip, digest)
    SELECT id, organization, report_id, tenant, contact_info, start_time, end_time,
        received_time, source, raw_gzip, '' FROM reports;
    DROP TABLE reports;
    ALTER TABLE reports_v3 RENAME TO reports;
    CREATE INDEX reports_tenant_end ON reports (tenant, end_time);
    CREATE INDEX reports_received ON reports (received_time);
    CREATE INDEX reports_report_id ON reports (report_id);
    CREATE INDEX reports_end ON reports (end_time);
    CREATE INDEX reports_key ON reports (organization, report_id);",
];

/// The migration (1-based) after which stored digests are computed from the raw JSON.
const DIGEST_MIGRATION: usize = 3;

/// The SQLite-backed [`ReportStore`].
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

pub(crate) fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Rejected(format!("count {n} does not fit")))
}

pub(crate) fn to_u64(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
}

pub(crate) fn from_unix(t: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(t).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn gzip(data: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)
        .and_then(|()| enc.finish())
        .map_err(|e| StoreError::Db(format!("compressing report: {e}")))
}

pub(crate) fn gunzip(data: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .map_err(|e| StoreError::Corrupt(format!("stored report does not decompress: {e}")))?;
    Ok(out)
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and run pending migrations.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with_timeout(path, DEFAULT_BUSY_TIMEOUT)
    }

    /// [`SqliteStore::open`] with a custom wait for locks held by other writers.
    pub fn open_with_timeout(
        path: &Path,
        busy_timeout: Duration,
    ) -> Result<SqliteStore, StoreError> {
        create_private(path)?;
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(busy_timeout)?;
        // WAL: readers (CLI, admin API) never block the intake writer. synchronous=FULL: the
        // WAL is fsync'd at every commit, so a 2xx is only sent for a report on disk
        // (NORMAL would be safe from corruption but could lose the last commits on power loss).
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Db(format!(
                "cannot enable WAL mode (got {mode}): is the state directory on a network filesystem?"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Off while migrating (the bundled SQLite turns them on by default): a table rebuild
        // drops the old table, which with foreign keys on would delete every policy row (ON
        // DELETE CASCADE). `migrate` checks them instead. The pragma is a no-op in a
        // transaction, so it is set here.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        migrate(&mut conn)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-written report: the transaction
        // is rolled back when dropped. So a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a report with this organization and report-id is stored.
    pub fn contains(&self, organization: &str, report_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT 1 FROM reports WHERE organization = ?1 AND report_id = ?2",
                [organization, report_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(self
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let current = usize::try_from(current)
        .map_err(|_| StoreError::Corrupt(format!("negative schema version {current}")))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "schema version {current} is newer than this mta-stsd supports ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(sql)?;
        if i + 1 == DIGEST_MIGRATION {
            backfill_digests(&tx)?;
        }
        // user_version lives in the database header, written inside this transaction: a crash
        // leaves either the old schema and version or the new ones.
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    let broken: Option<i64> = tx
        .query_row("PRAGMA foreign_key_check", [], |r| r.get(1))
        .optional()?;
    if broken.is_some() {
        return Err(StoreError::Corrupt(
            "a migration left rows pointing at no report".into(),
        ));
    }
    tx.commit()?;
    Ok(())
}

/// Computes the digest of every report stored before digests were kept.
fn backfill_digests(conn: &Connection) -> Result<(), StoreError> {
    let mut rows = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT id, raw_gzip FROM reports WHERE digest = ''")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))? {
            let (id, raw) = row?;
            rows.push((id, canonical_digest(&gunzip(&raw)?)?));
        }
    }
    let mut update = conn.prepare("UPDATE reports SET digest = ?2 WHERE id = ?1")?;
    for (id, digest) in rows {
        update.execute(params![id, digest])?;
    }
    Ok(())
}

/// The policy rows of a report just inserted as `report_row`, each with its failure rows.
fn insert_policies(
    conn: &Connection,
    report_row: i64,
    tenant: &str,
    policies: &[&PolicyReport],
) -> Result<(), StoreError> {
    let mut insert_policy = conn.prepare(
        "INSERT INTO policies (report, policy_domain, policy_type, successful, failed)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut insert_failure = conn.prepare(
        "INSERT INTO failures (policy, result_type, receiving_mx_hostname, receiving_ip,
            sending_mta_ip, failed_sessions, failure_reason_code)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for p in policies {
        insert_policy.execute(params![
            report_row,
            p.policy.policy_domain.as_deref().unwrap_or(tenant),
            p.policy.policy_type.as_str(),
            to_i64(p.summary.total_successful_session_count)?,
            to_i64(p.summary.total_failure_session_count)?,
        ])?;
        let policy_row = conn.last_insert_rowid();
        for f in &p.failure_details {
            insert_failure.execute(params![
                policy_row,
                f.result_type.as_str(),
                f.receiving_mx_hostname,
                f.receiving_ip,
                f.sending_mta_ip,
                to_i64(f.failed_session_count)?,
                f.failure_reason_code,
            ])?;
        }
    }
    Ok(())
}

/// The tenant's reports whose period ends after `since`.
fn report_spans(
    conn: &Connection,
    tenant: &str,
    since: i64,
) -> Result<Vec<ReportSpan>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT organization, start_time, end_time, conflict, signing_domain, submitter_mismatch,
            report_id, digest,
            (SELECT COALESCE(SUM(p.successful), 0) FROM policies p WHERE p.report = reports.id),
            (SELECT COALESCE(SUM(p.failed), 0) FROM policies p WHERE p.report = reports.id)
         FROM reports WHERE tenant = ?1 AND end_time > ?2 ORDER BY start_time, organization",
    )?;
    let rows = stmt.query_map(params![tenant, since], |r| {
        let span = ReportSpan {
            organization: r.get(0)?,
            start: OffsetDateTime::UNIX_EPOCH,
            end: OffsetDateTime::UNIX_EPOCH,
            conflict: r.get(3)?,
            signing_domain: r.get(4)?,
            submitter_mismatch: r.get(5)?,
            report_id: r.get(6)?,
            digest: r.get(7)?,
            successful: 0,
            failed: 0,
        };
        let counts: (i64, i64) = (r.get(8)?, r.get(9)?);
        Ok((span, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, counts))
    })?;
    let mut spans = Vec::new();
    for row in rows {
        let (mut span, start, end, (successful, failed)) = row?;
        span.start = from_unix(start)?;
        span.end = from_unix(end)?;
        span.successful = to_u64(successful)?;
        span.failed = to_u64(failed)?;
        spans.push(span);
    }
    Ok(spans)
}

/// Session totals per policy type over the same reports as [`report_spans`].
fn policy_totals(
    conn: &Connection,
    tenant: &str,
    since: i64,
) -> Result<Vec<PolicyTotals>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT p.policy_type, SUM(p.successful), SUM(p.failed)
         FROM policies p JOIN reports r ON p.report = r.id
         WHERE r.tenant = ?1 AND r.end_time > ?2
         GROUP BY p.policy_type ORDER BY p.policy_type",
    )?;
    let rows = stmt.query_map(params![tenant, since], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut totals = Vec::new();
    for row in rows {
        let (policy_type, successful, failed) = row?;
        totals.push(PolicyTotals {
            policy_type: PolicyType::from(policy_type.as_str()),
            successful: to_u64(successful)?,
            failed: to_u64(failed)?,
        });
    }
    Ok(totals)
}

/// Failed sessions by policy type, result type and MX over the same reports.
fn failure_groups(
    conn: &Connection,
    tenant: &str,
    since: i64,
) -> Result<Vec<FailureGroup>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT p.policy_type, f.result_type, f.receiving_mx_hostname, SUM(f.failed_sessions)
         FROM failures f JOIN policies p ON f.policy = p.id JOIN reports r ON p.report = r.id
         WHERE r.tenant = ?1 AND r.end_time > ?2
         GROUP BY p.policy_type, f.result_type, f.receiving_mx_hostname
         ORDER BY 1, 2, 3",
    )?;
    let rows = stmt.query_map(params![tenant, since], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut groups = Vec::new();
    for row in rows {
        let (policy_type, result_type, receiving_mx, sessions) = row?;
        groups.push(FailureGroup {
            policy_type: PolicyType::from(policy_type.as_str()),
            result_type: ResultType::from(result_type.as_str()),
            receiving_mx,
            sessions: to_u64(sessions)?,
        });
    }
    Ok(groups)
}

/// Whether the report's organization and report-id are stored with this content for this
/// tenant (a retry), and whether they are stored with other content (a conflict).
fn key_holders(
    conn: &Connection,
    report: &Report,
    tenant: &str,
    digest: &str,
) -> Result<(bool, bool), StoreError> {
    let mut stmt = conn
        .prepare("SELECT tenant, digest FROM reports WHERE organization = ?1 AND report_id = ?2")?;
    let rows = stmt.query_map(params![report.organization_name, report.report_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let (mut same, mut other) = (false, false);
    for row in rows {
        let (t, d) = row?;
        same |= t == tenant && d == digest;
        other |= d != digest;
    }
    Ok((same, other))
}

impl ReportStore for SqliteStore {
    fn stored_bytes(&self, since: OffsetDateTime, tenant: &str) -> Result<StoredBytes, StoreError> {
        // length() of a BLOB reads the record header, not the data: cheap per row, and the
        // received_time index bounds the rows to one day's.
        let (total, tenant): (i64, i64) = self.lock().query_row(
            "SELECT COALESCE(SUM(length(raw_gzip)), 0),
                    COALESCE(SUM(CASE WHEN tenant = ?2 THEN length(raw_gzip) END), 0)
             FROM reports WHERE received_time >= ?1",
            params![since.unix_timestamp(), tenant],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(StoredBytes {
            total: to_u64(total)?,
            tenant: to_u64(tenant)?,
        })
    }

    fn received_by_source(&self, since: OffsetDateTime) -> Result<Vec<(Source, u64)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT source, COUNT(*) FROM reports WHERE received_time >= ?1 GROUP BY source",
        )?;
        let rows = stmt.query_map([since.unix_timestamp()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut out = vec![(Source::Https, 0), (Source::Mail, 0)];
        for row in rows {
            let (source, n) = row?;
            let source = Source::parse(&source)?;
            if let Some(slot) = out.iter_mut().find(|(s, _)| *s == source) {
                slot.1 = to_u64(n)?;
            }
        }
        Ok(out)
    }

    fn insert(&self, stored: &StoredReport) -> Result<InsertOutcome, StoreError> {
        let tenant = normalize_domain(&stored.tenant);
        let report = &stored.report;
        let policies: Vec<_> = report.policies_for(&tenant).collect();
        if policies.is_empty() {
            let named: Vec<&str> = report.policy_domains().into_iter().collect();
            return Err(StoreError::Rejected(format!(
                "no policy in the report concerns {tenant} (it names {})",
                named.join(", ")
            )));
        }
        let raw_gzip = gzip(&stored.raw_json)?;
        let digest = canonical_digest(&stored.raw_json)?;
        let mut conn = self.lock();
        // IMMEDIATE takes the write lock up front, so a busy database fails here, not halfway.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (same, other) = key_holders(&tx, report, &tenant, &digest)?;
        if same {
            return Ok(InsertOutcome::Duplicate);
        }
        if other {
            tx.execute(
                "UPDATE reports SET conflict = 1 WHERE organization = ?1 AND report_id = ?2",
                params![report.organization_name, report.report_id],
            )?;
        }
        tx.execute(
            "INSERT INTO reports (organization, report_id, tenant, contact_info, start_time,
                end_time, received_time, source, raw_gzip, digest, conflict, signing_domain,
                submitter_mismatch)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                report.organization_name,
                report.report_id,
                tenant,
                report.contact_info,
                report.date_range.start.unix_timestamp(),
                report.date_range.end.unix_timestamp(),
                stored.received.unix_timestamp(),
                stored.source.as_str(),
                raw_gzip,
                digest,
                other,
                stored.signing_domain,
                stored.submitter_mismatch,
            ],
        )?;
        insert_policies(&tx, tx.last_insert_rowid(), &tenant, &policies)?;
        tx.commit()?;
        Ok(if other {
            InsertOutcome::Conflicting
        } else {
            InsertOutcome::Inserted
        })
    }

    fn summary(&self, tenant: &str, since: OffsetDateTime) -> Result<WindowData, StoreError> {
        let tenant = normalize_domain(tenant);
        let since = since.unix_timestamp();
        let conn = self.lock();
        // One read transaction so the three queries see the same snapshot.
        let tx = conn.unchecked_transaction()?;
        let data = WindowData {
            reports: report_spans(&tx, &tenant, since)?,
            totals: policy_totals(&tx, &tenant, since)?,
            failures: failure_groups(&tx, &tenant, since)?,
        };
        tx.finish()?;
        Ok(data)
    }

    fn get(&self, report_id: &str) -> Result<Vec<ReportRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT organization, report_id, tenant, source, received_time, start_time, end_time,
                raw_gzip, digest, conflict, signing_domain, submitter_mismatch
             FROM reports WHERE report_id = ?1 ORDER BY organization, received_time, id",
        )?;
        // Columns that need no conversion go straight into the record; the others are
        // converted after, since a closure of query_map can only fail with rusqlite's error.
        let rows = stmt.query_map([report_id], |r| {
            let record = ReportRecord {
                organization: r.get(0)?,
                report_id: r.get(1)?,
                tenant: r.get(2)?,
                source: Source::Https,
                received: OffsetDateTime::UNIX_EPOCH,
                start: OffsetDateTime::UNIX_EPOCH,
                end: OffsetDateTime::UNIX_EPOCH,
                raw_json: Vec::new(),
                digest: r.get(8)?,
                conflict: r.get(9)?,
                signing_domain: r.get(10)?,
                submitter_mismatch: r.get(11)?,
            };
            let times: [i64; 3] = [r.get(4)?, r.get(5)?, r.get(6)?];
            Ok((
                record,
                r.get::<_, String>(3)?,
                times,
                r.get::<_, Vec<u8>>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut record, source, [received, start, end], raw) = row?;
            record.source = Source::parse(&source)?;
            record.received = from_unix(received)?;
            record.start = from_unix(start)?;
            record.end = from_unix(end)?;
            record.raw_json = gunzip(&raw)?;
            out.push(record);
        }
        Ok(out)
    }

    fn prune(&self, older_than: OffsetDateTime) -> Result<usize, StoreError> {
        let conn = self.lock();
        // Policies and failures go with their report (ON DELETE CASCADE).
        Ok(conn.execute(
            "DELETE FROM reports WHERE received_time < ?1",
            [older_than.unix_timestamp()],
        )?)
    }

    fn window_totals(&self, since: OffsetDateTime) -> Result<Vec<TenantTotals>, StoreError> {
        let since = since.unix_timestamp();
        let conn = self.lock();
        let tx = conn.unchecked_transaction()?;
        let mut out: Vec<TenantTotals> = Vec::new();
        {
            let mut stmt = tx.prepare(
                "SELECT r.tenant, SUM(p.successful), SUM(p.failed)
                 FROM policies p JOIN reports r ON p.report = r.id
                 WHERE r.end_time > ?1 GROUP BY r.tenant ORDER BY r.tenant",
            )?;
            let rows = stmt.query_map([since], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (tenant, successful, failed) = row?;
                out.push(TenantTotals {
                    tenant,
                    successful: to_u64(successful)?,
                    failed: to_u64(failed)?,
                    failures_by_result_type: Vec::new(),
                });
            }
            let mut stmt = tx.prepare(
                "SELECT r.tenant, f.result_type, SUM(f.failed_sessions)
                 FROM failures f JOIN policies p ON f.policy = p.id JOIN reports r ON p.report = r.id
                 WHERE r.end_time > ?1 GROUP BY r.tenant, f.result_type ORDER BY 1, 2",
            )?;
            let rows = stmt.query_map([since], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (tenant, result_type, sessions) = row?;
                // Both queries are ordered by tenant and every failure has a policy row.
                if let Ok(i) = out.binary_search_by(|t| t.tenant.as_str().cmp(&tenant)) {
                    out[i]
                        .failures_by_result_type
                        .push((ResultType::from(result_type.as_str()), to_u64(sessions)?));
                }
            }
        }
        tx.finish()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::tlsrpt::testutil::fixture;

    const RECEIVED: OffsetDateTime = datetime!(2025-03-02 06:00 UTC);

    fn stored(name: &str, tenant: &str) -> StoredReport {
        let raw_json = fixture(name);
        StoredReport {
            tenant: tenant.to_string(),
            source: Source::Https,
            received: RECEIVED,
            report: Report::from_json(&raw_json).unwrap(),
            raw_json,
            signing_domain: None,
            submitter_mismatch: false,
        }
    }

    fn open(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&dir.path().join("reports.db")).unwrap()
    }

    fn count(store: &SqliteStore, table: &str) -> i64 {
        store
            .lock()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_full_disk_or_io_error_is_unavailable_503() {
        for code in [rusqlite::ffi::SQLITE_FULL, rusqlite::ffi::SQLITE_IOERR] {
            let err = StoreError::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ));
            assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
            assert_eq!(err.http_status(), 503);
            assert!(err.is_temporary());
        }
    }

    #[test]
    fn database_files_are_owner_only_and_an_open_one_is_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.sqlite3");
        let store = SqliteStore::open(&path).unwrap();
        store
            .insert(&stored("rfc-example.json", "example.com"))
            .unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("reports.sqlite3-wal")), 0o600);
        drop(store);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        SqliteStore::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn open_sets_wal_full_sync_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as u32);
        let conn = store.lock();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "2 is FULL");
    }

    #[test]
    fn insert_then_duplicate_stores_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let r = stored("rfc-example.json", "example.com");
        assert_eq!(store.insert(&r).unwrap(), InsertOutcome::Inserted);
        // A retry, even by another path and later, is a duplicate and writes nothing.
        let mut again = r.clone();
        again.source = Source::Mail;
        again.received = RECEIVED + time::Duration::hours(5);
        assert_eq!(store.insert(&again).unwrap(), InsertOutcome::Duplicate);
        assert_eq!(count(&store, "reports"), 1);
        assert_eq!(count(&store, "policies"), 1);
        assert_eq!(count(&store, "failures"), 1);
        let got = store.get("20250301-example.com-1").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].source, Source::Https);
        assert_eq!(got[0].received, RECEIVED);
        assert!(
            store
                .contains("Sender Org", "20250301-example.com-1")
                .unwrap()
        );
        assert!(
            !store
                .contains("Other Org", "20250301-example.com-1")
                .unwrap()
        );
    }

    #[test]
    fn a_different_report_under_a_stored_key_is_stored_and_both_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        // A forged report showing no failures, under the key of a genuine one.
        let genuine = stored("rfc-example.json", "example.com");
        let mut forged = genuine.clone();
        let text = String::from_utf8(forged.raw_json).unwrap();
        forged.raw_json = text
            .replace(
                "\"total-successful-session-count\":980",
                "\"total-successful-session-count\":9800",
            )
            .into_bytes();
        assert_ne!(forged.raw_json, fixture("rfc-example.json"));
        forged.report = Report::from_json(&forged.raw_json).unwrap();
        assert_eq!(store.insert(&forged).unwrap(), InsertOutcome::Inserted);
        assert_eq!(store.insert(&genuine).unwrap(), InsertOutcome::Conflicting);
        let got = store.get("20250301-example.com-1").unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|r| r.conflict), "{got:?}");
        // A retry of either is still a duplicate, even reformatted (the digest is of the
        // canonical JSON, not of the bytes).
        let mut reformatted = genuine.clone();
        let value: serde_json::Value = serde_json::from_slice(&genuine.raw_json).unwrap();
        reformatted.raw_json = serde_json::to_vec(&value).unwrap();
        assert_ne!(reformatted.raw_json, genuine.raw_json);
        assert_eq!(
            store.insert(&reformatted).unwrap(),
            InsertOutcome::Duplicate
        );
        assert_eq!(store.insert(&forged).unwrap(), InsertOutcome::Duplicate);
        assert_eq!(count(&store, "reports"), 2);
        let data = store
            .summary("example.com", datetime!(2025-02-28 00:00 UTC))
            .unwrap();
        assert!(data.reports.iter().all(|r| r.conflict), "{data:?}");
    }

    #[test]
    fn a_version_2_database_migrates_keeping_reports_and_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.db");
        {
            // A database as version 2 left it, with one report, its policy and failure.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO reports (organization, report_id, tenant, start_time, end_time,
                    received_time, source, raw_gzip)
                 VALUES ('Sender Org', '20250301-example.com-1', 'example.com', 1740787200,
                    1740873599, 1740895200, 'mail', ?1)",
                [gzip(&fixture("rfc-example.json")).unwrap()],
            )
            .unwrap();
            conn.execute_batch(
                "PRAGMA foreign_keys = ON;
                 INSERT INTO policies (report, policy_domain, policy_type, successful, failed)
                 VALUES (1, 'example.com', 'sts', 980, 2);
                 INSERT INTO failures (policy, result_type, failed_sessions)
                 VALUES (1, 'certificate-expired', 2);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as u32);
        assert_eq!(count(&store, "policies"), 1);
        assert_eq!(count(&store, "failures"), 1);
        let got = store.get("20250301-example.com-1").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].source, Source::Mail);
        assert_eq!(
            got[0].digest,
            canonical_digest(&fixture("rfc-example.json")).unwrap()
        );
        assert!(!got[0].conflict);
        // The old report's retry is still a duplicate; other content under its key conflicts.
        let r = stored("rfc-example.json", "example.com");
        assert_eq!(store.insert(&r).unwrap(), InsertOutcome::Duplicate);
        let mut other = r.clone();
        other.raw_json = b"{\"x\":1}".to_vec();
        assert_eq!(store.insert(&other).unwrap(), InsertOutcome::Conflicting);
        // Foreign keys are on again after the migration: deleting cascades.
        assert_eq!(store.prune(datetime!(2030-01-01 00:00 UTC)).unwrap(), 2);
        assert_eq!(count(&store, "policies"), 0);
        assert_eq!(count(&store, "failures"), 0);
    }

    #[test]
    fn same_report_id_from_another_organization_is_not_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let r = stored("rfc-example.json", "example.com");
        let mut other = r.clone();
        other.report.organization_name = "Other Org".into();
        assert_eq!(store.insert(&r).unwrap(), InsertOutcome::Inserted);
        assert_eq!(store.insert(&other).unwrap(), InsertOutcome::Inserted);
        let got = store.get("20250301-example.com-1").unwrap();
        let orgs: Vec<&str> = got.iter().map(|r| r.organization.as_str()).collect();
        assert_eq!(orgs, ["Other Org", "Sender Org"]);
    }

    #[test]
    fn store_survives_reopen_with_raw_report_intact() {
        let dir = tempfile::tempdir().unwrap();
        let r = stored("microsoft.json", "example.org");
        {
            let store = open(&dir);
            assert_eq!(store.insert(&r).unwrap(), InsertOutcome::Inserted);
        }
        let store = open(&dir);
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as u32);
        let got = store.get("133856640000000000+example.org").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].raw_json, fixture("microsoft.json"));
        assert_eq!(got[0].tenant, "example.org");
        assert_eq!(got[0].start, datetime!(2025-03-01 00:00 UTC));
        assert_eq!(store.insert(&r).unwrap(), InsertOutcome::Duplicate);
    }

    #[test]
    fn summary_groups_by_policy_type_result_and_mx() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store
            .insert(&stored("microsoft.json", "example.org"))
            .unwrap();
        store.insert(&stored("google.json", "example.org")).unwrap();
        // Another tenant's report is not counted.
        store
            .insert(&stored("rfc-example.json", "example.com"))
            .unwrap();

        let data = store
            .summary("Example.ORG", datetime!(2025-02-28 00:00 UTC))
            .unwrap();
        assert_eq!(data.reports.len(), 2);
        let orgs: Vec<&str> = data
            .reports
            .iter()
            .map(|r| r.organization.as_str())
            .collect();
        assert!(orgs.contains(&"Google Inc.") && orgs.contains(&"Microsoft Corporation"));
        // Each report carries its own sums (for the pages' report list and daily chart), its
        // report-id and the digest that tells it from another report under that id.
        let per_report: u64 = data.reports.iter().map(|r| r.successful).sum();
        let failed: u64 = data.reports.iter().map(|r| r.failed).sum();
        assert_eq!((per_report, failed), (161, 3));
        for r in &data.reports {
            let stored = store.get(&r.report_id).unwrap();
            assert!(stored.iter().any(|s| s.digest == r.digest), "{r:?}");
        }
        assert_eq!(
            data.totals,
            [
                // Microsoft's no-policy-found policy has no domain: attributed to the tenant.
                PolicyTotals {
                    policy_type: PolicyType::NoPolicyFound,
                    successful: 0,
                    failed: 0
                },
                PolicyTotals {
                    policy_type: PolicyType::Sts,
                    successful: 161,
                    failed: 3
                },
            ]
        );
        assert_eq!(
            data.failures,
            [FailureGroup {
                policy_type: PolicyType::Sts,
                result_type: ResultType::ValidationFailure,
                receiving_mx: Some("mx.example.org".into()),
                sessions: 3,
            }]
        );
        // A window starting after the reports end sees nothing.
        let later = store
            .summary("example.org", datetime!(2025-03-02 00:00 UTC))
            .unwrap();
        assert_eq!(later, WindowData::default());
    }

    #[test]
    fn report_concerning_another_domain_is_rejected_and_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let err = store
            .insert(&stored("rfc-example.json", "other.example"))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Rejected(ref m) if m.contains("example.com")),
            "{err}"
        );
        assert!(!err.is_temporary());
        assert_eq!(err.http_status(), 400);
        assert_eq!(count(&store, "reports"), 0);
    }

    #[test]
    fn prune_removes_old_reports_and_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let mut old = stored("rfc-example.json", "example.com");
        old.received = datetime!(2025-01-01 00:00 UTC);
        store.insert(&old).unwrap();
        store.insert(&stored("google.json", "example.org")).unwrap();
        let cutoff = retention_cutoff(datetime!(2025-03-10 00:00 UTC), 30);
        assert_eq!(cutoff, datetime!(2025-02-08 00:00 UTC));
        assert_eq!(store.prune(cutoff).unwrap(), 1);
        assert_eq!(count(&store, "reports"), 1);
        assert_eq!(count(&store, "policies"), 1); // google's one policy
        assert_eq!(count(&store, "failures"), 0); // the RFC example's failure went with it
        assert!(store.get("20250301-example.com-1").unwrap().is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.db");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt(ref m) if m.contains("99")),
            "{err}"
        );
    }

    #[test]
    fn a_locked_database_is_busy_and_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.db");
        let store = SqliteStore::open_with_timeout(&path, Duration::from_millis(50)).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let err = store
            .insert(&stored("rfc-example.json", "example.com"))
            .unwrap_err();
        assert!(matches!(err, StoreError::Busy(_)), "{err}");
        assert!(err.is_temporary());
        assert_eq!(err.http_status(), 503);
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(
            store
                .insert(&stored("rfc-example.json", "example.com"))
                .unwrap(),
            InsertOutcome::Inserted
        );
    }

    #[test]
    fn window_totals_cover_every_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store
            .insert(&stored("microsoft.json", "example.org"))
            .unwrap();
        store.insert(&stored("google.json", "example.org")).unwrap();
        store
            .insert(&stored("rfc-example.json", "example.com"))
            .unwrap();
        let totals = store
            .window_totals(datetime!(2025-02-28 00:00 UTC))
            .unwrap();
        assert_eq!(
            totals,
            [
                TenantTotals {
                    tenant: "example.com".into(),
                    successful: 980,
                    failed: 2,
                    failures_by_result_type: vec![(ResultType::CertificateExpired, 2)],
                },
                TenantTotals {
                    tenant: "example.org".into(),
                    successful: 161,
                    failed: 3,
                    failures_by_result_type: vec![(ResultType::ValidationFailure, 3)],
                },
            ]
        );
        assert!(
            store
                .window_totals(datetime!(2025-03-02 00:00 UTC))
                .unwrap()
                .is_empty()
        );
    }
}
