//! The PostgreSQL report store (cluster mode) against a real PostgreSQL: it answers every
//! question as the SQLite store does, decides duplicates across replicas under concurrency,
//! migrates once and refuses a newer schema, and reports an outage as temporary (503); the
//! certificate store keeps what the file store keeps, shared by replicas, and announces saves.

use std::sync::Arc;
use std::time::Duration;

use mta_stsd::certs::CertState;
use mta_stsd::certs::store::{CertMeta, CertStore, FileStore, StatusRecord, StoredCert};
use mta_stsd::pgstore::certs::{CERT_CHANNEL, PgCertStore};
use mta_stsd::pgstore::reports::PgReportStore;
use mta_stsd::pgstore::session::{self, Event, Role};
use mta_stsd::pgstore::{Db, DbError, known_version};
use mta_stsd::tlsrpt::{InsertOutcome, Report, ReportStore, Source, SqliteStore, StoredReport};
use time::OffsetDateTime;
use time::macros::{date, datetime};

use crate::common::{Postgres, eventually, report_json};

const RECEIVED: OffsetDateTime = datetime!(2026-11-20 06:00 UTC);

fn stored(tenant: &str, json: Vec<u8>, received: OffsetDateTime) -> StoredReport {
    StoredReport {
        tenant: tenant.into(),
        source: Source::Https,
        received,
        report: Report::from_json(&json).unwrap(),
        raw_json: json,
        signing_domain: None,
        submitter_mismatch: false,
    }
}

/// A run of inserts covering every outcome, by two senders, for two tenants.
fn reports() -> Vec<StoredReport> {
    let a = "a.example";
    let b = "b.example";
    let day = date!(2026 - 11 - 18);
    let fail = [("certificate-expired", "mx1.a.example", 3)];
    vec![
        stored(a, report_json("Org One", "r1", a, day, 90, &fail), RECEIVED),
        // A retry: the same report again.
        stored(a, report_json("Org One", "r1", a, day, 90, &fail), RECEIVED),
        // The same key with other content: both kept, both flagged.
        stored(a, report_json("Org One", "r1", a, day, 91, &[]), RECEIVED),
        stored(
            a,
            report_json("Org Two", "r1", a, day.next_day().unwrap(), 40, &[]),
            RECEIVED,
        ),
        stored(
            b,
            report_json(
                "Org One",
                "r2",
                b,
                day,
                7,
                &[("starttls-not-supported", "mx.b", 2)],
            ),
            RECEIVED - time::Duration::days(40),
        ),
        // Names only another domain: rejected, nothing stored.
        stored(b, report_json("Org One", "r3", a, day, 1, &[]), RECEIVED),
    ]
}

fn outcome(result: Result<InsertOutcome, mta_stsd::tlsrpt::StoreError>) -> String {
    match result {
        Ok(o) => format!("{o:?}"),
        Err(e) => format!("error {} {}", e.http_status(), e.is_temporary()),
    }
}

/// Every read of the trait, as text, so two stores can be compared whole.
fn reads(store: &dyn ReportStore) -> Vec<String> {
    let since = datetime!(2026-11-01 00:00 UTC);
    let mut out = vec![
        format!("{:?}", store.summary("a.example", since).unwrap()),
        format!("{:?}", store.summary("B.Example.", since).unwrap()),
        format!("{:?}", store.window_totals(since).unwrap()),
        format!("{:?}", store.stored_bytes(RECEIVED, "a.example").unwrap()),
        format!("{:?}", store.received_by_source(RECEIVED).unwrap()),
    ];
    for id in ["r1", "r2", "r3"] {
        let records = store.get(id).unwrap();
        out.push(format!("{records:?}"));
    }
    out
}

#[test]
fn the_postgres_report_store_answers_as_the_sqlite_store_does() {
    let pg = Postgres::start();
    let db = Arc::new(Db::connect(pg.database()).expect("connects and migrates"));
    let postgres = PgReportStore::new(db.clone());
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("r.sqlite3")).unwrap();

    let mut outcomes = Vec::new();
    for report in reports() {
        let from_pg = outcome(postgres.insert(&report));
        assert_eq!(from_pg, outcome(sqlite.insert(&report)));
        outcomes.push(from_pg);
    }
    assert_eq!(
        outcomes,
        [
            "Inserted",
            "Duplicate",
            "Conflicting",
            "Inserted",
            "Inserted",
            "error 400 false"
        ]
    );
    let (from_pg, from_sqlite) = (reads(&postgres), reads(&sqlite));
    for (p, s) in from_pg.iter().zip(&from_sqlite) {
        assert_eq!(p, s);
    }
    assert!(from_pg[0].contains("conflict: true"), "{}", from_pg[0]);
    assert!(from_pg[2].contains("CertificateExpired"), "{}", from_pg[2]);

    // Retention: the 40-day-old report goes, with its policy and failure rows.
    let cutoff = RECEIVED - time::Duration::days(30);
    assert_eq!(postgres.prune(cutoff).unwrap(), 1);
    assert_eq!(sqlite.prune(cutoff).unwrap(), 1);
    assert_eq!(reads(&postgres), reads(&sqlite));
    let db_name = "t0";
    assert_eq!(pg.sql(db_name, "SELECT count(*) FROM tlsrpt_reports"), "3");
    assert_eq!(
        pg.sql(db_name, "SELECT count(*) FROM tlsrpt_failures"),
        "1",
        "the pruned report's failure row went with it"
    );
    assert_eq!(db.schema_version().unwrap(), known_version());
}

#[test]
fn the_same_report_sent_to_two_replicas_at_once_is_stored_once() {
    let pg = Postgres::start();
    let url = pg.database();
    // Two replicas: two pools, each migrating at start (the lock makes one of them wait).
    let replicas: Vec<Arc<PgReportStore>> = std::thread::scope(|s| {
        let starts: Vec<_> = (0..2)
            .map(|_| s.spawn(|| Arc::new(PgReportStore::new(Arc::new(Db::connect(&url).unwrap())))))
            .collect();
        starts.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let json = report_json(
        "Org One",
        "same",
        "a.example",
        date!(2026 - 11 - 18),
        5,
        &[],
    );
    let outcomes: Vec<InsertOutcome> = std::thread::scope(|s| {
        let sends: Vec<_> = (0..16)
            .map(|i| {
                let store = replicas[i % 2].clone();
                let report = stored("a.example", json.clone(), RECEIVED);
                s.spawn(move || store.insert(&report).unwrap())
            })
            .collect();
        sends.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let inserted = outcomes
        .iter()
        .filter(|o| **o == InsertOutcome::Inserted)
        .count();
    assert_eq!(inserted, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, InsertOutcome::Inserted | InsertOutcome::Duplicate)),
        "{outcomes:?}"
    );
    assert_eq!(pg.sql("t0", "SELECT count(*) FROM tlsrpt_reports"), "1");
    assert_eq!(
        pg.sql("t0", "SELECT version FROM mta_stsd_schema"),
        known_version().to_string()
    );
    assert_eq!(pg.sql("t0", "SELECT count(*) FROM mta_stsd_schema"), "1");
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_error() {
    let pg = Postgres::start();
    let url = pg.database();
    drop(Db::connect(&url).unwrap());
    pg.sql("t0", "UPDATE mta_stsd_schema SET version = 999");
    let err = Db::connect(&url).unwrap_err();
    assert!(matches!(err, DbError::Schema(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("999") && text.contains("newer"), "{text}");
    // A URL that is not one names the problem and never echoes a password.
    let bad = Db::connect("postgresql://user:s3cret@[::1").unwrap_err();
    assert!(!bad.to_string().contains("s3cret"), "{bad}");
}

#[test]
fn a_reading_command_never_migrates_and_needs_the_schema_it_knows() {
    let pg = Postgres::start();
    let url = pg.database();
    let err = Db::connect_existing(&url).unwrap_err();
    assert!(err.to_string().contains("no mta-stsd schema yet"), "{err}");
    assert_eq!(
        pg.sql("t0", "SELECT to_regclass('mta_stsd_schema') IS NULL"),
        "t",
        "reading created nothing"
    );
    drop(Db::connect(&url).unwrap());
    let db = Db::connect_existing(&url).unwrap();
    assert_eq!(
        db.schema_version().unwrap(),
        mta_stsd::pgstore::known_version()
    );
    drop(db);
    pg.sql("t0", "UPDATE mta_stsd_schema SET version = version - 1");
    let err = Db::connect_existing(&url).unwrap_err();
    assert!(matches!(err, DbError::Schema(_)), "{err}");
    let old = (mta_stsd::pgstore::known_version() - 1).to_string();
    assert_eq!(
        pg.sql("t0", "SELECT version FROM mta_stsd_schema"),
        old,
        "not migrated"
    );
}

#[test]
fn an_outage_is_temporary_and_the_store_comes_back_by_itself() {
    let pg = Postgres::start();
    let store = PgReportStore::new(Arc::new(Db::connect(pg.database()).unwrap()));
    let day = date!(2026 - 11 - 18);
    let first = stored(
        "a.example",
        report_json("O", "1", "a.example", day, 1, &[]),
        RECEIVED,
    );
    assert_eq!(store.insert(&first).unwrap(), InsertOutcome::Inserted);

    pg.pause();
    let second = stored(
        "a.example",
        report_json("O", "2", "a.example", day, 1, &[]),
        RECEIVED,
    );
    let err = store.insert(&second).unwrap_err();
    assert!(err.is_temporary(), "{err}");
    assert_eq!(err.http_status(), 503, "{err}");
    assert!(store.summary("a.example", RECEIVED).is_err());

    pg.resume();
    // The pool drops the broken connections and opens new ones: no restart needed.
    assert_eq!(store.insert(&second).unwrap(), InsertOutcome::Inserted);
    assert_eq!(store.insert(&first).unwrap(), InsertOutcome::Duplicate);
    assert_eq!(pg.sql("t0", "SELECT count(*) FROM tlsrpt_reports"), "2");
}

fn cert(n: u32) -> StoredCert {
    StoredCert {
        chain_pem: format!("-----BEGIN CERTIFICATE-----\nchain {n}\n-----END CERTIFICATE-----\n"),
        key_pem: format!("key {n}"),
        meta: CertMeta {
            directory: "https://ca.example/dir".into(),
            order_url: (n > 1).then(|| format!("https://ca.example/order/{n}")),
            issued_at: 1_700_000_000 + i64::from(n),
        },
    }
}

/// Waits (up to 10 s) for the next notification on `channel` on a connection of its own.
fn next_notification(url: &str, channel: &str, after: impl FnOnce()) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = futures_util::StreamExt::next(&mut messages).await {
                if let tokio_postgres::AsyncMessage::Notification(n) = message {
                    let _ = tx.send(n.payload().to_owned());
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .unwrap();
        // Blocking here is fine: the notification waits in the socket until polled below.
        after();
        tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .ok()
            .flatten()
    })
}

#[test]
fn certificates_are_shared_by_replicas_and_announced_when_saved() {
    let pg = Postgres::start();
    let url = pg.database();
    let one = PgCertStore::new(Arc::new(Db::connect(&url).unwrap()));
    let two = PgCertStore::new(Arc::new(Db::connect(&url).unwrap()));
    let dir = tempfile::tempdir().unwrap();
    let files = FileStore::new(dir.path());
    let status = StatusRecord {
        state: CertState::Valid,
        last_error: Some("earlier: rate limited".into()),
        next_attempt: Some(1_800_000_000),
        updated: 1_700_000_000,
    };
    for store in [&one as &dyn CertStore, &files] {
        assert_eq!(store.load_account().unwrap(), None);
        store.save_account(b"{\"key\":\"secret\"}").unwrap();
        store.save_cert("mta-sts.a.example", &cert(1)).unwrap();
        store.save_cert("mta-sts.a.example", &cert(2)).unwrap();
        store.save_status("mta-sts.b.example", &status).unwrap();
    }
    // The other replica reads what the first wrote, exactly as the file store keeps it.
    for (pg_store, file_store) in [(&two as &dyn CertStore, &files as &dyn CertStore)] {
        assert_eq!(
            pg_store.load_account().unwrap(),
            file_store.load_account().unwrap()
        );
        assert_eq!(pg_store.hosts().unwrap(), file_store.hosts().unwrap());
        for host in [
            "mta-sts.a.example",
            "mta-sts.b.example",
            "mta-sts.c.example",
        ] {
            assert_eq!(
                pg_store.load_cert(host).unwrap(),
                file_store.load_cert(host).unwrap()
            );
            assert_eq!(
                pg_store.load_status(host).unwrap(),
                file_store.load_status(host).unwrap()
            );
        }
    }
    assert_eq!(two.load_cert("mta-sts.a.example").unwrap(), Some(cert(2)));
    assert_eq!(
        pg.sql("t0", "SELECT count(*) FROM certificates"),
        "1",
        "a renewal replaces the row"
    );

    // A saved certificate is announced to listening replicas once committed.
    let payload = next_notification(&url, CERT_CHANNEL, || {
        one.save_cert("mta-sts.c.example", &cert(3)).unwrap();
    });
    assert_eq!(payload.as_deref(), Some("mta-sts.c.example"));
    // A corrupt status row is an error naming the host, not a panic.
    pg.sql(
        "t0",
        "UPDATE cert_status SET record = 'nonsense' WHERE host = 'mta-sts.b.example'",
    );
    let err = two.load_status("mta-sts.b.example").unwrap_err();
    assert!(err.to_string().contains("mta-sts.b.example"), "{err}");
}

/// [`Db::connect`] (which blocks) from an async test.
async fn connect(url: &str) -> Arc<Db> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || Arc::new(Db::connect(&url).unwrap()))
        .await
        .unwrap()
}

/// One replica's session: its role, its change feed, and its own stop (dropping it ends the
/// session as a process exit would).
struct Replica {
    role: tokio::sync::watch::Receiver<Role>,
    events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn replicas(url: &str, n: usize) -> Vec<Replica> {
    (0..n)
        .map(|_| {
            let (role_tx, role) = tokio::sync::watch::channel(Role::Disconnected("start".into()));
            let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
            let (stop, stop_rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(session::run(url.to_owned(), role_tx, events_tx, stop_rx));
            Replica {
                role,
                events,
                stop,
                task,
            }
        })
        .collect()
}

fn roles(replicas: &[Replica]) -> Vec<Role> {
    replicas.iter().map(|r| r.role.borrow().clone()).collect()
}

fn leaders(replicas: &[Replica]) -> Vec<usize> {
    (0..replicas.len())
        .filter(|&i| *replicas[i].role.borrow() == Role::Leader)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_another_takes_over_when_it_dies() {
    let pg = Postgres::start();
    let url = pg.database();
    let store = PgCertStore::new(connect(&url).await);
    let mut group = replicas(&url, 3);
    let settled = eventually(Duration::from_secs(10), || async {
        leaders(&group).len() == 1
            && group
                .iter()
                .all(|r| !matches!(*r.role.borrow(), Role::Disconnected(_)))
    })
    .await;
    assert!(settled, "{:?}", roles(&group));
    for r in &mut group {
        assert_eq!(r.events.recv().await, Some(Event::Connected));
    }

    // Every replica hears of a certificate saved anywhere.
    tokio::task::spawn_blocking({
        let store = store.clone();
        move || store.save_cert("mta-sts.a.example", &cert(1)).unwrap()
    })
    .await
    .unwrap();
    for r in &mut group {
        let got = tokio::time::timeout(Duration::from_secs(5), r.events.recv()).await;
        assert_eq!(
            got.ok().flatten(),
            Some(Event::Cert("mta-sts.a.example".into()))
        );
    }

    // The leader's session is cut (a network fault): the server frees the lock, the replica
    // reconnects (and is told to reconcile), and one replica leads again.
    let cut = leaders(&group)[0];
    let killed = pg.sql(
        "postgres",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted",
    );
    assert_eq!(killed, "1", "exactly one session holds the issuer lock");
    let reconnected = tokio::time::timeout(Duration::from_secs(15), group[cut].events.recv()).await;
    assert_eq!(reconnected.ok().flatten(), Some(Event::Connected));
    let one = eventually(Duration::from_secs(10), || async {
        leaders(&group).len() == 1
    })
    .await;
    assert!(one, "{:?}", roles(&group));

    // The leader dies: another replica takes over within seconds.
    let dead = leaders(&group)[0];
    let gone = group.remove(dead);
    gone.stop.send(true).unwrap();
    gone.task.await.unwrap();
    let taken_over = eventually(Duration::from_secs(10), || async {
        leaders(&group).len() == 1
    })
    .await;
    assert!(taken_over, "no new leader: {:?}", roles(&group));

    // The database goes away: nobody leads (nobody orders) until it is back.
    pg.pause();
    let none = eventually(Duration::from_secs(15), || async {
        group
            .iter()
            .all(|r| matches!(*r.role.borrow(), Role::Disconnected(_)))
    })
    .await;
    assert!(none, "{:?}", roles(&group));
    pg.resume();
    let again = eventually(Duration::from_secs(20), || async {
        leaders(&group).len() == 1
    })
    .await;
    assert!(
        again,
        "a leader again once the database is back: {:?}",
        roles(&group)
    );
    for r in group {
        r.stop.send(true).unwrap();
        r.task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_challenge_reaches_every_replica_and_expires() {
    use mta_stsd::certs::acme::cluster::ChallengeBoard;
    use mta_stsd::config::ChallengeKind;
    use mta_stsd::pgstore::challenges::{PgChallenges, Shared};
    let pg = Postgres::start();
    let url = pg.database();
    let leader = PgChallenges::new(connect(&url).await);
    let mut group = replicas(&url, 2);
    for r in &mut group {
        let up = tokio::time::timeout(Duration::from_secs(10), r.events.recv()).await;
        assert_eq!(up.ok().flatten(), Some(Event::Connected));
    }
    let challenge = Shared {
        host: "mta-sts.a.example".into(),
        kind: ChallengeKind::TlsAlpn01,
        token: "tok-1".into(),
        key_authorization: "tok-1.thumbprint".into(),
    };
    let now = 1_900_000_000;
    type Step = Box<dyn FnOnce(&PgChallenges) -> Vec<Shared> + Send>;
    let run = |f: Step| {
        let store = leader.clone();
        tokio::task::spawn_blocking(move || f(&store))
    };
    let c = challenge.clone();
    run(Box::new(move |s| {
        s.publish(&c, now + 60).unwrap();
        Vec::new()
    }))
    .await
    .unwrap();
    for r in &mut group {
        let got = tokio::time::timeout(Duration::from_secs(5), r.events.recv()).await;
        assert_eq!(
            got.ok().flatten(),
            Some(Event::Challenge("mta-sts.a.example".into()))
        );
    }
    let pending = run(Box::new(move |s| s.pending(now).unwrap()))
        .await
        .unwrap();
    assert_eq!(pending, std::slice::from_ref(&challenge));
    // Past its expiry it is gone (a leader that died mid-order leaves nothing behind).
    let later = run(Box::new(move |s| s.pending(now + 61).unwrap()))
        .await
        .unwrap();
    assert!(later.is_empty(), "{later:?}");
    let c = challenge.clone();
    let withdrawn = run(Box::new(move |s| {
        s.publish(&c, now + 60).unwrap();
        s.withdraw(&c).unwrap();
        s.pending(now).unwrap()
    }))
    .await
    .unwrap();
    assert!(withdrawn.is_empty(), "{withdrawn:?}");
    for r in group {
        r.stop.send(true).unwrap();
        r.task.await.unwrap();
    }
}

/// TLS to the server: with the CA that signed its certificate the connection is encrypted (the
/// server says so); with the system's roots it is refused (never an unverified channel).
#[test]
fn tls_to_the_server_is_verified_against_ca_file() {
    use mta_stsd::pgstore::tls::Endpoint;
    let pg = Postgres::start();
    let ca = pg.enable_tls();
    let url = format!("{}?sslmode=require", pg.database());
    let db = Db::connect(Endpoint::new(&url, Some(&ca)).unwrap()).expect("TLS with the CA");
    let ssl = db
        .run(|pool| async move {
            let client = pool.get().await?;
            let row = client
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await?;
            Ok(row.get::<_, bool>(0))
        })
        .unwrap();
    assert!(ssl, "the server reports the session as TLS");
    let untrusted = Db::connect(Endpoint::new(&url, None).unwrap()).unwrap_err();
    assert!(
        untrusted.to_string().to_lowercase().contains("certificate"),
        "{untrusted}"
    );
    let not_pem = pg.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let bad = Endpoint::new(&url, Some(&not_pem)).unwrap_err().to_string();
    assert!(
        bad.contains("store.postgres.ca_file") && bad.contains("not.pem"),
        "{bad}"
    );
}

/// The leader learns when every other live replica answers a challenge: a replica that
/// acknowledged it is not waited for, one that stopped heartbeating is not either, and the
/// acknowledgements go with the withdrawal.
#[test]
fn a_challenge_counts_the_live_replicas_not_answering_it() {
    use mta_stsd::certs::acme::cluster::ChallengeBoard;
    use mta_stsd::config::ChallengeKind;
    use mta_stsd::pgstore::challenges::{PgChallenges, Shared};
    let pg = Postgres::start();
    let url = pg.database();
    let db = Arc::new(Db::connect(url.clone()).unwrap());
    let name = url.rsplit('/').next().unwrap().to_owned();
    let (a, b) = (
        PgChallenges::for_replica(db.clone(), "a"),
        PgChallenges::for_replica(db.clone(), "b"),
    );
    pg.sql(
        &name,
        "INSERT INTO cluster_replicas (name, last_seen, started) VALUES
         ('a', now(), now()), ('b', now(), now()), ('c', now() - interval '1 hour', now())",
    );
    let c = Shared {
        host: "mta-sts.a.example".into(),
        kind: ChallengeKind::Http01,
        token: "tok".into(),
        key_authorization: "tok.thumb".into(),
    };
    let now = mta_stsd::util::unix_now();
    a.publish(&c, now + 60).unwrap();
    assert_eq!(a.unanswered(&c).unwrap(), Some(1), "b has not answered");
    b.acknowledge(std::slice::from_ref(&c)).unwrap();
    assert_eq!(
        a.unanswered(&c).unwrap(),
        Some(0),
        "b answers; c is not alive"
    );
    a.withdraw(&c).unwrap();
    let acks = pg.sql(&name, "SELECT count(*) FROM acme_challenge_acks");
    assert_eq!(acks, "0");
    // Acknowledging a challenge withdrawn meanwhile is no error and records nothing.
    b.acknowledge(std::slice::from_ref(&c)).unwrap();
    assert_eq!(
        pg.sql(&name, "SELECT count(*) FROM acme_challenge_acks"),
        "0"
    );
    assert_eq!(PgChallenges::new(db).unanswered(&c).unwrap(), None);
}
