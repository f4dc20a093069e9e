//! [`CertStore`] on PostgreSQL: the ACME account, every certificate with its key, and each
//! host's status, shared by every replica.
//!
//! Saving a certificate also sends `NOTIFY mta_stsd_cert, '<host>'` in the same transaction,
//! so a listening replica learns of a new or renewed certificate once it is committed.

use std::io;
use std::sync::Arc;

use super::{Db, DbError};
use crate::certs::store::{CertMeta, CertStore, StatusRecord, StoredCert};

/// The notification channel of saved certificates; the payload is the host.
pub const CERT_CHANNEL: &str = "mta_stsd_cert";

/// A store error as the traits report it (an outage as `TimedOut`).
pub(super) fn io_error(e: DbError) -> io::Error {
    let kind = match e {
        DbError::Unavailable(_) => io::ErrorKind::TimedOut,
        DbError::Schema(_) => io::ErrorKind::InvalidData,
        DbError::Query(_) => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// The certificates in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgCertStore {
    db: Arc<Db>,
}

impl PgCertStore {
    /// The certificates of the database `db` is connected to.
    pub fn new(db: Arc<Db>) -> Self {
        PgCertStore { db }
    }

    /// One statement without rows.
    fn execute(&self, sql: &'static str, params: super::Params) -> io::Result<()> {
        self.db
            .run(move |pool| async move {
                let client = pool.get().await?;
                client.execute(sql, &super::param_refs(&params)).await?;
                Ok(())
            })
            .map_err(io_error)
    }

    /// One statement's rows.
    fn rows(
        &self,
        sql: &'static str,
        params: super::Params,
    ) -> io::Result<Vec<tokio_postgres::Row>> {
        self.db
            .run(move |pool| super::query(pool, sql, params))
            .map_err(io_error)
    }
}

fn now() -> i64 {
    crate::util::unix_now()
}

impl CertStore for PgCertStore {
    fn load_account(&self) -> io::Result<Option<Vec<u8>>> {
        let rows = self.rows("SELECT document FROM acme_account WHERE id = 1", vec![])?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn save_account(&self, document: &[u8]) -> io::Result<()> {
        self.execute(
            "INSERT INTO acme_account (id, document, updated) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET document = $1, updated = $2",
            vec![Box::new(document.to_vec()), Box::new(now())],
        )
    }

    fn hosts(&self) -> io::Result<Vec<String>> {
        let rows = self.rows(
            "SELECT host FROM certificates UNION SELECT host FROM cert_status ORDER BY 1",
            vec![],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn load_cert(&self, host: &str) -> io::Result<Option<StoredCert>> {
        let rows = self.rows(
            "SELECT chain_pem, key_pem, directory, order_url, issued_at FROM certificates
             WHERE host = $1",
            vec![Box::new(host.to_owned())],
        )?;
        Ok(rows.first().map(|r| StoredCert {
            chain_pem: r.get(0),
            key_pem: r.get(1),
            meta: CertMeta {
                directory: r.get(2),
                order_url: r.get(3),
                issued_at: r.get(4),
            },
        }))
    }

    fn save_cert(&self, host: &str, cert: &StoredCert) -> io::Result<()> {
        let host = host.to_owned();
        let cert = cert.clone();
        self.db
            .run(move |pool| async move {
                let mut client = pool.get().await?;
                let tx = client.transaction().await?;
                tx.execute(
                    "INSERT INTO certificates (host, chain_pem, key_pem, directory, order_url,
                        issued_at, updated)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (host) DO UPDATE SET chain_pem = $2, key_pem = $3,
                        directory = $4, order_url = $5, issued_at = $6, updated = $7",
                    &[
                        &host,
                        &cert.chain_pem,
                        &cert.key_pem,
                        &cert.meta.directory,
                        &cert.meta.order_url,
                        &cert.meta.issued_at,
                        &now(),
                    ],
                )
                .await?;
                tx.execute("SELECT pg_notify($1, $2)", &[&CERT_CHANNEL, &host])
                    .await?;
                tx.commit().await?;
                Ok(())
            })
            .map_err(io_error)
    }

    fn load_status(&self, host: &str) -> io::Result<Option<StatusRecord>> {
        let rows = self.rows(
            "SELECT record FROM cert_status WHERE host = $1",
            vec![Box::new(host.to_owned())],
        )?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let text: &str = row.get(0);
        serde_json::from_str(text).map(Some).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("status of {host}: {e}"))
        })
    }

    fn save_status(&self, host: &str, status: &StatusRecord) -> io::Result<()> {
        let record = serde_json::to_string(status).map_err(io::Error::other)?;
        self.execute(
            "INSERT INTO cert_status (host, record, updated) VALUES ($1, $2, $3)
             ON CONFLICT (host) DO UPDATE SET record = $2, updated = $3",
            vec![Box::new(host.to_owned()), Box::new(record), Box::new(now())],
        )
    }

    /// One query instead of one per host: every replica compares these every minute.
    fn issued(&self) -> io::Result<Vec<(String, i64)>> {
        let rows = self.rows("SELECT host, issued_at FROM certificates", vec![])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// A row that does not parse is logged and skipped: the others still count.
    fn statuses(&self) -> io::Result<Vec<(String, StatusRecord)>> {
        let rows = self.rows("SELECT host, record FROM cert_status", vec![])?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let host: String = r.get(0);
                let text: &str = r.get(1);
                match serde_json::from_str(text) {
                    Ok(record) => Some((host, record)),
                    Err(e) => {
                        tracing::warn!(host, error = %e, "stored certificate status unreadable; skipped");
                        None
                    }
                }
            })
            .collect())
    }

    /// From what is stored, without an order log: each certificate issued since `since`
    /// (one successful order), and each host whose last status since then is a backoff
    /// (a failed order counts against the CA's limits too). A host that failed and then
    /// succeeded within the window counts once, and a backoff without an order (the account
    /// could not be made) counts as one: close enough to keep a new issuer under the limit.
    /// The state is matched as text (`save_status` writes compact JSON), so one unreadable
    /// row cannot fail the query and keep a new leader from ordering.
    fn recent_orders(&self, since: i64) -> io::Result<Vec<i64>> {
        let rows = self.rows(
            "SELECT issued_at FROM certificates WHERE issued_at >= $1
             UNION ALL
             SELECT updated FROM cert_status
             WHERE updated >= $1 AND record LIKE '%\"state\":\"backoff\"%'",
            vec![Box::new(since)],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
