//! `deploy/local-cluster/up.sh` and `down.sh`, run as the README runs them (with the test's
//! binary and ports): a PostgreSQL server of their own and three replicas of the real binary
//! on 127.0.0.1, .2 and .3. Every replica serves the example tenants with a certificate of
//! the one CA the script prints, every replica reports the cluster, exactly one is the
//! leader (the one up.sh names), and down.sh stops every process and removes the directory.
//!
//! Needs Debian's `postgresql` and python3 (which up.sh uses to read the admin API).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use crate::common::{Client, admin_get, binary};
use crate::pebble::free_port;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/local-cluster")
        .join(name)
}

/// The scripts' settings: the test's binary, a directory of its own and free ports.
struct Cluster {
    _parent: tempfile::TempDir,
    dir: PathBuf,
    https_port: u16,
    admin_ports: [u16; 3],
}

impl Cluster {
    fn new() -> Cluster {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        // As root, up.sh runs PostgreSQL as `postgres`, which must reach the directory.
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = parent.path().join("cluster");
        Cluster {
            _parent: parent,
            dir,
            https_port: free_port(),
            admin_ports: [free_port(), free_port(), free_port()],
        }
    }

    fn run(&self, name: &str) -> Output {
        let ports = self.admin_ports.map(|p| p.to_string()).join(" ");
        Command::new("bash")
            .arg(script(name))
            .env("MTA_STSD_BIN", binary())
            .env("MTA_STSD_CLUSTER_DIR", &self.dir)
            .env("MTA_STSD_CLUSTER_PORT", self.https_port.to_string())
            .env("MTA_STSD_CLUSTER_ADMIN_PORTS", ports)
            .output()
            .unwrap()
    }

    fn admin(&self, n: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, n as u8 + 1], self.admin_ports[n]))
    }

    fn https(&self, n: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, n as u8 + 1], self.https_port))
    }

    /// The replicas' process ids, from the files up.sh writes.
    fn pids(&self) -> Vec<u32> {
        (1..=3)
            .map(|n| {
                let file = self.dir.join(format!("replica-{n}/pid"));
                std::fs::read_to_string(&file)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
                    .trim()
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    /// The last lines of each replica's log, for failure messages.
    fn logs(&self) -> String {
        (1..=3)
            .map(|n| {
                let log = std::fs::read_to_string(self.dir.join(format!("replica-{n}/log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- replica-{n}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failed assertion still takes the processes down.
        if self.dir.exists() {
            let _ = self.run("down.sh");
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_three_replicas_with_one_leader_and_down_removes_them() {
    let cluster = Cluster::new();
    let up = tokio::task::block_in_place(|| cluster.run("up.sh"));
    assert!(
        up.status.success(),
        "up.sh: {}\n{}",
        text(&up),
        cluster.logs()
    );
    let printed = String::from_utf8_lossy(&up.stdout).into_owned();

    // Each replica answers with its own name and role; exactly one leads.
    let mut leaders = Vec::new();
    for n in 0..3 {
        let status = admin_get(cluster.admin(n), "/api/v1/status").await;
        assert_eq!(status.status, 200, "replica-{}: {}", n + 1, status.body);
        let json: Value = status.json();
        let c = &json["cluster"];
        assert_eq!(c["replica"], format!("replica-{}", n + 1), "{json}");
        let role = c["role"]
            .as_str()
            .unwrap_or_else(|| panic!("no role: {json}"));
        assert!(["leader", "follower"].contains(&role), "{json}");
        if role == "leader" {
            leaders.push(c["replica"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        leaders.len(),
        1,
        "exactly one leader: {leaders:?}\n{printed}"
    );
    let leader_line = format!("leader       {}", leaders[0]);
    assert!(
        printed.contains(&leader_line),
        "up.sh names the leader: {printed}"
    );

    // Every replica serves every example tenant's policy with a certificate of the CA up.sh
    // points clients at.
    let ca_path = cluster.dir.join("ca.crt");
    assert!(printed.contains(ca_path.to_str().unwrap()), "{printed}");
    let ca = CertificateDer::from_pem_file(&ca_path).unwrap();
    for n in 0..3 {
        let client = Client::new(cluster.https(n), ca.clone());
        for domain in ["example.com", "example.net", "example.org"] {
            let host = format!("mta-sts.{domain}");
            // Certificates are issued after start: wait for them, bounded.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let body = loop {
                match client.get_policy(&host).await {
                    Ok(f) if f.status == 200 => break f.body,
                    other => assert!(
                        std::time::Instant::now() < deadline,
                        "replica-{} does not serve {host}: {other:?}\n{}",
                        n + 1,
                        cluster.logs()
                    ),
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            };
            let body = String::from_utf8_lossy(&body);
            assert!(body.starts_with("version: STSv1\r\n"), "{body}");
        }
    }

    // down.sh: every replica gone, the directory removed, a second run a no-op.
    let pids = cluster.pids();
    assert!(pids.iter().all(|p| alive(*p)), "{pids:?}");
    let down = tokio::task::block_in_place(|| cluster.run("down.sh"));
    assert!(down.status.success(), "down.sh: {}", text(&down));
    for pid in pids {
        assert!(!alive(pid), "replica {pid} still runs after down.sh");
    }
    assert!(
        !cluster.dir.exists(),
        "down.sh removes {}",
        cluster.dir.display()
    );
    for n in 0..3 {
        assert!(
            std::net::TcpStream::connect(cluster.admin(n)).is_err(),
            "replica-{} still listens",
            n + 1
        );
    }
    let again = tokio::task::block_in_place(|| cluster.run("down.sh"));
    assert!(again.status.success(), "{}", text(&again));
}

#[test]
fn up_refuses_a_directory_in_use() {
    // A second up.sh on the same directory must not start another PostgreSQL or replicas
    // over the first one's files.
    let cluster = Cluster::new();
    std::fs::create_dir(&cluster.dir).unwrap();
    std::fs::write(cluster.dir.join("marker"), "x").unwrap();
    let out = cluster.run("up.sh");
    assert!(!out.status.success());
    assert!(text(&out).contains("down.sh"), "{}", text(&out));
    assert!(cluster.dir.join("marker").exists());
    // And down.sh leaves a directory up.sh did not make alone.
    let down = cluster.run("down.sh");
    assert!(!down.status.success(), "{}", text(&down));
    assert!(cluster.dir.join("marker").exists());
    std::fs::remove_dir_all(&cluster.dir).unwrap();
}
