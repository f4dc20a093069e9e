//! One dedicated PostgreSQL session per replica: the issuer election and the change feed.
//!
//! - **Election**: the replica whose session holds the advisory lock [`LEADER_LOCK`] is the
//!   one that orders certificates. A session lock is released by the server when the session
//!   ends, so a leader that crashes, is killed or loses its network frees it, and the next
//!   follower to try (every [`TRY_EVERY`]) takes over.
//! - **Change feed**: the same session `LISTEN`s on the certificate and challenge channels;
//!   each notification becomes an [`Event::Cert`] or [`Event::Challenge`]. Notifications sent while a session was down are lost, so
//!   every (re)connection starts with [`Event::Connected`]: the caller reconciles in full.
//!
//! The session is not pooled: a pooled connection may be handed to someone else, and the lock
//! with it.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use super::tls::Endpoint;

use super::certs::CERT_CHANNEL;
use super::challenges::CHALLENGE_CHANNEL;

/// The advisory-lock key of the issuer election ("stsd-iss" in ASCII).
pub const LEADER_LOCK: i64 = 0x7374_7364_2d69_7373;
/// How often a follower tries the lock and a leader checks its session.
pub const TRY_EVERY: Duration = Duration::from_millis(500);
/// Time allowed to connect and for each check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnection backoff bounds.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// This replica's part in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// No session to the database (starting, or it is unreachable): nobody here orders.
    Disconnected(String),
    /// Connected; another replica holds the lock.
    Follower,
    /// This replica holds the lock: it orders, renews and prunes.
    Leader,
}

impl Role {
    /// `leader`, `follower` or `disconnected`, for the API and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Disconnected(_) => "disconnected",
            Role::Follower => "follower",
            Role::Leader => "leader",
        }
    }
}

/// What the change feed reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A session was (re)established: anything may have changed meanwhile.
    Connected,
    /// A certificate of this host was saved by some replica.
    Cert(String),
    /// A challenge of this host was published or withdrawn: read the pending ones again.
    Challenge(String),
}

/// Runs the session until `stop` turns true: connects (with backoff), tries the lock, listens,
/// and publishes the role and events. `endpoint` is the store's URL and TLS roots.
pub async fn run(
    endpoint: impl Into<Endpoint>,
    role: watch::Sender<Role>,
    events: mpsc::UnboundedSender<Event>,
    mut stop: watch::Receiver<bool>,
) {
    let endpoint = endpoint.into();
    let mut backoff = BACKOFF_FIRST;
    loop {
        let outcome = tokio::select! {
            outcome = session(&endpoint, &role, &events) => outcome,
            _ = stop.changed() => return,
        };
        let why = outcome.err().unwrap_or_else(|| "session ended".into());
        if !matches!(&*role.borrow(), Role::Disconnected(_)) {
            tracing::warn!(error = %why, "PostgreSQL session lost; not ordering until it is back");
        }
        role.send_replace(Role::Disconnected(why));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_CAP);
        if *stop.borrow() {
            return;
        }
    }
}

/// One session's life: returns when it breaks.
async fn session(
    endpoint: &Endpoint,
    role: &watch::Sender<Role>,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), String> {
    let connect = tokio_postgres::connect(&endpoint.url, endpoint.tls.clone());
    let (client, mut connection) = tokio::time::timeout(CHECK_TIMEOUT, connect)
        .await
        .map_err(|_| "no answer to connect".to_owned())?
        .map_err(|e| e.to_string())?;
    let feed = events.clone();
    let mut driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let host = n.payload().to_owned();
                    let event = if n.channel() == CHALLENGE_CHANNEL {
                        Event::Challenge(host)
                    } else {
                        Event::Cert(host)
                    };
                    let _ = feed.send(event);
                }
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
        "the server closed the session".to_owned()
    });
    client
        .batch_execute(&format!(
            "LISTEN {CERT_CHANNEL}; LISTEN {CHALLENGE_CHANNEL}"
        ))
        .await
        .map_err(|e| e.to_string())?;
    let _ = events.send(Event::Connected);
    role.send_replace(Role::Follower);
    tracing::info!("PostgreSQL session up; following until the issuer lock is free");
    let mut tick = tokio::time::interval(TRY_EVERY);
    loop {
        tokio::select! {
            ended = &mut driver => return Err(ended.unwrap_or_else(|e| e.to_string())),
            _ = tick.tick() => {}
        }
        if *role.borrow() == Role::Leader {
            // The lock lives as long as the session: a working session still holds it.
            timed(client.query_one("SELECT 1", &[])).await?;
            continue;
        }
        let row =
            timed(client.query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])).await?;
        if row.get::<_, bool>(0) {
            tracing::info!("this replica is now the issuer (leader)");
            role.send_replace(Role::Leader);
        }
    }
}

/// One check, bounded by [`CHECK_TIMEOUT`]: a session that stops answering is a lost one.
async fn timed(
    query: impl std::future::Future<Output = Result<tokio_postgres::Row, tokio_postgres::Error>>,
) -> Result<tokio_postgres::Row, String> {
    tokio::time::timeout(CHECK_TIMEOUT, query)
        .await
        .map_err(|_| format!("no answer within {} s", CHECK_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())
}
