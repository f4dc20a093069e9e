//! Cluster mode of the issuer: several replicas share one store, one of them (the leader)
//! orders, every one of them serves.
//!
//! - **Who orders**: [`Cluster::may_order`] says whether this replica holds the issuer lock.
//!   While it is false the scheduler places no order, no renewal and no ARI query. When it
//!   turns true the replica first re-reads what the previous leader stored (certificates,
//!   backoffs, the recent orders that count against `orders_per_window`), then orders.
//! - **Challenges**: the CA may validate against any replica, so the leader publishes every
//!   challenge answer through the [`ChallengeBoard`] before it tells the CA to validate, and
//!   withdraws it when the attempt ends; [`AcmeProvider::challenges_changed`] installs the
//!   pending answers on this replica (TLS-ALPN-01 certificate, HTTP-01 token, DNS-01 value).
//! - **Certificates**: [`AcmeProvider::cert_changed`] re-reads one host's stored certificate
//!   and serves it when it is newer than the one in memory; [`AcmeProvider::reconcile`] does
//!   this for every host whose stored issuance time differs, and re-reads the challenges.
//!
//! The store and the board are synchronous (and may block for as long as the store allows):
//! the three entry points are meant for a blocking thread (`spawn_blocking`), as the daemon's
//! change feed calls them; the scheduler calls the board through `spawn_blocking` itself.

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::watch;
use tokio::time::Instant;

use super::host::Now;
use super::{AcmeProvider, dns01, issue};
use crate::config::ChallengeKind;
use crate::util::hash::FastMap;

/// Pause between publishing a challenge through the board and telling the CA to validate,
/// when the board cannot say who answers it: the board returns once the answer is committed,
/// but the other replicas learn of it by a notification and a read of their own.
pub const SHARE_SETTLE: Duration = Duration::from_millis(500);
/// Longest wait for every live replica to answer a shared challenge; past it the CA is asked
/// anyway (a replica that cannot answer fails only the validations that reach it).
pub const SHARE_WAIT: Duration = Duration::from_secs(5);
/// How often the leader asks whether every replica answers.
const SHARE_POLL: Duration = Duration::from_millis(50);

/// Longest wait for the withdrawals when the scheduler stops.
const WITHDRAW_ON_STOP: Duration = Duration::from_secs(3);

/// How long a published challenge outlives the order's own timeout in the store: rows of a
/// leader that died mid-order are dropped by the next read after this.
const SHARE_MARGIN_SECS: i64 = 60;

/// One challenge in flight, as every replica needs it to answer the CA.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Shared {
    /// The host being validated.
    pub host: String,
    /// The challenge type.
    pub kind: ChallengeKind,
    /// The challenge token (the HTTP-01 path; for the others it tells orders apart).
    pub token: String,
    /// The key authorization every answer is derived from (nothing secret: the CA and
    /// anyone watching the validation see it).
    pub key_authorization: String,
}

/// Where the challenges in flight are shared between replicas (cluster mode's
/// `pgstore::challenges::PgChallenges`).
pub trait ChallengeBoard: Send + Sync {
    /// Publishes `c` until [`ChallengeBoard::withdraw`] or `expires` (Unix seconds); returns
    /// once every replica can read it.
    fn publish(&self, c: &Shared, expires: i64) -> io::Result<()>;
    /// Removes `c`.
    fn withdraw(&self, c: &Shared) -> io::Result<()>;
    /// Every challenge not expired at `now` (Unix seconds).
    fn pending(&self, now: i64) -> io::Result<Vec<Shared>>;
    /// Records that this replica answers `answered` (each still pending).
    fn acknowledge(&self, _answered: &[Shared]) -> io::Result<()> {
        Ok(())
    }
    /// How many other live replicas do not answer `c` yet; `None` when the board cannot tell
    /// (then the issuer waits [`SHARE_SETTLE`] instead).
    fn unanswered(&self, _c: &Shared) -> io::Result<Option<u64>> {
        Ok(None)
    }
}

/// What the issuer needs to take part in a cluster.
pub struct Cluster {
    /// True while this replica is the leader (the one that orders).
    pub may_order: watch::Receiver<bool>,
    /// The shared challenges.
    pub challenges: Arc<dyn ChallengeBoard>,
}

/// An answer installed here for a challenge another replica published.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Installed {
    TlsAlpn(String),
    Http(String),
    Dns(String, String),
}

/// The cluster state of a provider that joined one.
pub(super) struct Joined {
    pub(super) may_order: watch::Receiver<bool>,
    board: Arc<dyn ChallengeBoard>,
    /// Held across each board call, including its blocking part: a withdrawal that follows
    /// an abandoned publish waits for that publish to commit, so it is never left behind.
    calls: Arc<tokio::sync::Mutex<()>>,
    /// Challenges this replica published and has not withdrawn, by host.
    published: Mutex<FastMap<String, Vec<Shared>>>,
    /// Answers installed for other replicas' challenges.
    installed: Mutex<FastMap<Shared, Installed>>,
    /// Seconds a published challenge lives in the store at most.
    ttl: i64,
}

impl Joined {
    /// Publishes `c` through the board (on a blocking thread) and waits until every live
    /// replica answers it (at most [`SHARE_WAIT`]).
    pub(super) async fn share(&self, c: Shared) -> io::Result<()> {
        lock(&self.published)
            .entry(c.host.clone())
            .or_default()
            .push(c.clone());
        let guard = self.calls.clone().lock_owned().await;
        let board = self.board.clone();
        let expires = crate::util::unix_now() + self.ttl;
        let published = c.clone();
        tokio::task::spawn_blocking(move || {
            let _serialized = guard;
            board.publish(&published, expires)
        })
        .await
        .map_err(io::Error::other)??;
        self.wait_answered(c).await;
        Ok(())
    }

    /// Waits until no other live replica lacks the answer to `c`, at most [`SHARE_WAIT`].
    async fn wait_answered(&self, c: Shared) {
        let deadline = tokio::time::Instant::now() + SHARE_WAIT;
        let c = Arc::new(c);
        loop {
            let (board, asked) = (self.board.clone(), c.clone());
            let left = tokio::task::spawn_blocking(move || board.unanswered(&asked)).await;
            match left {
                Ok(Ok(None)) => return tokio::time::sleep(SHARE_SETTLE).await,
                Ok(Ok(Some(0))) => return,
                Ok(Ok(Some(n))) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(host = %c.host, challenge = ?c.kind, replicas = n, "replicas not answering the challenge yet; asking the CA anyway");
                    return;
                }
                Ok(Err(e)) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(host = %c.host, error = %e, "cannot tell which replicas answer the challenge; asking the CA anyway");
                    return;
                }
                Err(_) => return,
                _ => tokio::time::sleep(SHARE_POLL).await,
            }
        }
    }

    /// Withdraws every challenge this replica published for `host`. A failure is logged: the
    /// rows expire on their own.
    pub(super) async fn withdraw_host(&self, host: &str) {
        let Some(list) = lock(&self.published).remove(host) else {
            return;
        };
        let guard = self.calls.clone().lock_owned().await;
        let board = self.board.clone();
        let done = tokio::task::spawn_blocking(move || {
            let _serialized = guard;
            list.iter().try_for_each(|c| board.withdraw(c))
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        if let Err(e) = done {
            tracing::warn!(host, error = %e, "cannot withdraw the shared challenge; it expires on its own");
        }
    }

    /// Withdraws everything this replica still has published (its scheduler stops), for at
    /// most [`WITHDRAW_ON_STOP`]: what is left expires on its own.
    pub(super) async fn withdraw_all(&self) {
        let hosts: Vec<String> = lock(&self.published).keys().cloned().collect();
        let all = async {
            for host in &hosts {
                self.withdraw_host(host).await;
            }
        };
        if tokio::time::timeout(WITHDRAW_ON_STOP, all).await.is_err() {
            tracing::warn!(
                "shared challenges not withdrawn before stopping; they expire on their own"
            );
        }
    }

    fn own(&self) -> HashSet<Shared> {
        lock(&self.published).values().flatten().cloned().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// SHA-256 of a key authorization: the TLS-ALPN-01 acmeIdentifier (RFC 8737 §3).
pub fn tls_alpn_digest(key_authorization: &str) -> Vec<u8> {
    digest(&SHA256, key_authorization.as_bytes())
        .as_ref()
        .to_vec()
}

/// The DNS-01 TXT value of a key authorization (RFC 8555 §8.4).
pub fn dns_value(key_authorization: &str) -> String {
    URL_SAFE_NO_PAD.encode(tls_alpn_digest(key_authorization))
}

/// What [`AcmeProvider::challenges_changed`] does to the installed answers.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    remove: Vec<Shared>,
    add: Vec<Shared>,
}

/// The answers to remove and to add so that exactly the `pending` challenges this replica did
/// not publish itself (`own`: it answers those already) are installed.
fn plan<'a>(
    installed: impl Iterator<Item = &'a Shared>,
    pending: &[Shared],
    own: &HashSet<Shared>,
) -> Plan {
    let wanted: HashSet<&Shared> = pending.iter().filter(|c| !own.contains(*c)).collect();
    let installed: HashSet<&Shared> = installed.collect();
    let mut remove: Vec<Shared> = installed
        .iter()
        .filter(|c| !wanted.contains(**c))
        .map(|c| (*c).clone())
        .collect();
    let mut add: Vec<Shared> = pending
        .iter()
        .filter(|c| wanted.contains(c) && !installed.contains(c))
        .cloned()
        .collect();
    remove.sort_by(|a, b| (&a.host, &a.token).cmp(&(&b.host, &b.token)));
    add.dedup();
    Plan { remove, add }
}

/// Unix seconds of past orders as instants (an order older than this machine's monotonic
/// clock counts as just placed: it holds its slot a little longer, never shorter).
fn order_instants(times: &[i64], now: &Now) -> Vec<Instant> {
    times
        .iter()
        .map(|&t| {
            let ago = Duration::from_secs(u64::try_from(now.unix - t).unwrap_or(0));
            now.at.checked_sub(ago).unwrap_or(now.at)
        })
        .collect()
}

impl AcmeProvider {
    /// Joins a cluster: from now on orders wait for `cluster.may_order`, and challenges are
    /// shared through `cluster.challenges`. Called once, before [`AcmeProvider::run`]; a
    /// second call is ignored. Without it the provider works alone, as before.
    pub fn join_cluster(&self, cluster: Cluster) {
        let joined = Joined {
            may_order: cluster.may_order,
            board: cluster.challenges,
            calls: Arc::default(),
            published: Mutex::default(),
            installed: Mutex::default(),
            ttl: i64::try_from(self.cfg.schedule.order_timeout.as_secs())
                .unwrap_or(i64::MAX / 2)
                .saturating_add(SHARE_MARGIN_SECS),
        };
        if self.cluster.set(joined).is_err() {
            tracing::warn!("the ACME issuer joined a cluster twice; the second is ignored");
        }
    }

    pub(super) fn joined(&self) -> Option<&Joined> {
        self.cluster.get()
    }

    /// A certificate of `host` was saved (by any replica): re-reads it and serves it when it
    /// is newer than the one held here. Blocks on the store.
    pub fn cert_changed(&self, host: &str) {
        let host = host.to_ascii_lowercase();
        if self.unread.take(&host) {
            self.load_one(&host);
            return;
        }
        self.refresh(&host);
    }

    /// Re-reads `host`'s stored certificate; adopts it unless the one held is that one or
    /// was issued later. Whether it did.
    fn refresh(&self, host: &str) -> bool {
        let now = Now::current();
        let Some((cert, directory, issued_at)) = self.cached_cert(host, now.unix) else {
            return false;
        };
        let rules = self.rules();
        let mut hosts = self.lock_hosts();
        let entry = hosts
            .entry(host.to_owned())
            .or_insert_with(|| super::host::Host::new(host.trim_start_matches("mta-sts.").into()));
        // The store holds one certificate per host, the last saved: a different one with the
        // same time (whole seconds) is a save this replica has not seen yet, not an old one.
        let held = entry.cert.as_ref().is_some_and(|held| {
            entry.issued_at > issued_at
                || (entry.issued_at == issued_at && held.key.cert == cert.key.cert)
        });
        if held {
            return false;
        }
        let mut adopted = rules.adopt(entry, cert, directory, &now);
        adopted.issued_at = issued_at;
        *entry = adopted;
        if entry.wanted {
            if let Some(cert) = &entry.cert {
                self.resolver.publish_shared(host, cert.clone());
            }
            self.board.set(host, entry.status());
        }
        tracing::info!(domain = %entry.domain, host, "certificate saved by another replica now served");
        drop(hosts);
        self.wake.notify_one();
        true
    }

    /// A challenge was published or withdrawn somewhere: re-reads the pending ones and
    /// installs or removes the answers here. A store error keeps what is installed. Blocks
    /// on the store.
    pub fn challenges_changed(&self) {
        let Some(joined) = self.joined() else { return };
        let pending = match joined.board.pending(crate::util::unix_now()) {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the shared challenges; keeping the answers installed");
                return;
            }
        };
        let own = joined.own();
        let mut installed = lock(&joined.installed);
        let plan = plan(installed.keys(), &pending, &own);
        let busy: HashSet<&str> = own.iter().map(|c| c.host.as_str()).collect();
        for c in &plan.remove {
            // One this replica now publishes itself is answered by its own order.
            if let Some(answer) = installed.remove(c)
                && !own.contains(c)
            {
                self.uninstall(&answer, &busy, &pending);
            }
        }
        for c in plan.add {
            match self.install(&c) {
                Ok(answer) => {
                    tracing::debug!(host = %c.host, challenge = ?c.kind, "shared challenge answered here");
                    installed.insert(c, answer);
                }
                Err(e) => {
                    tracing::warn!(host = %c.host, challenge = ?c.kind, error = %e, "cannot answer a shared challenge");
                }
            }
        }
        let answered: Vec<Shared> = installed.keys().cloned().collect();
        drop(installed);
        if !answered.is_empty()
            && let Err(e) = joined.board.acknowledge(&answered)
        {
            tracing::warn!(error = %e, "cannot record the challenges answered here; the leader waits for them");
        }
    }

    /// Serves the local answer to `c`.
    fn install(&self, c: &Shared) -> Result<Installed, issue::IssueError> {
        Ok(match c.kind {
            ChallengeKind::TlsAlpn01 => {
                let digest = tls_alpn_digest(&c.key_authorization);
                let key = issue::challenge_certificate(&c.host, &digest)?;
                self.resolver.set_challenge(&c.host, key);
                Installed::TlsAlpn(c.host.clone())
            }
            ChallengeKind::Http01 => {
                self.tokens.insert(&c.token, &c.key_authorization);
                Installed::Http(c.token.clone())
            }
            ChallengeKind::Dns01 => {
                let zone = self
                    .cfg
                    .dns01_zone
                    .as_deref()
                    .ok_or(issue::IssueError::NoZone)?;
                let name = dns01::target(&c.host, zone);
                let value = dns_value(&c.key_authorization);
                self.dns01.insert(&name, &value);
                Installed::Dns(name, value)
            }
        })
    }

    /// Stops serving an installed answer. The resolver holds one TLS-ALPN-01 answer per host:
    /// it is left alone while this replica's own order for the host runs, or while another
    /// pending challenge of the host replaces it.
    fn uninstall(&self, answer: &Installed, busy: &HashSet<&str>, pending: &[Shared]) {
        match answer {
            Installed::TlsAlpn(host) => {
                let replaced = pending
                    .iter()
                    .any(|p| p.kind == ChallengeKind::TlsAlpn01 && &p.host == host);
                if !busy.contains(host.as_str()) && !replaced {
                    self.resolver.clear_challenge(host);
                }
            }
            Installed::Http(token) => self.tokens.remove(token),
            Installed::Dns(name, value) => self.dns01.remove(name, value),
        }
    }

    /// After a reconnect and periodically: serves every stored certificate issued later than
    /// the one held here (reading only those), and re-reads the challenges. Blocks on the
    /// store; a store error is logged and leaves everything as it was.
    pub fn reconcile(&self) {
        if let Err(e) = self.reconcile_certs() {
            tracing::warn!(error = %e, "cannot compare the stored certificates with the served ones");
        }
        self.challenges_changed();
    }

    /// The certificate part of [`AcmeProvider::reconcile`]; how many hosts changed.
    fn reconcile_certs(&self) -> io::Result<usize> {
        let versions = self.store.issued()?;
        let stale: Vec<String> = {
            let hosts = self.lock_hosts();
            versions
                .into_iter()
                .filter(|(host, at)| {
                    hosts
                        .get(host)
                        .is_none_or(|h| h.cert.is_none() || h.issued_at < *at)
                })
                .map(|(host, _)| host)
                .collect()
        };
        let mut changed = 0;
        for host in stale {
            if self.unread.take(&host) {
                self.load_one(&host);
                changed += 1;
            } else if self.refresh(&host) {
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Before this replica's first order as leader: what the previous leader stored
    /// (certificates, backoffs) and the orders it placed within the window. An error means
    /// the store cannot be read: the caller does not order yet.
    pub(super) fn take_over(&self) -> io::Result<()> {
        self.reconcile_certs()?;
        let now = Now::current();
        let statuses = self.store.statuses()?;
        {
            let mut hosts = self.lock_hosts();
            for (host, record) in &statuses {
                if let Some(h) = hosts.get_mut(host) {
                    *h = h.take_over(record, &now);
                    if h.wanted {
                        self.board.set(host, h.status());
                    }
                }
            }
        }
        let window = i64::try_from(self.cfg.schedule.window.as_secs()).unwrap_or(i64::MAX);
        let orders = self.store.recent_orders(now.unix.saturating_sub(window))?;
        let placed = order_instants(&orders, &now);
        let counted = lock(&self.limiter).seed(&placed, now.at);
        tracing::info!(
            orders_in_window = counted,
            statuses = statuses.len(),
            "this replica now orders: state of the previous leader read"
        );
        Ok(())
    }
}

/// Set once by [`AcmeProvider::join_cluster`].
pub(super) type ClusterSlot = OnceLock<Joined>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::store::{CertMeta, CertStore, FileStore, StoredCert};
    use crate::certs::{CertBoard, CertProvider, CertResolver};
    use crate::config::{AcmeConfig, Tenant};
    use crate::stats::Metrics;

    /// The board in memory (one process standing in for the replicas).
    #[derive(Default)]
    struct Memory(Mutex<Vec<Shared>>);

    impl ChallengeBoard for Memory {
        fn publish(&self, c: &Shared, _expires: i64) -> io::Result<()> {
            lock(&self.0).push(c.clone());
            Ok(())
        }
        fn withdraw(&self, c: &Shared) -> io::Result<()> {
            lock(&self.0).retain(|p| p != c);
            Ok(())
        }
        fn pending(&self, _now: i64) -> io::Result<Vec<Shared>> {
            Ok(lock(&self.0).clone())
        }
    }

    fn tenant(domain: &str) -> Arc<Tenant> {
        let yaml = format!("domain: {domain}\nmode: testing\nmx: [mx.{domain}]\n");
        let parsed = crate::config::parse_tenants(std::path::Path::new("t.yaml"), &yaml);
        Arc::new(parsed.tenants.into_iter().next().unwrap())
    }

    fn stored(host: &str, issued_at: i64) -> StoredCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
        StoredCert {
            chain_pem: params.self_signed(&key).unwrap().pem(),
            key_pem: key.serialize_pem(),
            meta: CertMeta {
                directory: AcmeConfig::default().directory,
                order_url: None,
                issued_at,
            },
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<FileStore>,
        resolver: Arc<CertResolver>,
        board: Arc<Memory>,
        provider: AcmeProvider,
    }

    /// A follower (never told to order) on a file store, with DNS-01's zone configured.
    fn follower() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = AcmeConfig::default();
        cfg.preflight.enabled = false;
        cfg.dns01_zone = Some("z.test".into());
        let store = Arc::new(FileStore::new(dir.path()));
        let resolver = Arc::new(CertResolver::new());
        let parts = (
            store.clone() as Arc<dyn CertStore>,
            resolver.clone(),
            Arc::new(CertBoard::new()),
            Arc::new(Metrics::default()),
        );
        let provider = AcmeProvider::with_inline_limit(cfg, parts, 10).unwrap();
        let board = Arc::new(Memory::default());
        let (_tx, may_order) = watch::channel(false);
        provider.join_cluster(Cluster {
            may_order,
            challenges: board.clone(),
        });
        Fixture {
            _dir: dir,
            store,
            resolver,
            board,
            provider,
        }
    }

    #[test]
    fn challenges_published_elsewhere_are_answered_here_until_withdrawn() {
        let f = follower();
        let host = "mta-sts.a.test";
        let all = [
            shared(host, ChallengeKind::TlsAlpn01, "t1"),
            shared(host, ChallengeKind::Http01, "t2"),
            shared(host, ChallengeKind::Dns01, "t3"),
        ];
        for c in &all {
            f.board.publish(c, 0).unwrap();
        }
        f.provider.challenges_changed();
        assert!(f.resolver.can_serve(host, true), "TLS-ALPN-01 answered");
        assert!(!f.resolver.can_serve(host, false), "no certificate yet");
        let http =
            super::super::http01::respond(&f.provider.tokens, "/.well-known/acme-challenge/t2");
        assert_eq!(http.status(), http::StatusCode::OK);
        let name = dns01::target(host, "z.test");
        assert_eq!(f.provider.dns01.get(&name), [dns_value("t3.thumb")]);
        // Read again with nothing changed: nothing moves.
        f.provider.challenges_changed();
        assert_eq!(lock(&f.provider.joined().unwrap().installed).len(), 3);

        f.board.withdraw(&all[1]).unwrap();
        f.provider.challenges_changed();
        let http =
            super::super::http01::respond(&f.provider.tokens, "/.well-known/acme-challenge/t2");
        assert_eq!(http.status(), http::StatusCode::NOT_FOUND);
        assert!(f.resolver.can_serve(host, true), "the others stay");
        for c in &all {
            f.board.withdraw(c).unwrap();
        }
        f.provider.challenges_changed();
        assert!(!f.resolver.can_serve(host, true));
        assert!(f.provider.dns01.get(&name).is_empty());
    }

    #[test]
    fn a_certificate_stored_elsewhere_is_served_and_only_a_newer_one_replaces_it() {
        let f = follower();
        let (a, b) = ("mta-sts.a.test", "mta-sts.b.test");
        f.provider.sync(&[tenant("a.test"), tenant("b.test")]);
        assert!(f.resolver.get(a).is_none());
        f.store.save_cert(a, &stored(a, 100)).unwrap();
        f.provider.cert_changed(a);
        let first = f
            .resolver
            .get(a)
            .expect("served once told")
            .info
            .serial
            .clone();
        // An older one (a stale replica's save) does not replace it.
        f.store.save_cert(a, &stored(a, 50)).unwrap();
        f.provider.cert_changed(a);
        assert_eq!(f.resolver.get(a).unwrap().info.serial, first);
        // Another one saved in the same second does: the store has only the last save.
        f.store.save_cert(a, &stored(a, 100)).unwrap();
        f.provider.cert_changed(a);
        let second = f.resolver.get(a).unwrap().info.serial.clone();
        assert_ne!(second, first, "replaced by the save of the same second");
        assert!(!f.provider.refresh(a), "the same one again changes nothing");
        let first = second;
        // Reconcile reads only what changed: b's new certificate, and a's (older) one is
        // not taken.
        f.store.save_cert(b, &stored(b, 100)).unwrap();
        assert_eq!(f.provider.reconcile_certs().unwrap(), 1);
        assert!(f.resolver.get(b).is_some());
        assert_eq!(f.provider.reconcile_certs().unwrap(), 0);
        f.store.save_cert(a, &stored(a, 200)).unwrap();
        assert_eq!(f.provider.reconcile_certs().unwrap(), 1);
        assert_ne!(f.resolver.get(a).unwrap().info.serial, first);
        assert!(f.provider.recent_orders().is_empty());
    }

    fn shared(host: &str, kind: ChallengeKind, token: &str) -> Shared {
        Shared {
            host: host.into(),
            kind,
            token: token.into(),
            key_authorization: format!("{token}.thumb"),
        }
    }

    #[test]
    fn answers_derive_from_the_key_authorization_as_rfc_8555_and_8737_say() {
        // RFC 8555 §8.4 example-like check: base64url (no padding) of SHA-256.
        let ka = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI";
        let d = tls_alpn_digest(ka);
        assert_eq!(d.len(), 32);
        assert_eq!(dns_value(ka), URL_SAFE_NO_PAD.encode(&d));
        assert!(!dns_value(ka).contains('='));
        assert_ne!(tls_alpn_digest("a.b"), tls_alpn_digest("a.c"));
    }

    #[test]
    fn plan_installs_what_others_publish_and_removes_what_they_withdrew() {
        let a = shared("mta-sts.a.test", ChallengeKind::TlsAlpn01, "t1");
        let b = shared("mta-sts.b.test", ChallengeKind::Http01, "t2");
        let mine = shared("mta-sts.c.test", ChallengeKind::Http01, "t3");
        let own: HashSet<Shared> = [mine.clone()].into();
        // Nothing installed: the others' challenges are added, never this replica's own.
        let p = plan(
            std::iter::empty(),
            &[a.clone(), b.clone(), mine.clone()],
            &own,
        );
        assert_eq!(p.add, [a.clone(), b.clone()]);
        assert!(p.remove.is_empty());
        // `a` withdrawn: removed; `b` stays installed and is not added twice.
        let installed = [a.clone(), b.clone()];
        let p = plan(installed.iter(), std::slice::from_ref(&b), &own);
        assert_eq!(p.remove, std::slice::from_ref(&a));
        assert!(p.add.is_empty());
        // Everything withdrawn (or expired): everything removed.
        let p = plan(installed.iter(), &[], &HashSet::new());
        assert_eq!(p.remove.len(), 2);
        // A challenge this replica publishes itself is not kept as another's.
        let p = plan(
            installed.iter(),
            std::slice::from_ref(&b),
            &[b.clone()].into(),
        );
        assert_eq!(p.remove, [a, b]);
        assert!(p.add.is_empty());
    }

    #[test]
    fn past_orders_map_to_past_instants() {
        let now = Now::current();
        let at = order_instants(&[now.unix - 30, now.unix, now.unix + 5], &now);
        assert_eq!(now.at - at[0], Duration::from_secs(30));
        assert_eq!(at[1], now.at);
        // A time ahead of this clock counts as now.
        assert_eq!(at[2], now.at);
    }
}
