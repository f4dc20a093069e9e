//! The ACME challenges in flight, shared by every replica: the leader publishes one before
//! telling the CA to validate, and every replica answers it (the CA may connect to any of
//! them behind the load balancer). Each change is announced on [`CHALLENGE_CHANNEL`]; a
//! replica reads [`ChallengeBoard::pending`] at start, on each announcement and after a
//! reconnect. The rows are the issuer's [`Shared`] challenges.

use std::io;
use std::sync::Arc;

use super::certs::io_error;
use super::{Db, DbError};
use crate::certs::acme::cluster::ChallengeBoard;
pub use crate::certs::acme::cluster::Shared;
use crate::config::ChallengeKind;

/// The notification channel of challenge changes; the payload is the host.
pub const CHALLENGE_CHANNEL: &str = "mta_stsd_challenge";

fn kind_name(kind: ChallengeKind) -> &'static str {
    match kind {
        ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        ChallengeKind::Http01 => "http-01",
        ChallengeKind::Dns01 => "dns-01",
    }
}

fn kind_of(name: &str) -> Result<ChallengeKind, DbError> {
    match name {
        "tls-alpn-01" => Ok(ChallengeKind::TlsAlpn01),
        "http-01" => Ok(ChallengeKind::Http01),
        "dns-01" => Ok(ChallengeKind::Dns01),
        other => Err(DbError::Schema(format!("unknown challenge type {other:?}"))),
    }
}

/// The challenges table.
#[derive(Debug, Clone)]
pub struct PgChallenges {
    db: Arc<Db>,
}

impl PgChallenges {
    /// The challenges of the database `db` is connected to.
    pub fn new(db: Arc<Db>) -> Self {
        PgChallenges { db }
    }
}

impl ChallengeBoard for PgChallenges {
    /// Publishes `c` until [`ChallengeBoard::withdraw`] or `expires` (Unix seconds), then
    /// announces it; returns after the commit, so every replica can read it once it returns.
    fn publish(&self, c: &Shared, expires: i64) -> io::Result<()> {
        let c = c.clone();
        self.db
            .run(move |pool| async move {
                let mut client = pool.get().await?;
                let tx = client.transaction().await?;
                tx.execute(
                    "INSERT INTO acme_challenges (host, kind, token, key_authorization, expires)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (host, kind, token) DO UPDATE SET key_authorization = $4,
                    expires = $5",
                    &[
                        &c.host,
                        &kind_name(c.kind),
                        &c.token,
                        &c.key_authorization,
                        &expires,
                    ],
                )
                .await?;
                tx.execute("SELECT pg_notify($1, $2)", &[&CHALLENGE_CHANNEL, &c.host])
                    .await?;
                tx.commit().await?;
                Ok(())
            })
            .map_err(io_error)
    }

    /// Removes `c` (the order is done, whatever the outcome) and announces it.
    fn withdraw(&self, c: &Shared) -> io::Result<()> {
        let c = c.clone();
        self.db
            .run(move |pool| async move {
                let mut client = pool.get().await?;
                let tx = client.transaction().await?;
                tx.execute(
                    "DELETE FROM acme_challenges WHERE host = $1 AND kind = $2 AND token = $3",
                    &[&c.host, &kind_name(c.kind), &c.token],
                )
                .await?;
                tx.execute("SELECT pg_notify($1, $2)", &[&CHALLENGE_CHANNEL, &c.host])
                    .await?;
                tx.commit().await?;
                Ok(())
            })
            .map_err(io_error)
    }

    /// Every challenge not expired at `now`; expired rows are deleted on the way.
    fn pending(&self, now: i64) -> io::Result<Vec<Shared>> {
        let rows = self
            .db
            .run(move |pool| async move {
                let client = pool.get().await?;
                client
                    .execute("DELETE FROM acme_challenges WHERE expires <= $1", &[&now])
                    .await?;
                Ok(client
                    .query(
                        "SELECT host, kind, token, key_authorization FROM acme_challenges
                     ORDER BY host, kind, token",
                        &[],
                    )
                    .await?)
            })
            .map_err(io_error)?;
        rows.iter()
            .map(|r| {
                Ok(Shared {
                    host: r.get(0),
                    kind: kind_of(r.get(1))?,
                    token: r.get(2),
                    key_authorization: r.get(3),
                })
            })
            .collect::<Result<_, DbError>>()
            .map_err(io_error)
    }
}
