//! A real BIND 9 primary for the RFC 2136 tests: its own `named.conf` and zone in a temporary
//! directory, on a free loopback port, taking TSIG-signed updates. BIND missing is a failure,
//! never a skip: the tests exist to show the updates work against a real server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `named -g` with one dynamic zone.
pub struct Bind {
    child: Child,
    /// The UDP and TCP port.
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The TSIG key BIND accepts: its name and the base64 secret.
pub struct TsigKey {
    pub name: String,
    pub secret: String,
}

impl TsigKey {
    /// A fresh random HMAC-SHA256 key, as `tsig-keygen` would make one.
    pub fn random(name: &str) -> TsigKey {
        use base64::Engine;
        let bytes: [u8; 32] = rand::random();
        TsigKey {
            name: name.to_owned(),
            secret: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }
}

fn free_port() -> u16 {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    // The same port must be free for TCP too; BIND listens on both.
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("TCP port free as well");
    port
}

fn named_conf(dir: &std::path::Path, port: u16, zone: &str, key: &TsigKey) -> String {
    let d = dir.display();
    format!(
        "options {{ directory \"{d}\"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};\n  recursion no; pid-file none; session-keyfile \"{d}/session.key\";\n  managed-keys-directory \"{d}\"; dnssec-validation no; notify no; }};\ncontrols {{ }};\nkey \"{name}\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\nzone \"{zone}\" {{ type primary; file \"{d}/{zone}.zone\"; allow-update {{ key \"{name}\"; }}; }};\n",
        name = key.name,
        secret = key.secret,
    )
}

impl Bind {
    /// Starts BIND for `zone` with `records` (zone-file lines below the SOA and NS) and
    /// waits until it answers the zone's SOA.
    pub fn start(zone: &str, key: &TsigKey, records: &str) -> Bind {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let zone_file = format!(
            "$TTL 300\n@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 300\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n{records}"
        );
        std::fs::write(dir.path().join(format!("{zone}.zone")), zone_file).unwrap();
        let conf = dir.path().join("named.conf");
        std::fs::write(&conf, named_conf(dir.path(), port, zone, key)).unwrap();
        let child = Command::new("named")
            .args(["-g", "-n", "1", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("named.log")).unwrap())
            .spawn()
            .expect("BIND 9 (`named`) is not installed: apt-get install -y bind9 bind9-utils bind9-dnsutils");
        let bind = Bind { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while bind.serial(zone).is_none() {
            assert!(
                Instant::now() < deadline,
                "BIND did not start:\n{}",
                bind.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        bind
    }

    /// BIND's own log so far (updates are logged as `updating zone …`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// The directory holding the configuration, zone and journal.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// `dig` at this server: the answer lines of `name` `rtype`, `+short`.
    pub fn dig(&self, name: &str, rtype: &str) -> Option<Vec<String>> {
        let out = Command::new("dig")
            .args(["+short", "+tcp", "+time=2", "+tries=1", "-p"])
            .arg(self.port.to_string())
            .args(["@127.0.0.1", name, rtype])
            .output()
            .expect("dig (bind9-dnsutils) is not installed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || text.contains(";;") {
            return None;
        }
        Some(text.lines().map(str::to_owned).collect())
    }

    /// The TXT values at `name`, each record's strings joined.
    pub fn txt(&self, name: &str) -> Vec<String> {
        let lines = self.dig(name, "TXT").expect("BIND answers");
        lines
            .iter()
            .map(|l| l.split('"').skip(1).step_by(2).collect::<String>())
            .collect()
    }

    /// The zone's SOA serial.
    pub fn serial(&self, zone: &str) -> Option<u32> {
        let lines = self.dig(zone, "SOA")?;
        lines.first()?.split_whitespace().nth(2)?.parse().ok()
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
