//! Cluster mode's figures through the library's PostgreSQL stores; `benches/cluster.sh` (see
//! its `--help`) starts the PostgreSQL server and the replicas and runs these commands:
//!
//! - `intake URL SQLITE REPORTS THREADS`: REPORTS distinct reports stored by THREADS threads
//!   through `PgReportStore` and through the SQLite `SqliteStore` (a new file at SQLITE), the
//!   same parsed reports for both; prints reports/s of each.
//! - `fill-certs URL COUNT DIRECTORY`: COUNT hosts (`mta-sts.t0000000.example`, … as
//!   benches/scale.py names them) with a stored certificate and a `valid` status: the first
//!   saved through `PgCertStore` (so the row is what the leader writes), the others copied
//!   from it by one `INSERT … SELECT` (one key and chain for every host, as scale.py's
//!   hard-linked files; a replica still reads and parses each row).
//! - `size URL TENANTS DAYS ORGS`: TENANTS hosts each with its own certificate (leaf and
//!   intermediate, as an ACME CA's chain) and status through `PgCertStore`, then DAYS days of
//!   one report per tenant from each of ORGS organizations through `PgReportStore`; prints
//!   the rows and `pg_total_relation_size` of every table.
//! - `renew URL HOST DIRECTORY ROUNDS ADDR…`: ROUNDS times, a new certificate for HOST saved
//!   through `PgCertStore` (its transaction sends the notification a leader's save sends),
//!   then TLS handshakes (SNI HOST) with each ADDR every 2 ms until it presents the new
//!   certificate; prints the milliseconds per replica.
//!
//! Asserts nothing about time: it prints figures, and fails only when something never
//! happens (a replica that never serves the new certificate within 30 s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mta_stsd::certs::provider::CertState;
use mta_stsd::certs::store::{CertMeta, CertStore, StatusRecord, StoredCert};
use mta_stsd::pgstore::Db;
use mta_stsd::pgstore::certs::PgCertStore;
use mta_stsd::pgstore::reports::PgReportStore;
use mta_stsd::tlsrpt::report::Report;
use mta_stsd::tlsrpt::store::{ReportStore, Source, SqliteStore, StoredReport};
use rcgen::{CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or_else(|| usage()) };
    let num = |i: usize| -> usize { arg(i).parse().unwrap_or_else(|_| usage()) };
    match arg(0) {
        "intake" => intake(arg(1), arg(2), num(3), num(4)),
        "fill-certs" => fill_certs(arg(1), num(2), arg(3)),
        "size" => size(arg(1), num(2), num(3), num(4)),
        "renew" => renew(arg(1), arg(2), arg(3), num(4), &args[5..]),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: cluster intake URL SQLITE REPORTS THREADS | fill-certs URL COUNT DIRECTORY | \
         size URL TENANTS DAYS ORGS | renew URL HOST DIRECTORY ROUNDS ADDR…"
    );
    std::process::exit(2)
}

fn connect(url: &str) -> Arc<Db> {
    Arc::new(Db::connect(url).unwrap_or_else(|e| panic!("PostgreSQL: {e}")))
}

/// The host of tenant `i`, as benches/scale.py names its tenants.
fn host(i: usize) -> String {
    format!("mta-sts.t{i:07}.example")
}

// ---------------------------------------------------------------------------------------
// Reports

/// A daily report from `org` about tenant `t`'s domain for `day`, like the big senders':
/// one STS policy, and failure details in one report of ten.
fn report(org: usize, t: usize, day: time::Date) -> StoredReport {
    let domain = format!("t{t:07}.example");
    let start = day.midnight().assume_utc();
    let end = start + time::Duration::days(1);
    let fmt = &time::format_description::well_known::Rfc3339;
    let failing = (t + org).is_multiple_of(10);
    let details = if failing {
        serde_json::json!([{"result-type": "certificate-expired", "sending-mta-ip": "192.0.2.7",
            "receiving-mx-hostname": format!("mx1.{domain}"), "receiving-ip": "198.51.100.25",
            "failed-session-count": 3}])
    } else {
        serde_json::json!([])
    };
    let json = serde_json::to_vec(&serde_json::json!({
        "organization-name": format!("Sender {org} Inc."),
        "date-range": {"start-datetime": start.format(fmt).unwrap(),
                       "end-datetime": (end - time::Duration::seconds(1)).format(fmt).unwrap()},
        "contact-info": format!("smtp-tls-reporting@sender{org}.example"),
        "report-id": format!("{}_{domain}", start.format(fmt).unwrap()),
        "policies": [{
            "policy": {"policy-type": "sts", "policy-domain": domain,
                       "policy-string": ["version: STSv1", "mode: enforce",
                                         format!("mx: mx1.{domain}"), format!("mx: mx2.{domain}"),
                                         "max_age: 604800"],
                       "mx-host": [format!("mx1.{domain}"), format!("mx2.{domain}")]},
            "summary": {"total-successful-session-count": 120 + t % 50,
                        "total-failure-session-count": if failing { 3 } else { 0 }},
            "failure-details": details,
        }]
    }))
    .unwrap();
    StoredReport {
        tenant: domain,
        source: Source::Https,
        received: end + time::Duration::hours(2),
        report: Report::from_json(&json).expect("a valid report"),
        raw_json: json,
        signing_domain: None,
        submitter_mismatch: false,
    }
}

/// Stores `reports` with `threads` threads; the seconds it took.
fn store_all(store: Arc<dyn ReportStore>, reports: Arc<Vec<StoredReport>>, threads: usize) -> f64 {
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|w| {
            let (store, reports) = (store.clone(), reports.clone());
            std::thread::spawn(move || {
                for r in reports.iter().skip(w).step_by(threads) {
                    store.insert(r).expect("insert");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    started.elapsed().as_secs_f64()
}

fn intake(url: &str, sqlite: &str, n: usize, threads: usize) {
    let day = time::macros::date!(2026 - 11 - 01);
    // Distinct reports: tenant i % 10 000, organization and day from the rest.
    let reports: Arc<Vec<StoredReport>> = Arc::new(
        (0..n)
            .map(|i| {
                let t = i % 10_000;
                let rest = i / 10_000;
                report(rest % 4, t, day + time::Duration::days((rest / 4) as i64))
            })
            .collect(),
    );
    let pg: Arc<dyn ReportStore> = Arc::new(PgReportStore::new(connect(url)));
    let lite: Arc<dyn ReportStore> =
        Arc::new(SqliteStore::open(std::path::Path::new(sqlite)).expect("SQLite"));
    for (name, store) in [("postgresql", pg), ("sqlite", lite)] {
        let secs = store_all(store, reports.clone(), threads);
        println!(
            "{}",
            serde_json::json!({"store": name, "threads": threads, "reports": n,
                "seconds": secs, "reports_per_s": n as f64 / secs})
        );
    }
}

// ---------------------------------------------------------------------------------------
// Certificates

/// A self-signed certificate for `name`: chain and PKCS#8 key in PEM.
fn self_signed(name: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

fn stored(chain_pem: String, key_pem: String, directory: &str) -> StoredCert {
    StoredCert {
        chain_pem,
        key_pem,
        meta: CertMeta {
            directory: directory.to_owned(),
            order_url: Some("https://ca.example/acme/order/1/2".into()),
            issued_at: OffsetDateTime::now_utc().unix_timestamp(),
        },
    }
}

fn valid() -> StatusRecord {
    StatusRecord {
        state: CertState::Valid,
        last_error: None,
        next_attempt: None,
        updated: OffsetDateTime::now_utc().unix_timestamp(),
    }
}

fn fill_certs(url: &str, count: usize, directory: &str) {
    let db = connect(url);
    let store = PgCertStore::new(db.clone());
    let first = host(0);
    let (chain, key) = self_signed("mta-sts.example");
    let started = Instant::now();
    store
        .save_cert(&first, &stored(chain, key, directory))
        .unwrap();
    store.save_status(&first, &valid()).unwrap();
    // Copies in slices of 10 000 hosts: one statement for all 100 000 outlasts the store's
    // query timeout.
    let count = i64::try_from(count).unwrap();
    for start in (1..count).step_by(10_000) {
        let end = (start + 9_999).min(count - 1);
        let first = first.clone();
        db.run(move |pool| async move {
            let client = pool.get().await?;
            for table in ["certificates", "cert_status"] {
                let columns = if table == "certificates" {
                    "chain_pem, key_pem, directory, order_url, issued_at, updated"
                } else {
                    "record, updated"
                };
                let sql = format!(
                    "INSERT INTO {table} (host, {columns})
                     SELECT 'mta-sts.t' || lpad(i::text, 7, '0') || '.example', {columns}
                     FROM {table}, generate_series($1::bigint, $2::bigint) AS i WHERE host = $3
                     ON CONFLICT (host) DO NOTHING"
                );
                client.execute(&sql, &[&start, &end, &first]).await?;
            }
            Ok(())
        })
        .unwrap();
    }
    db.run(|pool| async move {
        pool.get().await?.batch_execute("ANALYZE").await?;
        Ok(())
    })
    .unwrap();
    println!(
        "{}",
        serde_json::json!({"stored_certificates": count,
            "seconds": started.elapsed().as_secs_f64()})
    );
}

/// An intermediate CA, as an ACME CA's chain has one above each leaf.
fn intermediate() -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Bench Intermediate E9");
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    let cert = params.self_signed(&key).unwrap();
    let pem = cert.pem();
    (Issuer::new(params, key), pem)
}

fn size(url: &str, tenants: usize, days: usize, orgs: usize) {
    let db = connect(url);
    let certs = Arc::new(PgCertStore::new(db.clone()));
    let (issuer, intermediate_pem) = intermediate();
    let (issuer, intermediate_pem) = (Arc::new(issuer), Arc::new(intermediate_pem));
    let started = Instant::now();
    let threads = 8;
    let workers: Vec<_> = (0..threads)
        .map(|w| {
            let (certs, issuer, inter) = (certs.clone(), issuer.clone(), intermediate_pem.clone());
            std::thread::spawn(move || {
                for t in (w..tenants).step_by(threads) {
                    let key = KeyPair::generate().unwrap();
                    let leaf = CertificateParams::new(vec![host(t)])
                        .unwrap()
                        .signed_by(&key, &issuer)
                        .unwrap();
                    let chain = format!("{}{inter}", leaf.pem());
                    let cert = stored(chain, key.serialize_pem(), "https://ca.example/dir");
                    certs.save_cert(&host(t), &cert).unwrap();
                    certs.save_status(&host(t), &valid()).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    eprintln!(
        "# {tenants} certificates in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let first = time::macros::date!(2026 - 10 - 01);
    let reports: Arc<Vec<StoredReport>> = Arc::new(
        (0..days)
            .flat_map(|d| (0..orgs).flat_map(move |o| (0..tenants).map(move |t| (d, o, t))))
            .map(|(d, o, t)| report(o, t, first + time::Duration::days(d as i64)))
            .collect(),
    );
    let secs = store_all(
        Arc::new(PgReportStore::new(db.clone())),
        reports.clone(),
        threads,
    );
    eprintln!("# {} reports in {secs:.1} s", reports.len());
    print_sizes(&db);
}

/// Rows and `pg_total_relation_size` (table, indexes, TOAST) of every table, and the total.
fn print_sizes(db: &Db) {
    let rows = db
        .run(|pool| async move {
            let client = pool.get().await?;
            client.batch_execute("VACUUM ANALYZE").await?;
            let tables = client
                .query(
                    "SELECT c.relname::TEXT, pg_total_relation_size(c.oid)::BIGINT
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1",
                    &[],
                )
                .await?;
            let mut out = Vec::new();
            for t in tables {
                let name: String = t.get(0);
                let bytes: i64 = t.get(1);
                let count = client
                    .query_one(&format!("SELECT count(*) FROM {name}"), &[])
                    .await?;
                out.push((name, count.get::<_, i64>(0), bytes));
            }
            let total = client
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await?;
            Ok((out, total.get::<_, i64>(0)))
        })
        .unwrap();
    let (tables, database) = rows;
    let mut sum = 0;
    for (name, count, bytes) in &tables {
        sum += bytes;
        println!(
            "{}",
            serde_json::json!({"table": name, "rows": count, "total_relation_bytes": bytes})
        );
    }
    println!(
        "{}",
        serde_json::json!({"tables_bytes": sum, "database_bytes": database})
    );
}

// ---------------------------------------------------------------------------------------
// Propagation of a saved certificate

/// Accepts any certificate: the bench compares the presented leaf with the one it saved.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The leaf `addr` presents for `host`, if the handshake completes.
async fn leaf(
    connector: &tokio_rustls::TlsConnector,
    addr: &str,
    host: &rustls::pki_types::ServerName<'static>,
) -> Option<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let tls = connector.connect(host.clone(), tcp).await.ok()?;
    let (_, session) = tls.get_ref();
    Some(session.peer_certificates()?.first()?.to_vec())
}

/// Milliseconds from `saved` until `addr` presents `wanted`.
async fn until_served(
    connector: tokio_rustls::TlsConnector,
    addr: String,
    host: rustls::pki_types::ServerName<'static>,
    wanted: Vec<u8>,
    saved: Instant,
) -> f64 {
    loop {
        if leaf(&connector, &addr, &host).await.as_deref() == Some(&wanted[..]) {
            return saved.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(
            saved.elapsed() < Duration::from_secs(30),
            "{addr} did not serve the new certificate within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn renew(url: &str, name: &str, directory: &str, rounds: usize, addrs: &[String]) {
    let store = PgCertStore::new(connect(url));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let host = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for round in 0..rounds {
        let (chain, key) = self_signed(name);
        let der = rustls::pki_types::CertificateDer::from_pem_slice(chain.as_bytes())
            .unwrap()
            .to_vec();
        let saved = Instant::now();
        store
            .save_cert(name, &stored(chain, key, directory))
            .unwrap();
        let commit_ms = saved.elapsed().as_secs_f64() * 1000.0;
        let served: Vec<f64> = runtime.block_on(async {
            let waits = addrs.iter().map(|a| {
                tokio::spawn(until_served(
                    connector.clone(),
                    a.clone(),
                    host.clone(),
                    der.clone(),
                    saved,
                ))
            });
            let mut out = Vec::new();
            for w in waits.collect::<Vec<_>>() {
                out.push(w.await.unwrap());
            }
            out
        });
        let per: serde_json::Map<String, serde_json::Value> = addrs
            .iter()
            .zip(&served)
            .map(|(a, ms)| (a.clone(), serde_json::json!(ms)))
            .collect();
        println!(
            "{}",
            serde_json::json!({"round": round, "commit_ms": commit_ms, "served_ms": per})
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
