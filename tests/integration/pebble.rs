//! Pebble (Let's Encrypt's test ACME server, Debian package `pebble`) as a child process with
//! its own API certificate, ports and DNS, killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, StatusCode};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, pem::PemObject};

use crate::common::{Client, eventually};

/// Where Pebble's binary is (Debian package `pebble`).
const PEBBLE: &str = "/usr/bin/pebble";

/// A free TCP port on loopback (bound and released; Pebble binds it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The ports Pebble validates against and the DNS it asks.
pub struct Targets {
    /// Port of the daemon's HTTPS listener (TLS-ALPN-01).
    pub tls_port: u16,
    /// Port of the daemon's HTTP listener (HTTP-01).
    pub http_port: u16,
    /// The test's DNS responder.
    pub dns: SocketAddr,
}

/// A running Pebble.
pub struct Pebble {
    pub dir: tempfile::TempDir,
    pub api: SocketAddr,
    pub mgmt: SocketAddr,
    api_ca: CertificateDer<'static>,
    child: Option<Child>,
    /// Every line Pebble printed, across restarts.
    pub log: Arc<Mutex<Vec<String>>>,
    targets: Targets,
}

impl Pebble {
    /// Chooses ports and writes the API certificate and configuration; does not start Pebble.
    pub fn prepare(targets: Targets) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.path().join("api-ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("api.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("api.key"), key.serialize_pem()).unwrap();

        let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mgmt = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": api.to_string(),
                "managementListenAddress": mgmt.to_string(),
                "certificate": dir.path().join("api.pem"),
                "privateKey": dir.path().join("api.key"),
                "httpPort": targets.http_port,
                "tlsPort": targets.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        std::fs::write(
            dir.path().join("pebble.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        Pebble {
            dir,
            api,
            mgmt,
            api_ca: ca_cert.der().clone(),
            child: None,
            log: Arc::default(),
            targets,
        }
    }

    /// The directory URL for the daemon's `acme.directory`.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.api.port())
    }

    /// The PEM file the daemon must trust for Pebble's API (`acme.trusted_roots`).
    pub fn api_ca_path(&self) -> PathBuf {
        self.dir.path().join("api-ca.pem")
    }

    /// Starts (or restarts) Pebble and waits until its API answers.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "Pebble already running");
        let mut child = Command::new(PEBBLE)
            .arg("-config")
            .arg(self.dir.path().join("pebble.json"))
            .arg("-dnsserver")
            .arg(self.targets.dns.to_string())
            .arg("-strict=false")
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start /usr/bin/pebble (apt-get install pebble)");
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = self.log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        self.child = Some(child);
        let client = Client::new(self.api, self.api_ca.clone());
        let up = eventually(Duration::from_secs(20), || {
            let client = client.clone();
            async move {
                matches!(
                    client.request("localhost", "localhost", Method::GET, "/dir", false).await,
                    Ok(r) if r.status == StatusCode::OK
                )
            }
        })
        .await;
        assert!(up, "Pebble did not come up:\n{}", self.log_text());
    }

    /// Kills Pebble (the ACME server is down until [`Pebble::start`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Pebble's current issuing root, from the management API (new on every start).
    pub async fn root(&self) -> CertificateDer<'static> {
        let client = Client::new(self.mgmt, self.api_ca.clone());
        let got = client
            .request("localhost", "localhost", Method::GET, "/roots/0", false)
            .await
            .expect("Pebble management API");
        assert_eq!(got.status, StatusCode::OK);
        CertificateDer::from_pem_slice(&got.body).expect("root PEM")
    }

    /// New orders Pebble received (lines of its request log for the new-order endpoint).
    pub fn orders_received(&self) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("POST /order-plz"))
            .count()
    }

    /// Everything Pebble printed, for assertion messages.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}
