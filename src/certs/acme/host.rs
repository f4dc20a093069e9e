//! What the scheduler knows about one host, and how the outcome of an attempt changes it.
//!
//! [`Rules::next`] is the whole host lifecycle as a pure function of the host, the outcome and
//! the moment: the scheduler performs the I/O (preflight, ARI, order, store), then applies
//! `next`. Clocks and randomness come in through [`Now`], so every edge is tested without a CA.
//!
//! The host is the one owner of its certificate state: the board entry ([`Host::status`]) and
//! the stored `status.json` ([`Host::record`]) are both derived from it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::issue::IssueError;
use super::pace::{backoff, renew_at, unix_of};
use super::preflight::PreflightError;
use crate::certs::store::StatusRecord;
use crate::certs::{CertEntry, CertState, CertStatus};
use crate::config::acme::Schedule;

/// Name in logs, metrics and [`CertStatus::provider`].
pub(super) const NAME: &str = "acme";
/// Least time between two ARI queries for one certificate, whatever the CA suggests.
pub(super) const ARI_MIN_INTERVAL: Duration = Duration::from_secs(3600);
/// Least wait before the next look at a host, so a host that is due never spins the loop.
const SOON: Duration = Duration::from_millis(10);

/// What the scheduler knows about one host.
#[derive(Clone, Debug)]
pub(super) struct Host {
    /// The tenant's domain (or the host itself for non-tenant hosts), for logs.
    pub domain: String,
    /// In the current tenant set.
    pub wanted: bool,
    /// The newest certificate (also published while wanted).
    pub cert: Option<Arc<CertEntry>>,
    /// Directory of the CA that issued `cert`.
    pub cert_directory: String,
    /// When `cert` was stored (`CertMeta::issued_at`, Unix seconds): in a cluster, a stored
    /// certificate issued later than this one replaces it.
    pub issued_at: i64,
    /// When `cert` should be replaced, Unix seconds (fraction of the lifetime, or ARI).
    pub renew_due: i64,
    /// When the scheduler next looks at this host.
    pub due: Instant,
    /// Consecutive failures.
    pub failures: u32,
    /// An attempt is running.
    pub in_flight: bool,
    /// What the board shows.
    pub state: CertState,
    /// The last error, with the CA's or the preflight's detail.
    pub last_error: Option<String>,
    /// The last attempt found the CA had forgotten the account and was retried at once with a
    /// new one; a second loss in a row backs off.
    pub account_retry: bool,
}

impl Host {
    /// A host with nothing known yet, due at once.
    pub fn new(domain: String) -> Self {
        Host {
            domain,
            wanted: false,
            cert: None,
            cert_directory: String::new(),
            issued_at: 0,
            renew_due: 0,
            due: Instant::now(),
            failures: 0,
            in_flight: false,
            state: CertState::Pending,
            last_error: None,
            account_retry: false,
        }
    }

    /// Whether the next attempt would place an order (rather than only ask ARI).
    pub fn needs_order(&self, now: i64) -> bool {
        match &self.cert {
            None => true,
            Some(c) => c.info.not_after <= now || self.renew_due <= now,
        }
    }

    /// Carries a stored backoff over a restart: a crash loop would otherwise hammer the CA.
    pub fn resume(&self, record: &StatusRecord, now: &Now) -> Host {
        let mut h = self.clone();
        if record.state == CertState::Backoff
            && let Some(next) = record.next_attempt
        {
            h.due = h.due.max(now.instant_at(next));
            h.last_error = record.last_error.clone();
        }
        h
    }

    /// The host as the previous issuer of a cluster left it (`record`, stored by it): a
    /// backoff or a preflight re-check it had scheduled still holds, so a change of leader
    /// does not send the CA (or the DNS) an attempt early.
    pub fn take_over(&self, record: &StatusRecord, now: &Now) -> Host {
        let mut h = self.clone();
        if matches!(record.state, CertState::Backoff | CertState::DnsNotReady)
            && let Some(next) = record.next_attempt
            && next > now.unix
        {
            h.due = h.due.max(now.instant_at(next));
            h.state = record.state;
            h.last_error = record.last_error.clone();
        }
        h
    }

    /// The board entry of this host.
    pub fn status(&self) -> CertStatus {
        let mut status = CertStatus::new(self.state, NAME);
        status.cert = self.cert.as_ref().map(|c| c.info.clone());
        status.last_error = self.last_error.clone();
        status.next_attempt = Some(unix_of(self.due));
        status
    }

    /// The stored status of this host, read back after a restart and by `mta-stsd certs`.
    pub fn record(&self) -> StatusRecord {
        StatusRecord {
            state: self.state,
            last_error: self.last_error.clone(),
            next_attempt: Some(unix_of(self.due)),
            updated: crate::util::unix_now(),
        }
    }
}

/// How an attempt ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// A new certificate, already stored.
    Issued {
        /// The certificate.
        cert: Arc<CertEntry>,
        /// Its order, for logs.
        order_url: String,
        /// When it was stored (`CertMeta::issued_at`).
        issued_at: i64,
    },
    /// This replica stopped being a cluster's issuer while the attempt ran, and dropped it:
    /// the host is looked at again once it leads again.
    Abandoned,
    /// The preflight found the host pointing elsewhere; no order was placed.
    DnsNotReady(PreflightError),
    /// Our own order limit is used up until then; no order was placed.
    RateLimited(Instant),
    /// The attempt failed; wait at least until the CA's `Retry-After`, if it sent one.
    Failed {
        /// What went wrong.
        error: IssueError,
        /// The CA's `Retry-After`.
        retry_after: Option<SystemTime>,
    },
    /// ARI suggested a renewal window (Unix seconds) and when to ask again.
    AriWindow {
        /// Start of the window.
        start: i64,
        /// End of the window.
        end: i64,
        /// The CA's `Retry-After` for the next query.
        retry: Duration,
    },
    /// ARI (or nothing) said the certificate is not due yet.
    NotDue,
    /// The CA could not be asked about renewal; the certificate stays valid, ask later.
    AriUnavailable,
}

impl Outcome {
    /// The `result` label of `mta_stsd_acme_orders_total` when the outcome ends an order. A
    /// forgotten account ends none: the CA refused the request before any order existed.
    pub fn order_result(&self) -> Option<&'static str> {
        match self {
            Outcome::Issued { .. } => Some("success"),
            Outcome::Failed { error, .. } if error.account_gone() => None,
            Outcome::Failed { .. } => Some("failure"),
            _ => None,
        }
    }
}

/// The moment a transition happens, in the clocks the scheduler uses, with one random draw.
#[derive(Clone, Copy, Debug)]
pub(super) struct Now {
    /// Monotonic time, for `due`.
    pub at: Instant,
    /// Unix seconds, for certificate times and ARI windows.
    pub unix: i64,
    /// Wall-clock time, for the CA's `Retry-After`.
    pub wall: SystemTime,
    /// Uniform in `[0, 1)`: spreads backoffs and ARI picks so hosts do not move in step.
    pub draw: f64,
}

impl Now {
    /// The current moment and a fresh draw.
    pub fn current() -> Self {
        Now {
            at: Instant::now(),
            unix: crate::util::unix_now(),
            wall: SystemTime::now(),
            draw: rand::random(),
        }
    }

    /// The instant of Unix time `unix` (the past maps to now).
    pub fn instant_at(&self, unix: i64) -> Instant {
        self.at + Duration::from_secs(u64::try_from(unix - self.unix).unwrap_or(0))
    }
}

/// What the transitions depend on besides the host: the configuration and whether the CA may
/// offer ARI.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rules<'a> {
    /// The configured CA; a certificate from another one is replaced at once.
    pub directory: &'a str,
    /// Backoff and renewal fraction.
    pub schedule: &'a Schedule,
    /// Wait before the preflight looks at a host again.
    pub dns_recheck: Duration,
    /// ARI may be offered: a new certificate is looked at soon so the CA can be asked.
    pub ari: bool,
}

impl Rules<'_> {
    /// `host` with `cert` (from `directory`) as its current certificate and its renewal
    /// scheduled.
    pub fn adopt(&self, host: &Host, cert: Arc<CertEntry>, directory: String, now: &Now) -> Host {
        let mut h = host.clone();
        let info = &cert.info;
        h.renew_due = if directory == self.directory {
            renew_at(
                info.not_before,
                info.not_after,
                self.schedule.renew_fraction,
            )
        } else {
            // Issued by another CA (e.g. staging before production): replace it now.
            0
        };
        h.due = if self.ari {
            now.at
        } else {
            now.instant_at(h.renew_due)
        };
        h.cert_directory = directory;
        h.cert = Some(cert);
        h.state = CertState::Valid;
        h.failures = 0;
        h.last_error = None;
        h
    }

    /// The host after an attempt ended with `outcome`.
    pub fn next(&self, host: &Host, outcome: &Outcome, now: &Now) -> Host {
        let mut h = host.clone();
        h.in_flight = false;
        let retried = std::mem::take(&mut h.account_retry);
        match outcome {
            Outcome::Issued {
                cert, issued_at, ..
            } => {
                let mut h = self.adopt(&h, cert.clone(), self.directory.to_owned(), now);
                h.issued_at = *issued_at;
                return h;
            }
            Outcome::Abandoned => {
                h.state = if h.cert.is_some() {
                    CertState::Valid
                } else {
                    CertState::Pending
                };
                h.due = now.at;
            }
            Outcome::DnsNotReady(why) => {
                h.state = CertState::DnsNotReady;
                h.last_error = Some(why.to_string());
                h.due = now.at + self.dns_recheck;
            }
            Outcome::RateLimited(at) => h.due = *at,
            Outcome::Failed { error, .. } if error.account_gone() && !retried => {
                // Not the tenant's failure: the scheduler makes a new account, and the order
                // goes again now rather than after a backoff.
                h.account_retry = true;
                h.due = now.at;
                h.last_error = Some(error.to_string());
            }
            Outcome::Failed { error, retry_after } => {
                self.back_off(&mut h, error, *retry_after, now);
            }
            Outcome::AriWindow { start, end, retry } => {
                let end = (*end).max(*start);
                let pick = start + ((end - start) as f64 * now.draw) as i64;
                h.renew_due = pick;
                h.due = if pick <= now.unix {
                    now.at + SOON
                } else {
                    now.instant_at(pick)
                        .min(now.at + (*retry).max(ARI_MIN_INTERVAL))
                };
            }
            Outcome::AriUnavailable => {
                h.due = now.instant_at(h.renew_due).min(now.at + ARI_MIN_INTERVAL);
            }
            Outcome::NotDue => h.due = now.instant_at(h.renew_due).max(now.at + SOON),
        }
        h
    }

    /// A failed attempt: one more failure, and a backoff (exponential with jitter) or the
    /// CA's later `Retry-After`.
    fn back_off(
        &self,
        h: &mut Host,
        error: &IssueError,
        retry_after: Option<SystemTime>,
        now: &Now,
    ) {
        h.failures = h.failures.saturating_add(1);
        let delay = backoff(
            self.schedule.backoff_base,
            self.schedule.backoff_cap,
            h.failures,
            now.draw,
        );
        let mut due = now.at + delay;
        if let Some(at) = retry_after
            && let Ok(ahead) = at.duration_since(now.wall)
        {
            due = due.max(now.at + ahead);
        }
        h.due = due;
        h.state = CertState::Backoff;
        h.last_error = Some(error.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::acme::Fraction;
    use rcgen::{CertificateParams, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    const DIRECTORY: &str = "https://ca.test/dir";
    const DAY: i64 = 86_400;

    fn schedule() -> Schedule {
        Schedule {
            max_concurrent: 4,
            orders_per_window: 10,
            window: Duration::from_secs(3600),
            backoff_base: Duration::from_secs(60),
            backoff_cap: Duration::from_secs(3600),
            renew_fraction: Fraction(500_000_000),
            order_timeout: Duration::from_secs(60),
        }
    }

    fn rules(schedule: &Schedule, ari: bool) -> Rules<'_> {
        Rules {
            directory: DIRECTORY,
            schedule,
            dns_recheck: Duration::from_secs(300),
            ari,
        }
    }

    /// A fixed moment; `draw` 1.0 makes the backoff exactly `base · 2^(n-1)`.
    fn now() -> Now {
        Now {
            at: Instant::now(),
            unix: 1_000_000_000,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000),
            draw: 1.0,
        }
    }

    /// A certificate valid from `from` to `to` (Unix seconds).
    fn cert(from: i64, to: i64) -> Arc<CertEntry> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["mta-sts.a.test".to_owned()]).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
        let der = params.self_signed(&key).unwrap().der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Arc::new(CertEntry::new(vec![der], key).unwrap())
    }

    fn pending() -> Host {
        let mut h = Host::new("a.test".into());
        h.wanted = true;
        h.in_flight = true;
        h
    }

    /// A host holding a certificate issued a day ago for 90 days, renewal due at half.
    fn valid(now: &Now) -> Host {
        let s = schedule();
        let mut h = rules(&s, false).adopt(
            &pending(),
            cert(now.unix - DAY, now.unix + 89 * DAY),
            DIRECTORY.into(),
            now,
        );
        h.in_flight = true;
        h
    }

    /// An error from the CA with its problem type and detail.
    fn problem(kind: &str, detail: &str) -> IssueError {
        IssueError::Ca(instant_acme::Error::Api(instant_acme::Problem {
            r#type: Some(format!("urn:ietf:params:acme:error:{kind}")),
            detail: Some(detail.to_owned()),
            status: Some(400),
            subproblems: Vec::new(),
        }))
    }

    fn failed(kind: &str, retry_after: Option<SystemTime>) -> Outcome {
        Outcome::Failed {
            error: problem(kind, "try later"),
            retry_after,
        }
    }

    #[test]
    fn success_makes_the_host_valid_and_schedules_renewal() {
        let s = schedule();
        let now = now();
        let mut h = pending();
        h.failures = 3;
        h.last_error = Some("earlier".into());
        let c = cert(now.unix - DAY, now.unix + 89 * DAY);
        let issued = Outcome::Issued {
            cert: c.clone(),
            order_url: "https://ca.test/order/1".into(),
            issued_at: now.unix - 5,
        };
        let after = rules(&s, false).next(&h, &issued, &now);
        assert_eq!(after.state, CertState::Valid);
        assert!(Arc::ptr_eq(after.cert.as_ref().unwrap(), &c));
        assert_eq!(after.cert_directory, DIRECTORY);
        assert_eq!(after.issued_at, now.unix - 5);
        assert_eq!(after.failures, 0);
        assert_eq!(after.last_error, None);
        assert!(!after.in_flight);
        assert_eq!(after.renew_due, now.unix + 44 * DAY);
        assert_eq!(after.due, now.at + Duration::from_secs(44 * DAY as u64));
        assert!(!after.needs_order(now.unix));
        assert_eq!(issued.order_result(), Some("success"));

        // With ARI possibly offered the scheduler looks again at once, to ask the CA.
        let after = rules(&s, true).next(&h, &issued, &now);
        assert_eq!(after.due, now.at);
        assert_eq!(after.renew_due, now.unix + 44 * DAY);
    }

    #[test]
    fn a_certificate_from_another_ca_is_due_at_once() {
        let s = schedule();
        let now = now();
        let c = cert(now.unix - DAY, now.unix + 89 * DAY);
        let h = rules(&s, false).adopt(&pending(), c, "https://staging.test/dir".into(), &now);
        assert_eq!(h.renew_due, 0);
        assert_eq!(h.due, now.at);
        assert!(h.needs_order(now.unix));
    }

    #[test]
    fn failure_without_retry_after_backs_off_exponentially() {
        let s = schedule();
        let r = rules(&s, true);
        let now = now();
        let outcome = failed("serverInternal", None);
        assert_eq!(outcome.order_result(), Some("failure"));
        let once = r.next(&pending(), &outcome, &now);
        assert_eq!(once.state, CertState::Backoff);
        assert_eq!(once.failures, 1);
        assert_eq!(once.due, now.at + Duration::from_secs(60));
        assert_eq!(
            once.last_error.as_deref(),
            Some("serverInternal: try later")
        );
        assert!(!once.in_flight);
        let twice = r.next(&once, &outcome, &now);
        assert_eq!(twice.failures, 2);
        assert_eq!(twice.due, now.at + Duration::from_secs(120));
        // Jitter shortens the wait to at most half, never below.
        let jittered = r.next(&pending(), &outcome, &Now { draw: 0.0, ..now });
        assert_eq!(jittered.due, now.at + Duration::from_secs(30));
    }

    #[test]
    fn failure_waits_for_a_later_retry_after() {
        let s = schedule();
        let r = rules(&s, true);
        let now = now();
        let later = now.wall + Duration::from_secs(900);
        let h = r.next(&pending(), &failed("rateLimited", Some(later)), &now);
        assert_eq!(h.due, now.at + Duration::from_secs(900));
        assert_eq!(h.state, CertState::Backoff);
        // A Retry-After shorter than the backoff, or already past, does not shorten it.
        let sooner = now.wall + Duration::from_secs(5);
        let h = r.next(&pending(), &failed("x", Some(sooner)), &now);
        assert_eq!(h.due, now.at + Duration::from_secs(60));
        let past = now.wall - Duration::from_secs(5);
        let h = r.next(&pending(), &failed("x", Some(past)), &now);
        assert_eq!(h.due, now.at + Duration::from_secs(60));
    }

    #[test]
    fn failure_keeps_the_served_certificate() {
        let s = schedule();
        let now = now();
        let h = valid(&now);
        let after = rules(&s, true).next(&h, &failed("x", None), &now);
        assert!(after.cert.is_some());
        assert_eq!(after.renew_due, h.renew_due);
        assert_eq!(after.state, CertState::Backoff);
    }

    #[test]
    fn account_gone_retries_at_once_without_counting_a_failure() {
        let s = schedule();
        let r = rules(&s, true);
        let now = now();
        let error = problem("accountDoesNotExist", "no such account");
        assert!(error.account_gone());
        assert!(!IssueError::Timeout.account_gone());
        assert!(!problem("unauthorized", "no").account_gone());
        let gone = || Outcome::Failed {
            error: problem("accountDoesNotExist", "no such account"),
            retry_after: None,
        };
        // The CA forgot the account (a reset CA): a new one is made and the order goes again
        // at once; the tenant did nothing wrong, and no order reached the CA.
        assert_eq!(gone().order_result(), None);
        let mut before = pending();
        before.failures = 2;
        let h = r.next(&before, &gone(), &now);
        assert_eq!(h.due, now.at);
        assert_eq!(h.failures, 2);
        assert_ne!(h.state, CertState::Backoff);
        assert!(!h.in_flight);
        assert_eq!(
            h.last_error.as_deref(),
            Some("accountDoesNotExist: no such account")
        );
        // A fresh account refused again right away is the CA's problem: back off as usual.
        let mut again = h.clone();
        again.in_flight = true;
        let h = r.next(&again, &gone(), &now);
        assert_eq!(h.state, CertState::Backoff);
        assert_eq!(h.failures, 3);
        assert_eq!(h.due, now.at + Duration::from_secs(240));
        // Once anything else happened in between, a later loss is retried at once again.
        let other = r.next(&h, &failed("serverInternal", None), &now);
        let h = r.next(&other, &gone(), &now);
        assert_eq!(h.due, now.at);
    }

    #[test]
    fn dns_not_ready_rechecks_without_counting_a_failure() {
        let s = schedule();
        let now = now();
        let why = PreflightError::Elsewhere {
            host: "mta-sts.a.test".into(),
            found: vec!["192.0.2.7".into()],
            wanted: "one of [127.0.0.1]".into(),
        };
        let outcome = Outcome::DnsNotReady(why);
        assert_eq!(outcome.order_result(), None);
        let h = rules(&s, true).next(&pending(), &outcome, &now);
        assert_eq!(h.state, CertState::DnsNotReady);
        assert_eq!(h.failures, 0);
        assert_eq!(h.due, now.at + Duration::from_secs(300));
        assert_eq!(
            h.last_error.as_deref(),
            Some("mta-sts.a.test resolves to 192.0.2.7 instead of one of [127.0.0.1]")
        );
        let nothing = PreflightError::Elsewhere {
            host: "mta-sts.a.test".into(),
            found: Vec::new(),
            wanted: "a CNAME to sts.op.test".into(),
        };
        assert_eq!(
            nothing.to_string(),
            "mta-sts.a.test does not resolve; it needs a CNAME to sts.op.test"
        );
    }

    #[test]
    fn rate_limited_waits_for_the_window_only() {
        let s = schedule();
        let now = now();
        let free = now.at + Duration::from_secs(42);
        let outcome = Outcome::RateLimited(free);
        assert_eq!(outcome.order_result(), None);
        let h = rules(&s, true).next(&pending(), &outcome, &now);
        assert_eq!(h.due, free);
        assert_eq!(h.state, CertState::Pending);
        assert_eq!(h.failures, 0);
        assert!(!h.in_flight);
    }

    #[test]
    fn ari_window_in_the_future_is_picked_and_asked_again_within_the_interval() {
        let s = schedule();
        let r = rules(&s, true);
        let now = Now { draw: 0.5, ..now() };
        let h = valid(&now);
        // A window days away: renew inside it, but ask the CA again after the least interval.
        let far = Outcome::AriWindow {
            start: now.unix + 10 * DAY,
            end: now.unix + 12 * DAY,
            retry: Duration::from_secs(60),
        };
        assert_eq!(far.order_result(), None);
        let after = r.next(&h, &far, &now);
        assert_eq!(after.renew_due, now.unix + 11 * DAY);
        assert_eq!(after.due, now.at + ARI_MIN_INTERVAL);
        assert!(!after.needs_order(now.unix));
        // A window within the CA's retry time: look again when it opens.
        let near = Outcome::AriWindow {
            start: now.unix + 600,
            end: now.unix + 600,
            retry: Duration::from_secs(6 * 3600),
        };
        let after = r.next(&h, &near, &now);
        assert_eq!(after.renew_due, now.unix + 600);
        assert_eq!(after.due, now.at + Duration::from_secs(600));
        // A window given backwards counts as its start.
        let backwards = Outcome::AriWindow {
            start: now.unix + 600,
            end: now.unix + 300,
            retry: Duration::ZERO,
        };
        assert_eq!(r.next(&h, &backwards, &now).renew_due, now.unix + 600);
    }

    #[test]
    fn ari_window_already_open_orders_soon() {
        let s = schedule();
        let now = now();
        let open = Outcome::AriWindow {
            start: now.unix - 100,
            end: now.unix - 10,
            retry: Duration::from_secs(3600),
        };
        let after = rules(&s, true).next(&valid(&now), &open, &now);
        assert_eq!(after.renew_due, now.unix - 10);
        assert_eq!(after.due, now.at + SOON);
        assert!(after.needs_order(now.unix));
        assert_eq!(after.state, CertState::Valid);
    }

    #[test]
    fn ari_unavailable_asks_again_within_the_interval() {
        let s = schedule();
        let now = now();
        let h = valid(&now);
        let after = rules(&s, true).next(&h, &Outcome::AriUnavailable, &now);
        assert_eq!(after.due, now.at + ARI_MIN_INTERVAL);
        assert_eq!(after.renew_due, h.renew_due);
        // Renewal due sooner than the interval: look then.
        let mut soon = h.clone();
        soon.renew_due = now.unix + 60;
        let after = rules(&s, true).next(&soon, &Outcome::AriUnavailable, &now);
        assert_eq!(after.due, now.at + Duration::from_secs(60));
    }

    #[test]
    fn not_due_looks_again_at_renewal_time() {
        let s = schedule();
        let now = now();
        let h = valid(&now);
        let after = rules(&s, false).next(&h, &Outcome::NotDue, &now);
        assert_eq!(after.due, now.instant_at(h.renew_due));
        assert_eq!(after.state, CertState::Valid);
        assert!(!after.in_flight);
        // Never sooner than a moment from now.
        let mut past = h.clone();
        past.renew_due = now.unix - 5;
        let after = rules(&s, false).next(&past, &Outcome::NotDue, &now);
        assert_eq!(after.due, now.at + SOON);
    }

    #[test]
    fn a_stored_backoff_survives_a_restart() {
        let now = now();
        let record = StatusRecord {
            state: CertState::Backoff,
            last_error: Some("connection refused".into()),
            next_attempt: Some(now.unix + 120),
            updated: now.unix - 10,
        };
        let h = Host::new("a.test".into());
        let resumed = h.resume(&record, &now);
        assert_eq!(resumed.due, now.at + Duration::from_secs(120));
        assert_eq!(resumed.last_error.as_deref(), Some("connection refused"));
        // Any other stored state leaves the host due as it was.
        let valid = StatusRecord {
            state: CertState::Valid,
            ..record
        };
        let resumed = h.resume(&valid, &now);
        assert_eq!(resumed.due, h.due);
        assert_eq!(resumed.last_error, None);
    }

    #[test]
    fn a_new_issuer_keeps_the_backoff_and_recheck_of_the_previous_one() {
        let now = now();
        let record = |state, next: i64| StatusRecord {
            state,
            last_error: Some("refused".into()),
            next_attempt: Some(now.unix + next),
            updated: now.unix - 10,
        };
        let h = Host::new("a.test".into());
        let backoff = h.take_over(&record(CertState::Backoff, 120), &now);
        assert_eq!(backoff.due, now.at + Duration::from_secs(120));
        assert_eq!(backoff.state, CertState::Backoff);
        assert_eq!(backoff.last_error.as_deref(), Some("refused"));
        let dns = h.take_over(&record(CertState::DnsNotReady, 30), &now);
        assert_eq!(dns.due, now.at + Duration::from_secs(30));
        assert_eq!(dns.state, CertState::DnsNotReady);
        // A wait already over, or a state that schedules nothing, changes nothing.
        for r in [
            record(CertState::Backoff, -5),
            record(CertState::Renewing, 60),
        ] {
            let same = h.take_over(&r, &now);
            assert_eq!((same.due, same.state), (h.due, h.state));
        }
    }

    #[test]
    fn an_abandoned_attempt_leaves_the_host_as_it_was_and_due() {
        let s = schedule();
        let now = now();
        let mut h = valid(&now);
        h.state = CertState::Renewing;
        let after = rules(&s, true).next(&h, &Outcome::Abandoned, &now);
        assert_eq!(after.state, CertState::Valid);
        assert_eq!(after.failures, 0);
        assert_eq!(after.due, now.at);
        assert!(!after.in_flight);
        assert!(after.cert.is_some());
        assert_eq!(Outcome::Abandoned.order_result(), None);
        let fresh = rules(&s, true).next(&pending(), &Outcome::Abandoned, &now);
        assert_eq!(fresh.state, CertState::Pending);
    }

    #[test]
    fn board_and_stored_status_are_views_of_the_host() {
        let now = now();
        let mut h = valid(&now);
        h.last_error = Some("x".into());
        let status = h.status();
        let record = h.record();
        assert_eq!(status.state, record.state);
        assert_eq!(status.last_error, record.last_error);
        assert_eq!(status.provider, NAME);
        assert_eq!(status.cert, h.cert.as_ref().map(|c| c.info.clone()));
        assert!(status.next_attempt.is_some() && record.next_attempt.is_some());
    }
}
