//! Cluster mode (issue 16) end to end: three replicas of the real binary sharing one real
//! PostgreSQL, with a real ACME server (Pebble) validating against whichever replica the test
//! DNS names. One issuer at a time, every replica serving every certificate and challenge,
//! failover after `kill -9`, reports shared and deduplicated, a database outage survived, and
//! the cluster-wide ready gate.
//!
//! The figures (failover time, order counts) are printed for the record, never asserted.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::common::cluster::{
    Cluster, ClusterOptions, ISSUE_LIMIT, MAIL_AUTHSERV, NAMES, REPORT_HOST, policy_host,
};
use crate::common::{Client, admin_get, eventually, report_json, report_mail, run_binary};

/// Bound for a role change or a recovery: liveness, not speed.
const ROLE_LIMIT: Duration = Duration::from_secs(30);

fn domains(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}.test")).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Adds `domains` on every replica (each reloads), pointed at replica `at`.
async fn add_tenants(c: &Cluster, domains: &[String], at: usize) {
    for d in domains {
        c.point(d, at);
    }
    c.write_tenants(&refs(domains), &c.alive());
    for i in c.alive() {
        c.reload(i).await;
    }
}

#[tokio::test]
async fn ten_tenants_make_ten_orders_and_every_replica_serves_every_certificate() {
    let c = Cluster::start(ClusterOptions {
        schedule: "    max_concurrent: 10\n".into(),
        ..Default::default()
    })
    .await;
    let leader = c.leader(ROLE_LIMIT).await;
    let tenants = domains("t", 10);
    add_tenants(&c, &tenants, leader).await;
    let hosts: Vec<String> = tenants.iter().map(|d| policy_host(d)).collect();
    let serials = c
        .wait_served_everywhere(&hosts, ISSUE_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("not served everywhere: {e}{}", c.logs()));
    let distinct: BTreeSet<&String> = serials.iter().collect();
    assert_eq!(
        distinct.len(),
        10,
        "one certificate per tenant: {serials:?}"
    );
    for i in c.alive() {
        for d in &tenants {
            let (_, got) = c.fetch_policy(i, d).await.unwrap();
            let body = String::from_utf8_lossy(&got.body);
            assert!(body.contains(&format!("mx: mx.{d}")), "{body}");
        }
    }
    // `mta-stsd certs` on a follower's config reads the cluster's store: its own state
    // directory holds no certificate.
    let follower = c.others(leader)[0];
    let table = crate::acme::certs_table(c.replica(follower).cfg.path());
    for h in &hosts {
        let line = table.lines().find(|l| l.starts_with(h.as_str()));
        assert!(line.is_some_and(|l| l.contains(" valid ")), "{h}:\n{table}");
    }
    // Every replica's API shows the same certificate as valid: the status is shared too.
    for i in c.alive() {
        for (d, s) in tenants.iter().zip(&serials) {
            let t = c.tenant(i, d).await;
            assert_eq!(t["certificate"]["state"], "valid", "{} {d}: {t}", NAMES[i]);
            assert_eq!(
                t["certificate"]["cert"]["serial"].as_str(),
                Some(s.as_str())
            );
        }
    }
    let orders = c.orders();
    let issued = c.issued();
    let placed: Vec<usize> = c.replicas.iter().map(|r| r.orders_placed().len()).collect();
    println!(
        "cluster figures: 10 tenants on 3 replicas -> {orders} orders at Pebble, {issued} \
         certificates issued; orders placed per replica (a, b, c): {placed:?}"
    );
    assert_eq!(orders, 10, "{}", c.logs());
    assert_eq!(issued, 10);
    for (i, n) in placed.iter().enumerate() {
        let expected = if i == leader { 10 } else { 0 };
        assert_eq!(*n, expected, "orders placed by {}: {placed:?}", NAMES[i]);
    }
    check_cluster_status(&c, leader).await;
}

/// Each replica names itself, lists all three and exports its role as a metric.
async fn check_cluster_status(c: &Cluster, leader: usize) {
    for i in c.alive() {
        let status = c.status(i).await;
        let cluster = &status["cluster"];
        assert_eq!(cluster["replica"], NAMES[i], "{status}");
        let listed: BTreeSet<&str> = cluster["replicas"]
            .as_array()
            .unwrap_or_else(|| panic!("no replicas list: {status}"))
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(listed, BTreeSet::from(NAMES), "{status}");
        let metrics = admin_get(c.replica(i).admin, "/metrics").await.body;
        let role = if i == leader { "leader" } else { "follower" };
        for r in ["leader", "follower", "disconnected"] {
            let v = u8::from(r == role);
            let series = format!("mta_stsd_cluster_role{{role=\"{r}\"}} {v}");
            assert!(
                metrics.contains(&series),
                "{} lacks {series}:\n{metrics}",
                NAMES[i]
            );
        }
    }
}

#[tokio::test]
async fn a_follower_answers_the_challenge_of_the_leaders_order() {
    let c = Cluster::start(ClusterOptions::default()).await;
    let leader = c.leader(ROLE_LIMIT).await;
    let follower = c.others(leader)[0];
    // The CA can only reach the follower: the DNS names its address alone.
    let tenant = vec!["far.test".to_owned()];
    add_tenants(&c, &tenant, follower).await;
    let host = policy_host("far.test");
    c.wait_served_everywhere(std::slice::from_ref(&host), ISSUE_LIMIT)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "leader {} ordered, follower {} must answer: {e}{}",
                NAMES[leader],
                NAMES[follower],
                c.logs()
            )
        });
    println!(
        "cluster figures: challenge answered by follower {} for leader {}: {} order(s) at Pebble",
        NAMES[follower],
        NAMES[leader],
        c.orders()
    );
    assert_eq!(c.orders(), 1);
    assert_eq!(c.replica(leader).orders_placed(), vec![host.clone()]);
    assert!(c.replica(follower).orders_placed().is_empty());
}

#[tokio::test]
async fn killing_the_leader_hands_over_and_the_new_leader_renews_once() {
    // 60-second certificates renewed at half their life: the renewal falls after the kill.
    let mut c = Cluster::start(ClusterOptions {
        validity_secs: Some(60),
        schedule: "    renew_fraction: 0.5\n".into(),
        ..Default::default()
    })
    .await;
    let leader = c.leader(ROLE_LIMIT).await;
    // The CA validates at a replica that survives.
    let survivor = c.others(leader)[0];
    let tenant = vec!["renew.test".to_owned()];
    add_tenants(&c, &tenant, survivor).await;
    let host = policy_host("renew.test");
    let first = c
        .wait_served_everywhere(std::slice::from_ref(&host), ISSUE_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("first issuance: {e}{}", c.logs()))[0]
        .clone();
    assert_eq!(c.orders(), 1, "{}", c.pebble.log_text());

    let killed = Instant::now();
    c.kill_9(leader);
    let new_leader = c.leader(ROLE_LIMIT).await;
    let failover = killed.elapsed();
    assert_ne!(new_leader, leader);
    println!(
        "cluster figures: kill -9 of leader {} -> {} leader after {:.2} s",
        NAMES[leader],
        NAMES[new_leader],
        failover.as_secs_f64()
    );

    // The survivors keep serving the first certificate, then both serve the renewed one.
    let renewed = eventually(ISSUE_LIMIT, || async {
        match c
            .wait_served_everywhere(std::slice::from_ref(&host), Duration::ZERO)
            .await
        {
            Ok(s) => s[0] != first,
            Err(e) => panic!("a survivor stopped serving {host}: {e}{}", c.logs()),
        }
    })
    .await;
    assert!(renewed, "never renewed after the failover{}", c.logs());
    let renewal = Instant::now() - killed;
    let orders = c.orders();
    println!(
        "cluster figures: renewal served by both survivors {:.1} s after the kill; {orders} \
         orders at Pebble in all (first issuance + renewal)",
        renewal.as_secs_f64()
    );
    assert_eq!(orders, 2, "no duplicate order{}", c.logs());
    assert_eq!(c.issued(), 2);
    assert_eq!(c.replica(leader).orders_placed(), vec![host.clone()]);
    assert_eq!(c.replica(new_leader).orders_placed(), vec![host.clone()]);
    let third = c.others(new_leader);
    assert!(
        third
            .iter()
            .all(|i| c.replica(*i).orders_placed().is_empty()),
        "only the leaders ordered"
    );
}

fn yesterday() -> time::Date {
    time::OffsetDateTime::now_utc()
        .date()
        .previous_day()
        .unwrap()
}

#[tokio::test]
async fn a_report_sent_to_one_replica_is_seen_by_another_and_stored_once() {
    let c = Cluster::start(ClusterOptions {
        tenants: vec!["rpt.test".into()],
        report_host: true,
        ..Default::default()
    })
    .await;
    let hosts = [policy_host("rpt.test"), REPORT_HOST.to_owned()];
    c.wait_served_everywhere(&hosts, ISSUE_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e}{}", c.logs()));
    let day = yesterday();
    let report = report_json("Org A", "r-a", "rpt.test", day, 10, &[]);
    let got = c.post_report(0, "rpt.test", report).await.unwrap();
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    assert_eq!(c.reports(1, "rpt.test").await, 1, "sent to a, read on b");
    assert_eq!(c.reports(2, "rpt.test").await, 1, "sent to a, read on c");

    // The same report to a and b at once, ten times over: each stored once.
    for n in 0..10 {
        let json = report_json("Org B", &format!("r-b{n}"), "rpt.test", day, n, &[]);
        let (on_a, on_b) = tokio::join!(
            c.post_report(0, "rpt.test", json.clone()),
            c.post_report(1, "rpt.test", json.clone())
        );
        let (on_a, on_b) = (on_a.unwrap(), on_b.unwrap());
        assert_eq!((on_a.status, on_b.status), (StatusCode::OK, StatusCode::OK));
        let mut bodies = [
            String::from_utf8_lossy(&on_a.body).into_owned(),
            String::from_utf8_lossy(&on_b.body).into_owned(),
        ];
        bodies.sort();
        assert_eq!(
            bodies,
            ["duplicate report, already stored\n", "report stored\n"],
            "round {n}"
        );
    }
    for i in c.alive() {
        assert_eq!(c.reports(i, "rpt.test").await, 11, "on {}", NAMES[i]);
    }
    // `mta-stsd ingest-mail` and `reports` on a replica's config use the cluster's store,
    // not a local SQLite file (no replica has one).
    let config = c.replica(2).cfg.path();
    let json = report_json("Mail Org", "r-mail", "rpt.test", day, 3, &[]);
    let mail = report_mail("sender.test", "rpt.test", &json, Some(MAIL_AUTHSERV));
    let (code, out, err) = run_binary(
        &[
            "ingest-mail".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        &mail,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("stored: report \"r-mail\""), "{out}");
    assert_eq!(
        c.reports(0, "rpt.test").await,
        12,
        "mailed via c, read on a"
    );
    assert!(!config.join("state/tlsrpt.sqlite3").exists());
    let (code, json, err) = run_binary(
        &[
            "reports".as_ref(),
            "--json".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let summary = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tenant"] == "rpt.test");
    assert_eq!(summary.unwrap()["reports"], 12, "{json}");
}

/// What the policy fetcher saw during the outage test.
#[derive(Default)]
struct Fetches {
    ok: usize,
    ok_while_down: usize,
    failures: Vec<String>,
}

/// What the report sender saw: `(report id, status, Retry-After)` per answer; errors.
#[derive(Default)]
struct Posts {
    answers: Vec<(String, StatusCode, Option<String>, bool)>,
    errors: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_for_ten_seconds_keeps_policies_served_and_loses_no_report() {
    let c = Cluster::start(ClusterOptions {
        tenants: vec!["one.test".into(), "two.test".into()],
        report_host: true,
        ..Default::default()
    })
    .await;
    let hosts = [
        policy_host("one.test"),
        policy_host("two.test"),
        REPORT_HOST.to_owned(),
    ];
    c.wait_served_everywhere(&hosts, ISSUE_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e}{}", c.logs()));
    let clients: Vec<Client> = c.alive().into_iter().map(|i| c.client(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let down = Arc::new(AtomicBool::new(false));
    let fetcher = tokio::spawn(fetch_policies(clients.clone(), stop.clone(), down.clone()));
    let sender = tokio::spawn(send_reports(clients.clone(), stop.clone(), down.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let paused = Instant::now();
    down.store(true, Ordering::SeqCst);
    let pg = c.pg.clone();
    tokio::task::spawn_blocking(move || pg.pause())
        .await
        .unwrap();
    let disconnected = eventually(ROLE_LIMIT, || async {
        c.roles().await.iter().all(|(_, r)| r == "disconnected")
    })
    .await;
    assert!(disconnected, "roles while down: {:?}", c.roles().await);
    let outage = Duration::from_secs(10);
    tokio::time::sleep(outage.saturating_sub(paused.elapsed())).await;
    let pg = c.pg.clone();
    tokio::task::spawn_blocking(move || pg.resume())
        .await
        .unwrap();
    down.store(false, Ordering::SeqCst);
    let was_down = paused.elapsed();

    let leader = c.leader(ROLE_LIMIT).await;
    let recovered = Instant::now();
    // Intake recovers on every replica (the sender keeps going meanwhile).
    for (i, client) in clients.iter().enumerate() {
        let json = report_json(
            "Probe",
            &format!("probe-{i}"),
            "one.test",
            yesterday(),
            1,
            &[],
        );
        let ok = eventually(ROLE_LIMIT, || async {
            client
                .post_report(
                    REPORT_HOST,
                    "one.test",
                    "application/tlsrpt+json",
                    json.clone(),
                )
                .await
                .is_ok_and(|r| r.status == StatusCode::OK)
        })
        .await;
        assert!(ok, "intake on {} never recovered{}", NAMES[i], c.logs());
    }
    let intake_back = recovered.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let fetches = fetcher.await.unwrap();
    let posts = sender.await.unwrap();

    let acked: BTreeSet<&str> = posts
        .answers
        .iter()
        .filter(|a| a.1 == StatusCode::OK)
        .map(|a| a.0.as_str())
        .collect();
    let refused: Vec<_> = posts
        .answers
        .iter()
        .filter(|a| a.1 == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    println!(
        "cluster figures: PostgreSQL down {:.1} s; {} policy fetches ({} while down), {} \
         failed; {} reports acknowledged, {} refused with 503; leader {} again, intake back \
         on all {:.1} s after that",
        was_down.as_secs_f64(),
        fetches.ok,
        fetches.ok_while_down,
        fetches.failures.len(),
        acked.len(),
        refused.len(),
        NAMES[leader],
        intake_back.as_secs_f64()
    );
    assert!(
        fetches.failures.is_empty(),
        "failed policy fetches: {:?}",
        fetches.failures
    );
    assert!(
        fetches.ok_while_down > 0,
        "fetched while PostgreSQL was down"
    );
    assert!(
        posts.errors.is_empty(),
        "report posts failed: {:?}",
        posts.errors
    );
    let odd: Vec<_> = posts
        .answers
        .iter()
        .filter(|a| a.1 != StatusCode::OK && a.1 != StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(odd.is_empty(), "answers other than 200 and 503: {odd:?}");
    assert!(
        refused.iter().any(|a| a.3),
        "intake said 503 while PostgreSQL was down: {:?}",
        posts.answers
    );
    assert!(
        refused.iter().all(|a| a.2.is_some()),
        "every 503 has Retry-After: {refused:?}"
    );
    // Every acknowledged report is there, plus one probe per replica.
    let expected = u64::try_from(acked.len() + clients.len()).unwrap();
    for i in c.alive() {
        assert_eq!(c.reports(i, "one.test").await, expected, "on {}", NAMES[i]);
    }
}

/// Fetches both tenants' policies from every replica in turn, on new connections, until
/// `stop`.
async fn fetch_policies(
    clients: Vec<Client>,
    stop: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
) -> Fetches {
    let mut seen = Fetches::default();
    while !stop.load(Ordering::SeqCst) {
        for client in &clients {
            for d in ["one.test", "two.test"] {
                match client.get_policy(&policy_host(d)).await {
                    Ok(r) if r.status == StatusCode::OK => {
                        seen.ok += 1;
                        if down.load(Ordering::SeqCst) {
                            seen.ok_while_down += 1;
                        }
                    }
                    Ok(r) => seen
                        .failures
                        .push(format!("{d} at {}: {}", client.addr, r.status)),
                    Err(e) => seen.failures.push(format!("{d} at {}: {e}", client.addr)),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

/// Posts a new report every 50 ms to the replicas in turn until `stop`.
async fn send_reports(clients: Vec<Client>, stop: Arc<AtomicBool>, down: Arc<AtomicBool>) -> Posts {
    let mut seen = Posts::default();
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let id = format!("outage-{n}");
        let json = report_json("Sender", &id, "one.test", yesterday(), 5, &[]);
        let client = &clients[n % clients.len()];
        let while_down = down.load(Ordering::SeqCst);
        match client
            .post_report(REPORT_HOST, "one.test", "application/tlsrpt+json", json)
            .await
        {
            Ok(r) => {
                let retry = r
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .map(|v| v.to_str().unwrap_or("?").to_owned());
                seen.answers.push((id, r.status, retry, while_down));
            }
            Err(e) => seen.errors.push(format!("{id} at {}: {e}", client.addr)),
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

#[tokio::test]
async fn an_edit_applied_on_two_replicas_of_three_is_not_ready_until_the_third() {
    let c = Cluster::start(ClusterOptions {
        tenants: vec!["gate.test".into()],
        ..Default::default()
    })
    .await;
    let host = policy_host("gate.test");
    c.wait_served_everywhere(std::slice::from_ref(&host), ISSUE_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e}{}", c.logs()));
    let all_ready = |want_id: String| {
        let c = &c;
        async move {
            for i in c.alive() {
                let t = c.tenant(i, "gate.test").await;
                if t["ready"] != true || t["id"] != want_id.as_str() {
                    return false;
                }
            }
            true
        }
    };
    let old_id = c.tenant(0, "gate.test").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        eventually(ROLE_LIMIT, || all_ready(old_id.clone())).await,
        "ready everywhere before the edit{}",
        c.logs()
    );

    // The edit reaches a and b; c has not applied it yet.
    let edited =
        "domain: gate.test\nmode: testing\nmx: [mx.gate.test, mx2.gate.test]\nmax_age: 86400\n";
    for i in [0, 1] {
        c.replica(i).cfg.tenant("gate.test.yaml", edited);
        c.reload(i).await;
    }
    let new_id = c.tenant(0, "gate.test").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_id, old_id);
    assert_eq!(c.tenant(1, "gate.test").await["id"], new_id.as_str());
    assert_eq!(c.tenant(2, "gate.test").await["id"], old_id.as_str());
    // Sampled for three seconds: a replica's record of what it serves takes milliseconds.
    // c knows only the old id, already published, which stays ready there; what must not be
    // ready is the new one.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for i in [0, 1] {
            let t = c.tenant(i, "gate.test").await;
            assert_eq!(
                t["ready"], false,
                "{} says the new id is ready while c serves the old one: {t}",
                NAMES[i]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    c.replica(2).cfg.tenant("gate.test.yaml", edited);
    c.reload(2).await;
    let ready = eventually(ROLE_LIMIT, || all_ready(new_id.clone())).await;
    let states: Vec<_> = {
        let mut v = Vec::new();
        for i in c.alive() {
            let t = c.tenant(i, "gate.test").await;
            v.push((NAMES[i], t["id"].clone(), t["ready"].clone()));
        }
        v
    };
    assert!(
        ready,
        "ready once all three serve it: {states:?}{}",
        c.logs()
    );
}
