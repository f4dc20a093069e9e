//! A three-replica cluster of the real binary: one PostgreSQL, one Pebble, the in-test DNS,
//! and replicas `a`, `b`, `c` on 127.0.0.1, 127.0.0.2 and 127.0.0.3 with the same HTTPS port,
//! so Pebble's validation reaches whichever replica the DNS answer names.
//!
//! Each replica has its own configuration and state directory and its own admin listener;
//! file watching is off, so a test decides when each replica applies an edit (`POST /reload`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use rustls::pki_types::CertificateDer;

use super::{
    Client, Fetched, Postgres, ServeProcess, TestConfig, admin_get, admin_request, eventually,
    init_crypto,
};
use crate::dns::{Answer, Dns};
use crate::pebble::{Pebble, Targets};

/// The host customers point `mta-sts.<domain>` at (a CNAME to it passes preflight).
pub const PUBLIC_HOSTNAME: &str = "sts.operator.test";
/// The TLS-RPT report host, when a cluster has one.
pub const REPORT_HOST: &str = "reports.operator.test";
/// The MTA whose DKIM verdicts `ingest-mail` believes, with `report_host`.
pub const MAIL_AUTHSERV: &str = "mx.operator.test";
/// Generous bound for Pebble to issue a handful of certificates on a busy 2-core machine.
pub const ISSUE_LIMIT: Duration = Duration::from_secs(60);
/// Replica names, in address order.
pub const NAMES: [&str; 3] = ["a", "b", "c"];

/// What a cluster is started with.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Tenants every replica has from the start.
    pub tenants: Vec<String>,
    /// Serve [`REPORT_HOST`] (it gets its own certificate: one more order).
    pub report_host: bool,
    /// Extra lines under `acme.schedule` (indented by four spaces).
    pub schedule: String,
    /// Pebble's certificate lifetime in seconds (its default is five years).
    pub validity_secs: Option<u64>,
}

/// One replica: its address, admin listener, configuration and (while it runs) process.
pub struct Replica {
    /// `a`, `b` or `c`: its `replica_name`.
    pub name: &'static str,
    /// Its loopback address (HTTPS and admin).
    pub ip: Ipv4Addr,
    /// Its admin listener.
    pub admin: SocketAddr,
    /// Its configuration directory (with `state/`).
    pub cfg: TestConfig,
    /// The running process; `None` once killed.
    pub process: Option<ServeProcess>,
    /// Every log line it printed, kept after it was killed.
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Replica {
    /// Its log so far (also after it was killed), for failure messages.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Its JSON log lines whose `message` is `message`.
    pub fn logged(&self, message: &str) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// The hosts of its `ACME order placed` log lines, in order.
    pub fn orders_placed(&self) -> Vec<String> {
        self.logged("ACME order placed")
            .iter()
            .map(|v| v["host"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    /// Whether its process runs.
    pub fn alive(&self) -> bool {
        self.process.is_some()
    }
}

/// The cluster; everything stops when it is dropped.
pub struct Cluster {
    /// Shared so a test can pause it from a blocking task while it fetches.
    pub pg: Arc<Postgres>,
    /// The database URL every replica uses.
    pub url: String,
    pub dns: Dns,
    pub pebble: Pebble,
    /// The HTTPS port all replicas listen on (each on its own address).
    pub port: u16,
    pub replicas: Vec<Replica>,
    /// Pebble's issuing root of this run.
    pub root: CertificateDer<'static>,
}

/// A port free on 127.0.0.1, 127.0.0.2 and 127.0.0.3 alike.
pub fn free_port_on_all() -> u16 {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let others: Vec<_> = [2u8, 3]
            .iter()
            .map(|last| std::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, *last), port)))
            .collect();
        if others.iter().all(|o| o.is_ok()) {
            return port;
        }
    }
    panic!("no port free on 127.0.0.1-3 after 100 tries");
}

/// `mta-sts.<domain>`.
pub fn policy_host(domain: &str) -> String {
    format!("mta-sts.{domain}")
}

/// The serial of a DER certificate.
pub fn serial(der: &CertificateDer<'_>) -> String {
    mta_stsd::certs::cert_info(der).unwrap().serial
}

impl Cluster {
    /// Starts PostgreSQL, the DNS, Pebble and the three replicas, and waits until each logs
    /// that it serves.
    pub async fn start(options: ClusterOptions) -> Cluster {
        init_crypto();
        let pg = Arc::new(Postgres::start());
        let url = pg.database();
        let dns = Dns::start().await;
        let port = free_port_on_all();
        let mut pebble = Pebble::prepare(Targets {
            tls_port: port,
            // HTTP-01 is not used: a port nobody listens on.
            http_port: crate::pebble::free_port(),
            dns: dns.addr,
        });
        if let Some(secs) = options.validity_secs {
            set_pebble_validity(&pebble, secs);
        }
        pebble.start().await;
        let root = pebble.root().await;
        let mut cluster = Cluster {
            pg,
            url,
            dns,
            pebble,
            port,
            replicas: Vec::new(),
            root,
        };
        cluster.configure(&options);
        cluster.launch();
        // Only now do the first hosts point at a replica, the leader: a test that needs the
        // challenge answered elsewhere says so, the others do not depend on it.
        let leader = cluster.leader(Duration::from_secs(30)).await;
        cluster.point_first_hosts(&options, Some(leader));
        cluster
    }

    /// Writes each replica's configuration directory.
    fn configure(&mut self, options: &ClusterOptions) {
        for (i, name) in NAMES.iter().enumerate() {
            let ip = Ipv4Addr::new(127, 0, 0, u8::try_from(i + 1).unwrap());
            let admin = SocketAddr::new(IpAddr::V4(ip), free_port_on(ip));
            let cfg = TestConfig::with_server(&self.server_yaml(name, ip, admin, options));
            for d in &options.tenants {
                cfg.simple_tenant(d);
            }
            self.replicas.push(Replica {
                name,
                ip,
                admin,
                cfg,
                process: None,
                lines: Arc::default(),
            });
        }
        // Until the leader is known, the first hosts point nowhere (preflight fails, rechecks).
        self.point_first_hosts(options, None);
    }

    /// Points the tenants and report host of `options` at replica `at` (nowhere with `None`).
    fn point_first_hosts(&self, options: &ClusterOptions, at: Option<usize>) {
        let ip = at.map_or(Ipv4Addr::new(192, 0, 2, 1), |i| self.replicas[i].ip);
        let mut hosts: Vec<String> = options.tenants.iter().map(|d| policy_host(d)).collect();
        if options.report_host {
            hosts.push(REPORT_HOST.to_owned());
        }
        for host in hosts {
            self.dns.set(&host, Answer::Ip(IpAddr::V4(ip)));
        }
    }

    /// Starts the three processes together, as a rollout would (the election and the
    /// migrations race), and waits until each serves where it was told.
    fn launch(&mut self) {
        let starting: Vec<_> = self
            .replicas
            .iter()
            .map(|r| ServeProcess::spawn(None, r.cfg.path()))
            .collect();
        for (replica, starting) in self.replicas.iter_mut().zip(starting) {
            let process = starting.serving();
            assert_eq!(
                process.addr,
                SocketAddr::new(IpAddr::V4(replica.ip), self.port),
                "replica {} serves where it was told",
                replica.name
            );
            replica.lines = process.log.clone();
            replica.process = Some(process);
        }
    }

    fn server_yaml(
        &self,
        name: &str,
        ip: Ipv4Addr,
        admin: SocketAddr,
        options: &ClusterOptions,
    ) -> String {
        let report = if options.report_host {
            format!(
                "tlsrpt:\n  report_host: {REPORT_HOST}\n  mail:\n    trusted_authserv_ids: [{MAIL_AUTHSERV}]\n"
            )
        } else {
            String::new()
        };
        format!(
            "listen: \"{ip}:{port}\"\nstate_dir: state\npublic_hostname: {PUBLIC_HOSTNAME}\n\
             issuer: acme\nadmin:\n  listen: \"{admin}\"\nreload:\n  watch: false\n\
             store:\n  postgres:\n    url: \"{url}\"\n    replica_name: {name}\n\
             acme:\n  directory: \"{directory}\"\n  contact: [ops@example.net]\n\
             \x20 trusted_roots: [\"{roots}\"]\n  challenges: [tls-alpn-01]\n\
             \x20 preflight:\n    public_addresses: [127.0.0.1, 127.0.0.2, 127.0.0.3]\n\
             \x20   nameservers: [\"{dns}\"]\n    recheck: 300ms\n\
             \x20 schedule:\n    backoff_base: 200ms\n    backoff_cap: 2s\n{schedule}{report}",
            port = self.port,
            url = self.url,
            directory = self.pebble.directory(),
            roots = self.pebble.api_ca_path().display(),
            dns = self.dns.addr,
            schedule = options.schedule,
        )
    }

    /// The replica at `index` (0 = `a`).
    pub fn replica(&self, index: usize) -> &Replica {
        &self.replicas[index]
    }

    /// Indexes of the replicas still running.
    pub fn alive(&self) -> Vec<usize> {
        (0..self.replicas.len())
            .filter(|i| self.replicas[*i].alive())
            .collect()
    }

    /// Every running replica's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for r in &self.replicas {
            out.push_str(&format!("\n===== replica {} =====\n{}", r.name, r.log()));
        }
        out.push_str(&format!("\n===== pebble =====\n{}", self.pebble.log_text()));
        out
    }

    /// `GET /api/v1/status` of replica `index`.
    pub async fn status(&self, index: usize) -> serde_json::Value {
        let got = admin_get(self.replicas[index].admin, "/api/v1/status").await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        got.json()
    }

    /// The `cluster.role` replica `index` reports (`"absent"` without a cluster section).
    pub async fn role(&self, index: usize) -> String {
        let status = self.status(index).await;
        status["cluster"]["role"]
            .as_str()
            .unwrap_or("absent")
            .to_owned()
    }

    /// Waits (up to `limit`) until replica `index` reports `role`.
    pub async fn wait_for_role(&self, index: usize, role: &str, limit: Duration) -> bool {
        eventually(limit, || async { self.role(index).await == role }).await
    }

    /// The roles of the running replicas, by index.
    pub async fn roles(&self) -> Vec<(usize, String)> {
        let mut roles = Vec::new();
        for i in self.alive() {
            roles.push((i, self.role(i).await));
        }
        roles
    }

    /// Waits (up to `limit`) until exactly one running replica is the leader and every other
    /// running one a follower; its index. Two leaders at once fail the test at once.
    pub async fn leader(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let roles = self.roles().await;
            let leaders: Vec<usize> = roles
                .iter()
                .filter(|(_, r)| r == "leader")
                .map(|(i, _)| *i)
                .collect();
            assert!(
                leaders.len() <= 1,
                "two leaders at once: {roles:?}{}",
                self.logs()
            );
            if leaders.len() == 1 && roles.iter().all(|(_, r)| r == "leader" || r == "follower") {
                return leaders[0];
            }
            assert!(
                Instant::now() < deadline,
                "no single leader within {limit:?}: {roles:?}{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The running replicas other than `index`.
    pub fn others(&self, index: usize) -> Vec<usize> {
        self.alive().into_iter().filter(|i| *i != index).collect()
    }

    /// `kill -9` replica `index`: no shutdown, its PostgreSQL sessions simply end.
    pub fn kill_9(&mut self, index: usize) {
        let process = self.replicas[index]
            .process
            .take()
            .expect("replica running");
        process.kill_9();
    }

    /// Makes `mta-sts.<domain>` resolve to replica `index` (for Pebble and the preflight).
    pub fn point(&self, domain: &str, index: usize) {
        self.dns.set(
            &policy_host(domain),
            Answer::Ip(IpAddr::V4(self.replicas[index].ip)),
        );
    }

    /// Writes a simple tenant for each of `domains` into the configuration of each replica
    /// of `on` (not reloaded).
    pub fn write_tenants(&self, domains: &[&str], on: &[usize]) {
        for i in on {
            for d in domains {
                self.replicas[*i].cfg.simple_tenant(d);
            }
        }
    }

    /// `POST /reload` on replica `index`; it must succeed.
    pub async fn reload(&self, index: usize) {
        let got = admin_request(self.replicas[index].admin, Method::POST, "/reload", &[]).await;
        assert_eq!(
            got.status,
            StatusCode::OK,
            "reload on {}: {}",
            index,
            got.body
        );
    }

    /// `GET /api/v1/tenants/<domain>` of replica `index`.
    pub async fn tenant(&self, index: usize, domain: &str) -> serde_json::Value {
        let got = admin_get(
            self.replicas[index].admin,
            &format!("/api/v1/tenants/{domain}"),
        )
        .await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        got.json()
    }

    /// How many TLS-RPT reports for `domain` replica `index`'s API counts (last 30 days).
    pub async fn reports(&self, index: usize, domain: &str) -> u64 {
        let got = admin_get(
            self.replicas[index].admin,
            &format!("/api/v1/tenants/{domain}/tlsrpt?since=30d"),
        )
        .await;
        assert_eq!(
            got.status,
            StatusCode::OK,
            "summary on {}: {}",
            self.replicas[index].name,
            got.body
        );
        got.json()["reports"]
            .as_u64()
            .unwrap_or_else(|| panic!("no report count: {}", got.body))
    }

    /// An HTTPS client for replica `index` trusting Pebble's root.
    pub fn client(&self, index: usize) -> Client {
        Client::new(
            SocketAddr::new(IpAddr::V4(self.replicas[index].ip), self.port),
            self.root.clone(),
        )
    }

    /// Fetches `domain`'s policy from replica `index` over real TLS with SNI
    /// `mta-sts.<domain>` (verified against Pebble's root); the leaf served and the answer.
    pub async fn fetch_policy(
        &self,
        index: usize,
        domain: &str,
    ) -> Result<(CertificateDer<'static>, Fetched), String> {
        let client = self.client(index);
        let host = policy_host(domain);
        let tls = client
            .handshake(&host, &[b"http/1.1"])
            .await
            .map_err(|e| format!("handshake for {host} at {}: {e}", client.addr))?;
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        drop(tls);
        let got = client.get_policy(&host).await?;
        if got.status != StatusCode::OK {
            return Err(format!(
                "policy for {host} at {}: {}",
                client.addr, got.status
            ));
        }
        Ok((leaf, got))
    }

    /// The serial of the certificate replica `index` serves for `host` (any SNI name, e.g. the
    /// report host), verified against Pebble's root.
    pub async fn served_serial(&self, index: usize, host: &str) -> Result<String, String> {
        let client = self.client(index);
        let tls = client
            .handshake(host, &[b"http/1.1"])
            .await
            .map_err(|e| format!("handshake for {host} at {}: {e}", client.addr))?;
        Ok(serial(&tls.get_ref().1.peer_certificates().unwrap()[0]))
    }

    /// Waits (up to `limit`) until every running replica serves a certificate for each of
    /// `hosts`, the same serial on all; the serial per host.
    pub async fn wait_served_everywhere(
        &self,
        hosts: &[String],
        limit: Duration,
    ) -> Result<Vec<String>, String> {
        let deadline = Instant::now() + limit;
        loop {
            let mut last = String::new();
            let mut serials = Vec::new();
            'hosts: for host in hosts {
                let mut seen: Option<String> = None;
                for i in self.alive() {
                    match self.served_serial(i, host).await {
                        Ok(s) if seen.as_ref().is_none_or(|x| *x == s) => seen = Some(s),
                        Ok(s) => {
                            last = format!("{host}: {} serves {s}, another {seen:?}", NAMES[i]);
                            break 'hosts;
                        }
                        Err(e) => {
                            last = e;
                            break 'hosts;
                        }
                    }
                }
                serials.push(seen.unwrap_or_default());
            }
            if serials.len() == hosts.len() {
                return Ok(serials);
            }
            if Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// POSTs a TLS-RPT report (JSON) for `domain` to replica `index`.
    pub async fn post_report(
        &self,
        index: usize,
        domain: &str,
        json: Vec<u8>,
    ) -> Result<Fetched, String> {
        self.client(index)
            .post_report(REPORT_HOST, domain, "application/tlsrpt+json", json)
            .await
    }

    /// New orders Pebble received so far.
    pub fn orders(&self) -> usize {
        self.pebble.orders_received()
    }

    /// Certificates Pebble issued so far.
    pub fn issued(&self) -> usize {
        self.pebble
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("Issued certificate serial"))
            .count()
    }
}

/// A port free on `ip`.
fn free_port_on(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sets Pebble's `certificateValidityPeriod` (seconds) in its prepared configuration.
fn set_pebble_validity(pebble: &Pebble, secs: u64) {
    let path = pebble.dir.path().join("pebble.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["pebble"]["certificateValidityPeriod"] = secs.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}
