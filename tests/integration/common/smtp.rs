//! A real SMTP server for the STARTTLS probe tests: Debian's aiosmtpd (`python3-aiosmtpd`),
//! run by Debian's interpreter on 127.0.0.1 with an ephemeral port it binds itself (no port
//! race), with STARTTLS from a certificate and key the test wrote, or without STARTTLS.
//! aiosmtpd missing is a failure, never a skip.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Binds the address and port given (port 0: one it picks, no port race), prints the port
/// once listening, then serves until killed. Arguments: hostname, `tls`, `refuse` or `plain`,
/// address, port, then certificate and key files.
/// `require_starttls` is aiosmtpd's default when TLS is on: commands other than EHLO,
/// STARTTLS and QUIT are refused before TLS, as on a strict MX. `refuse` advertises STARTTLS
/// and answers it with 454, as a server whose TLS setup is broken does.
const SERVER: &str = r#"
import asyncio, ssl, sys
from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import SMTP

class Refusing(SMTP):
    async def smtp_STARTTLS(self, arg):
        await self.push("454 4.7.0 TLS not available due to temporary reason")

async def main():
    hostname, mode, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ctx = None
    if mode != "plain":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(sys.argv[5], sys.argv[6])
    cls = Refusing if mode == "refuse" else SMTP
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: cls(Sink(), hostname=hostname, tls_context=ctx, require_starttls=ctx is not None),
        host=host, port=port)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"#;

/// A running aiosmtpd; killed on drop.
pub struct SmtpServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl SmtpServer {
    /// aiosmtpd greeting as `hostname`, offering STARTTLS with `tls` = (certificate chain
    /// PEM file, key PEM file), or no STARTTLS at all with `None`.
    pub async fn start(hostname: &str, tls: Option<(&Path, &Path)>) -> SmtpServer {
        Self::start_on(hostname, tls, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// [`SmtpServer::start`] on `addr` (several loopback addresses can share one port, as
    /// MX hosts probed on one `--smtp-port` do).
    pub async fn start_on(
        hostname: &str,
        tls: Option<(&Path, &Path)>,
        addr: SocketAddr,
    ) -> SmtpServer {
        match tls {
            Some((cert, key)) => Self::run(hostname, "tls", addr, &[cert, key]).await,
            None => Self::run(hostname, "plain", addr, &[]).await,
        }
    }

    /// aiosmtpd advertising STARTTLS but answering it with `454 4.7.0`.
    pub async fn start_refusing_starttls(hostname: &str, cert: &Path, key: &Path) -> SmtpServer {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::run(hostname, "refuse", addr, &[cert, key]).await
    }

    async fn run(hostname: &str, mode: &str, addr: SocketAddr, files: &[&Path]) -> SmtpServer {
        let mut cmd = Command::new("/usr/bin/python3");
        let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
        cmd.args(["-c", SERVER, hostname, mode, &ip, &port])
            .args(files);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("/usr/bin/python3 (Debian's, with python3-aiosmtpd)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let server = match line.trim().parse::<u16>() {
            Ok(port) => SmtpServer {
                child,
                addr: SocketAddr::new(addr.ip(), port),
            },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "aiosmtpd did not start (install python3-aiosmtpd): printed {line:?}, {status:?}"
                );
            }
        };
        server.wait_accepting().await;
        server
    }

    /// Waits until a TCP connect succeeds and the 220 greeting arrives.
    async fn wait_accepting(&self) {
        use tokio::io::AsyncReadExt;
        let addr = self.addr;
        let ready = super::eventually(Duration::from_secs(10), || async move {
            let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                return false;
            };
            let mut buf = [0u8; 4];
            let read = tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut buf));
            matches!(read.await, Ok(Ok(_))) && &buf[..3] == b"220"
        })
        .await;
        assert!(ready, "aiosmtpd on {addr} never greeted");
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
