//! [`ReportStore`] on PostgreSQL: the SQLite store's rows and rules, shared by every replica.
//!
//! Any replica may take any report: the insert holds a transaction-scoped advisory lock on
//! the report's (organization, report-id), so two replicas receiving the same report at once
//! decide "duplicate" or "conflict" one after the other, and the unique key is the backstop.
//! The caller answers 200 only after `insert` returns, i.e. after the commit.

use std::sync::Arc;

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use super::{Db, DbError};
use crate::tlsrpt::report::{PolicyType, ResultType, normalize_domain};
use crate::tlsrpt::store::{
    InsertOutcome, ReportRecord, ReportStore, Source, StoreError, StoredBytes, StoredReport,
    TenantTotals, canonical_digest, from_unix, gunzip, gzip, to_i64, to_u64,
};
use crate::tlsrpt::summary::{FailureGroup, PolicyTotals, ReportSpan, WindowData};

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(why) => StoreError::Unavailable(why),
            DbError::Schema(why) => StoreError::Corrupt(why),
            DbError::Query(why) => StoreError::Db(why),
        }
    }
}

/// The TLS-RPT reports in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgReportStore {
    db: Arc<Db>,
}

impl PgReportStore {
    /// The reports of the database `db` is connected to (already migrated by
    /// [`Db::connect`]).
    pub fn new(db: Arc<Db>) -> Self {
        PgReportStore { db }
    }
}

/// One policy row of a report to insert, with its failure rows, owned for the store's task.
struct PolicyRow {
    domain: String,
    policy_type: String,
    successful: i64,
    failed: i64,
    failures: Vec<FailureRow>,
}

struct FailureRow {
    result_type: String,
    receiving_mx_hostname: Option<String>,
    receiving_ip: Option<String>,
    sending_mta_ip: Option<String>,
    sessions: i64,
    reason: Option<String>,
}

/// Everything the insert writes, computed before the database is touched.
struct NewReport {
    organization: String,
    report_id: String,
    tenant: String,
    contact_info: Option<String>,
    times: [i64; 3],
    source: &'static str,
    raw_gzip: Vec<u8>,
    digest: String,
    signing_domain: Option<String>,
    submitter_mismatch: bool,
    policies: Vec<PolicyRow>,
}

/// The rows of `stored` for its tenant; rejected when no policy concerns it.
fn new_report(stored: &StoredReport) -> Result<NewReport, StoreError> {
    let tenant = normalize_domain(&stored.tenant);
    let report = &stored.report;
    let mut policies = Vec::new();
    for p in report.policies_for(&tenant) {
        let mut failures = Vec::new();
        for f in &p.failure_details {
            failures.push(FailureRow {
                result_type: f.result_type.as_str().to_owned(),
                receiving_mx_hostname: f.receiving_mx_hostname.clone(),
                receiving_ip: f.receiving_ip.clone(),
                sending_mta_ip: f.sending_mta_ip.clone(),
                sessions: to_i64(f.failed_session_count)?,
                reason: f.failure_reason_code.clone(),
            });
        }
        policies.push(PolicyRow {
            domain: p
                .policy
                .policy_domain
                .clone()
                .unwrap_or_else(|| tenant.clone()),
            policy_type: p.policy.policy_type.as_str().to_owned(),
            successful: to_i64(p.summary.total_successful_session_count)?,
            failed: to_i64(p.summary.total_failure_session_count)?,
            failures,
        });
    }
    if policies.is_empty() {
        let named: Vec<&str> = report.policy_domains().into_iter().collect();
        return Err(StoreError::Rejected(format!(
            "no policy in the report concerns {tenant} (it names {})",
            named.join(", ")
        )));
    }
    Ok(NewReport {
        organization: report.organization_name.clone(),
        report_id: report.report_id.clone(),
        contact_info: report.contact_info.clone(),
        times: [
            report.date_range.start.unix_timestamp(),
            report.date_range.end.unix_timestamp(),
            stored.received.unix_timestamp(),
        ],
        source: stored.source.as_str(),
        raw_gzip: gzip(&stored.raw_json)?,
        digest: canonical_digest(&stored.raw_json)?,
        signing_domain: stored.signing_domain.clone(),
        submitter_mismatch: stored.submitter_mismatch,
        tenant,
        policies,
    })
}

/// Inserts `new` unless it is a retry; flags every report under its key when the content
/// differs (see the SQLite store for why both are kept).
async fn insert(pool: deadpool_postgres::Pool, new: NewReport) -> Result<InsertOutcome, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Serializes inserts of one key across replicas; released at commit or rollback.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(10) || $2, 0))",
        &[&new.organization, &new.report_id],
    )
    .await?;
    let (same, other) = key_holders(&tx, &new).await?;
    if same {
        return Ok(InsertOutcome::Duplicate);
    }
    if other {
        tx.execute(
            "UPDATE tlsrpt_reports SET conflict = true WHERE organization = $1 AND report_id = $2",
            &[&new.organization, &new.report_id],
        )
        .await?;
    }
    let row = tx
        .query_opt(
            "INSERT INTO tlsrpt_reports (organization, report_id, tenant, contact_info,
                start_time, end_time, received_time, source, raw_gzip, digest, conflict,
                signing_domain, submitter_mismatch)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT DO NOTHING RETURNING id",
            &[
                &new.organization,
                &new.report_id,
                &new.tenant,
                &new.contact_info,
                &new.times[0],
                &new.times[1],
                &new.times[2],
                &new.source,
                &new.raw_gzip,
                &new.digest,
                &other,
                &new.signing_domain,
                &new.submitter_mismatch,
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(InsertOutcome::Duplicate);
    };
    insert_policies(&tx, row.get(0), &new.policies).await?;
    tx.commit().await?;
    Ok(if other {
        InsertOutcome::Conflicting
    } else {
        InsertOutcome::Inserted
    })
}

/// Whether `new`'s key is stored with its content for its tenant (a retry), and whether it is
/// stored with other content (a conflict).
async fn key_holders(tx: &impl GenericClient, new: &NewReport) -> Result<(bool, bool), DbError> {
    let holders = tx
        .query(
            "SELECT tenant, digest FROM tlsrpt_reports WHERE organization = $1 AND report_id = $2",
            &[&new.organization, &new.report_id],
        )
        .await?;
    let same = holders
        .iter()
        .any(|r| r.get::<_, &str>(0) == new.tenant && r.get::<_, &str>(1) == new.digest);
    let other = holders.iter().any(|r| r.get::<_, &str>(1) != new.digest);
    Ok((same, other))
}

async fn insert_policies(
    tx: &impl GenericClient,
    report: i64,
    policies: &[PolicyRow],
) -> Result<(), DbError> {
    let insert_policy = tx
        .prepare(
            "INSERT INTO tlsrpt_policies (report, policy_domain, policy_type, successful, failed)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .await?;
    let insert_failure = tx
        .prepare(
            "INSERT INTO tlsrpt_failures (policy, result_type, receiving_mx_hostname,
                receiving_ip, sending_mta_ip, failed_sessions, failure_reason_code)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?;
    for p in policies {
        let row = tx
            .query_one(
                &insert_policy,
                &[&report, &p.domain, &p.policy_type, &p.successful, &p.failed],
            )
            .await?;
        let policy: i64 = row.get(0);
        for f in &p.failures {
            tx.execute(
                &insert_failure,
                &[
                    &policy,
                    &f.result_type,
                    &f.receiving_mx_hostname,
                    &f.receiving_ip,
                    &f.sending_mta_ip,
                    &f.sessions,
                    &f.reason,
                ],
            )
            .await?;
        }
    }
    Ok(())
}

/// The three queries of a summary, in one repeatable-read transaction (one snapshot).
async fn summary_rows(
    pool: deadpool_postgres::Pool,
    tenant: String,
    since: i64,
) -> Result<[Vec<tokio_postgres::Row>; 3], DbError> {
    let mut client = pool.get().await?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let spans = tx
        .query(
            "SELECT organization, start_time, end_time, conflict, signing_domain,
                submitter_mismatch, report_id, digest,
                (SELECT COALESCE(SUM(p.successful), 0)::BIGINT FROM tlsrpt_policies p
                 WHERE p.report = tlsrpt_reports.id),
                (SELECT COALESCE(SUM(p.failed), 0)::BIGINT FROM tlsrpt_policies p
                 WHERE p.report = tlsrpt_reports.id)
             FROM tlsrpt_reports WHERE tenant = $1 AND end_time > $2
             ORDER BY start_time, organization",
            &[&tenant, &since],
        )
        .await?;
    let totals = tx
        .query(
            "SELECT p.policy_type, SUM(p.successful)::BIGINT, SUM(p.failed)::BIGINT
             FROM tlsrpt_policies p JOIN tlsrpt_reports r ON p.report = r.id
             WHERE r.tenant = $1 AND r.end_time > $2
             GROUP BY p.policy_type ORDER BY p.policy_type",
            &[&tenant, &since],
        )
        .await?;
    let failures = tx
        .query(
            "SELECT p.policy_type, f.result_type, f.receiving_mx_hostname,
                SUM(f.failed_sessions)::BIGINT
             FROM tlsrpt_failures f JOIN tlsrpt_policies p ON f.policy = p.id
                JOIN tlsrpt_reports r ON p.report = r.id
             WHERE r.tenant = $1 AND r.end_time > $2
             GROUP BY p.policy_type, f.result_type, f.receiving_mx_hostname
             ORDER BY 1, 2, 3",
            &[&tenant, &since],
        )
        .await?;
    tx.commit().await?;
    Ok([spans, totals, failures])
}

fn window_data(rows: [Vec<tokio_postgres::Row>; 3]) -> Result<WindowData, StoreError> {
    let [spans, totals, failures] = rows;
    let mut data = WindowData::default();
    for r in spans {
        data.reports.push(ReportSpan {
            organization: r.get(0),
            start: from_unix(r.get(1))?,
            end: from_unix(r.get(2))?,
            conflict: r.get(3),
            signing_domain: r.get(4),
            submitter_mismatch: r.get(5),
            report_id: r.get(6),
            digest: r.get(7),
            successful: to_u64(r.get(8))?,
            failed: to_u64(r.get(9))?,
        });
    }
    for r in totals {
        data.totals.push(PolicyTotals {
            policy_type: PolicyType::from(r.get::<_, &str>(0)),
            successful: to_u64(r.get(1))?,
            failed: to_u64(r.get(2))?,
        });
    }
    for r in failures {
        data.failures.push(FailureGroup {
            policy_type: PolicyType::from(r.get::<_, &str>(0)),
            result_type: ResultType::from(r.get::<_, &str>(1)),
            receiving_mx: r.get(2),
            sessions: to_u64(r.get(3))?,
        });
    }
    Ok(data)
}

fn record(r: &tokio_postgres::Row) -> Result<ReportRecord, StoreError> {
    Ok(ReportRecord {
        organization: r.get(0),
        report_id: r.get(1),
        tenant: r.get(2),
        source: Source::parse(r.get(3))?,
        received: from_unix(r.get(4))?,
        start: from_unix(r.get(5))?,
        end: from_unix(r.get(6))?,
        raw_json: gunzip(r.get(7))?,
        digest: r.get(8),
        conflict: r.get(9),
        signing_domain: r.get(10),
        submitter_mismatch: r.get(11),
    })
}

impl PgReportStore {
    fn rows(
        &self,
        sql: &'static str,
        params: super::Params,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        Ok(self.db.run(move |pool| super::query(pool, sql, params))?)
    }
}

impl ReportStore for PgReportStore {
    fn insert(&self, stored: &StoredReport) -> Result<InsertOutcome, StoreError> {
        let new = new_report(stored)?;
        Ok(self.db.run(move |pool| insert(pool, new))?)
    }

    fn summary(&self, tenant: &str, since: OffsetDateTime) -> Result<WindowData, StoreError> {
        let tenant = normalize_domain(tenant);
        let since = since.unix_timestamp();
        window_data(self.db.run(move |pool| summary_rows(pool, tenant, since))?)
    }

    fn get(&self, report_id: &str) -> Result<Vec<ReportRecord>, StoreError> {
        let rows = self.rows(
            "SELECT organization, report_id, tenant, source, received_time, start_time,
                end_time, raw_gzip, digest, conflict, signing_domain, submitter_mismatch
             FROM tlsrpt_reports WHERE report_id = $1 ORDER BY organization, received_time, id",
            vec![Box::new(report_id.to_owned())],
        )?;
        rows.iter().map(record).collect()
    }

    fn prune(&self, older_than: OffsetDateTime) -> Result<usize, StoreError> {
        let cutoff = older_than.unix_timestamp();
        let deleted = self.db.run(move |pool| async move {
            let client = pool.get().await?;
            Ok(client
                .execute(
                    "DELETE FROM tlsrpt_reports WHERE received_time < $1",
                    &[&cutoff],
                )
                .await?)
        })?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    fn window_totals(&self, since: OffsetDateTime) -> Result<Vec<TenantTotals>, StoreError> {
        let since = since.unix_timestamp();
        let sessions = self.rows(
            "SELECT r.tenant, SUM(p.successful)::BIGINT, SUM(p.failed)::BIGINT
             FROM tlsrpt_policies p JOIN tlsrpt_reports r ON p.report = r.id
             WHERE r.end_time > $1 GROUP BY r.tenant ORDER BY r.tenant",
            vec![Box::new(since)],
        )?;
        let failures = self.rows(
            "SELECT r.tenant, f.result_type, SUM(f.failed_sessions)::BIGINT
             FROM tlsrpt_failures f JOIN tlsrpt_policies p ON f.policy = p.id
                JOIN tlsrpt_reports r ON p.report = r.id
             WHERE r.end_time > $1 GROUP BY r.tenant, f.result_type ORDER BY 1, 2",
            vec![Box::new(since)],
        )?;
        let mut out = Vec::with_capacity(sessions.len());
        for r in &sessions {
            out.push(TenantTotals {
                tenant: r.get(0),
                successful: to_u64(r.get(1))?,
                failed: to_u64(r.get(2))?,
                failures_by_result_type: Vec::new(),
            });
        }
        for r in &failures {
            let tenant: &str = r.get(0);
            // Both are ordered by tenant; a report committed between the two queries may add
            // a tenant the first did not see: its failures wait for the next scrape.
            if let Ok(i) = out.binary_search_by(|t| t.tenant.as_str().cmp(tenant)) {
                out[i]
                    .failures_by_result_type
                    .push((ResultType::from(r.get::<_, &str>(1)), to_u64(r.get(2))?));
            }
        }
        Ok(out)
    }

    fn stored_bytes(&self, since: OffsetDateTime, tenant: &str) -> Result<StoredBytes, StoreError> {
        let rows = self.rows(
            "SELECT COALESCE(SUM(octet_length(raw_gzip)), 0)::BIGINT,
                COALESCE(SUM(CASE WHEN tenant = $2 THEN octet_length(raw_gzip) END), 0)::BIGINT
             FROM tlsrpt_reports WHERE received_time >= $1",
            vec![
                Box::new(since.unix_timestamp()),
                Box::new(tenant.to_owned()),
            ],
        )?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Db("no row from a sum".into()))?;
        Ok(StoredBytes {
            total: to_u64(row.get(0))?,
            tenant: to_u64(row.get(1))?,
        })
    }

    fn received_by_source(&self, since: OffsetDateTime) -> Result<Vec<(Source, u64)>, StoreError> {
        let rows = self.rows(
            "SELECT source, COUNT(*) FROM tlsrpt_reports WHERE received_time >= $1
             GROUP BY source",
            vec![Box::new(since.unix_timestamp())],
        )?;
        let mut out = vec![(Source::Https, 0), (Source::Mail, 0)];
        for r in &rows {
            let source = Source::parse(r.get(0))?;
            if let Some(slot) = out.iter_mut().find(|(s, _)| *s == source) {
                slot.1 = to_u64(r.get(1))?;
            }
        }
        Ok(out)
    }
}
