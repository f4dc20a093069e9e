//! Cluster mode's wiring with two real replicas on one real PostgreSQL: one leader, the role
//! in the API, the metric and the log, the shared ready gate, and takeover after `kill -9`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{Postgres, ServeProcess, TestConfig, admin_get, eventually};

/// A replica's config dir: internal CA, admin on an ephemeral port, the shared database.
fn replica(url: &str, name: &str) -> TestConfig {
    let cfg = TestConfig::with_server(&format!(
        "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: internal\nadmin:\n  listen: \"127.0.0.1:0\"\nreload:\n  debounce: 50ms\nstore:\n  postgres:\n    url: \"{url}\"\n    replica_name: {name}\n"
    ));
    cfg.simple_tenant("a.example");
    cfg
}

async fn status(addr: SocketAddr) -> serde_json::Value {
    admin_get(addr, "/api/v1/status").await.json()["cluster"].clone()
}

async fn tenant(addr: SocketAddr) -> serde_json::Value {
    admin_get(addr, "/api/v1/tenants/a.example").await.json()
}

/// Both replicas' roles, sorted, once each sees both alive.
async fn roles(addrs: &[SocketAddr]) -> Vec<String> {
    let mut roles = Vec::new();
    for addr in addrs {
        let s = status(*addr).await;
        if s["replicas"].as_array().map_or(0, Vec::len) != addrs.len() {
            return Vec::new();
        }
        roles.push(s["role"].as_str().unwrap_or_default().to_owned());
    }
    roles.sort();
    roles
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_elect_one_leader_share_the_ready_gate_and_take_over() {
    let pg = Postgres::start();
    let url = pg.database();
    let (ca, cb) = (replica(&url, "a"), replica(&url, "b"));
    let a = ServeProcess::start(ca.path());
    let b = ServeProcess::start(cb.path());
    let addrs = [a.admin_addr(), b.admin_addr()];
    let elected = eventually(Duration::from_secs(20), || async {
        roles(&addrs).await == ["follower", "leader"]
    })
    .await;
    assert!(
        elected,
        "roles {:?}; log a:\n{}",
        roles(&addrs).await,
        a.log.lock().unwrap().join("\n")
    );
    let both_ready = eventually(Duration::from_secs(20), || async {
        tenant(addrs[0]).await["ready"] == true && tenant(addrs[1]).await["ready"] == true
    })
    .await;
    assert!(
        both_ready,
        "a: {}\nb: {}",
        tenant(addrs[0]).await,
        tenant(addrs[1]).await
    );

    // An edit applied on replica a only: its new id is served there, but b still serves the
    // old body, so the new id is not ready.
    let old_id = tenant(addrs[0]).await["id"].clone();
    let edited = "domain: a.example\nmode: testing\nmx: [mx2.a.example]\nmax_age: 86400\n";
    ca.tenant("a.example.yaml", edited);
    let applied = eventually(Duration::from_secs(10), || async {
        tenant(addrs[0]).await["id"] != old_id
    })
    .await;
    assert!(applied, "replica a never applied the edit");
    // Several sync rounds: a confirmation would have come by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        tenant(addrs[0]).await["ready"],
        false,
        "new id ready while b lags"
    );
    cb.tenant("a.example.yaml", edited);
    let caught_up = eventually(Duration::from_secs(15), || async {
        let (ta, tb) = (tenant(addrs[0]).await, tenant(addrs[1]).await);
        ta["ready"] == true && tb["ready"] == true && ta["id"] == tb["id"]
    })
    .await;
    assert!(
        caught_up,
        "a: {}\nb: {}",
        tenant(addrs[0]).await,
        tenant(addrs[1]).await
    );
    assert!(
        !a.log_lines(|v| v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("policy id served by every live replica")))
            .is_empty(),
        "the cluster-wide ready log line"
    );

    let metrics = admin_get(addrs[0], "/metrics").await.body;
    assert!(metrics.contains("mta_stsd_cluster_replicas 2"), "{metrics}");
    assert!(
        metrics.contains("mta_stsd_cluster_role{role=\"leader\"}"),
        "{metrics}"
    );

    // The leader dies without a word: the other takes over within seconds.
    let (leader, survivor) = if status(addrs[0]).await["role"] == "leader" {
        (a, addrs[1])
    } else {
        (b, addrs[0])
    };
    let killed = std::time::Instant::now();
    leader.kill_9();
    let took_over = eventually(Duration::from_secs(20), || async {
        status(survivor).await["role"] == "leader"
    })
    .await;
    assert!(took_over, "no takeover: {}", status(survivor).await);
    println!(
        "takeover after kill -9: {:.2} s",
        killed.elapsed().as_secs_f64()
    );
}

#[test]
fn a_replica_without_its_database_does_not_start_and_says_why() {
    let pg = Postgres::start();
    let cfg = replica(&pg.url("no_such_database"), "a");
    let out = std::process::Command::new(crate::common::binary())
        .args(["serve", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("store.postgres: cannot start without the database")
            && stderr.contains("no_such_database"),
        "{stderr}"
    );
}
