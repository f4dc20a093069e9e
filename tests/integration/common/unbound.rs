//! Debian's unbound as a sender's (or a CA's) recursive resolver: the customers' zones are
//! auth-zones served to its iterator (so CNAMEs out of them are followed) and the daemon's
//! delegated zone is a stub zone. No cache, no DNSSEC validation; killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::eventually;

/// A loopback port free for both UDP and TCP right now.
pub fn free_dns_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The `unbound` binary; a test fails (never skips) without it.
pub fn unbound_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("unbound"))
        .find(|p| p.is_file())
        .expect(
            "unbound is not installed: the recursive chain tests need Debian's unbound \
             (apt-get install -y unbound, and keep the system service stopped)",
        )
}

/// unbound in the foreground on its own config.
pub struct Unbound {
    child: Child,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    /// unbound's stderr (its log).
    err: PathBuf,
}

impl Unbound {
    /// Starts unbound on a free loopback port in `dir`: each `(origin, zone file)` of
    /// `customers` is an auth-zone, `stub` (zone, server) reaches the delegated zone.
    pub fn start(dir: &Path, customers: &[(&str, &Path)], stub: (&str, SocketAddr)) -> Unbound {
        Self::start_on(free_dns_port(), dir, customers, stub)
    }

    /// [`Unbound::start`] on `port` (chosen earlier, e.g. for a CA's `-dnsserver`).
    pub fn start_on(
        port: u16,
        dir: &Path,
        customers: &[(&str, &Path)],
        stub: (&str, SocketAddr),
    ) -> Unbound {
        let mut conf = format!(
            "server:\n  interface: 127.0.0.1@{port}\n  do-ip6: no\n  do-not-query-localhost: no\n  \
             access-control: 127.0.0.0/8 allow\n  chroot: \"\"\n  username: \"\"\n  pidfile: \"\"\n  \
             directory: \"{dir}\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n  \
             module-config: \"iterator\"\n  cache-max-ttl: 0\n  cache-min-ttl: 0\n  \
             cache-max-negative-ttl: 0\n  serve-expired: no\n  local-zone: \"test.\" nodefault\n\
             remote-control:\n  control-enable: no\n\
             stub-zone:\n  name: \"{zone}.\"\n  stub-addr: {ip}@{dport}\n",
            dir = dir.display(),
            zone = stub.0,
            ip = stub.1.ip(),
            dport = stub.1.port(),
        );
        for (origin, file) in customers {
            conf.push_str(&format!(
                "auth-zone:\n  name: \"{origin}.\"\n  zonefile: \"{}\"\n  for-downstream: no\n  \
                 for-upstream: yes\n  fallback-enabled: no\n",
                file.display()
            ));
        }
        let conf_path = dir.join("unbound.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let err = dir.join("unbound.err");
        let child = Command::new(unbound_binary())
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("spawn unbound");
        Unbound {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            err,
        }
    }

    /// Waits (up to 30 s) for unbound's `start of service` line.
    pub async fn started(&mut self) {
        let up = eventually(Duration::from_secs(30), || async {
            std::fs::read_to_string(&self.err).is_ok_and(|s| s.contains("start of service"))
        })
        .await;
        self.alive_or_panic();
        assert!(
            up,
            "unbound did not start: {:?}",
            std::fs::read_to_string(&self.err)
        );
    }

    /// Panics, with unbound's output, if it has exited.
    pub fn alive_or_panic(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            let err = std::fs::read_to_string(&self.err);
            panic!("unbound exited ({status}): {err:?}");
        }
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
