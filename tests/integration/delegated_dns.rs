//! The built-in DNS server for a delegated zone, queried over real UDP and TCP sockets: the
//! tenants' TXT answers, a proper zone (SOA, NS, NXDOMAIN, NODATA, REFUSED, ANY, truncation)
//! and the ready gate (an id is answered only once its policy is served over a valid
//! certificate).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::certs_files::{TestCa, write_pair};
use crate::common::{Running, TestConfig, admin_request, eventually, run_daemon};

const ZONE: &str = "sts.operator.example";

/// A server file with `dns:` on an ephemeral loopback port and `issuer` as given.
fn server_yaml(issuer: &str) -> String {
    format!(
        "listen: \"127.0.0.1:0\"\nstate_dir: state\n{issuer}dns:\n  listen: \"127.0.0.1:0\"\n  zone: {ZONE}\n  nameservers: [ns1.operator.example, ns2.operator.example]\n  hostmaster: hostmaster.operator.example\n  ttl: 120\n"
    )
}

/// How a query is sent.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// UDP without EDNS: answers are limited to 512 bytes.
    Udp,
    /// UDP with an EDNS buffer of this size.
    UdpEdns(u16),
    Tcp,
}

fn query_bytes(name: &str, rtype: RecordType, via: Via) -> Vec<u8> {
    let mut msg = Message::new(4711, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Via::UdpEdns(size) = via {
        let mut edns = Edns::new();
        edns.set_max_payload(size);
        msg.set_edns(edns);
    }
    msg.to_vec().unwrap()
}

/// One query to the server at `addr`, the answer decoded.
async fn ask(addr: SocketAddr, name: &str, rtype: RecordType, via: Via) -> Message {
    let bytes = query_bytes(name, rtype, via);
    let answer = match via {
        Via::Udp | Via::UdpEdns(_) => {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            socket.send_to(&bytes, addr).await.unwrap();
            let mut buf = vec![0u8; 65535];
            let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
                .await
                .expect("a UDP answer within 10 s")
                .unwrap();
            buf.truncate(n);
            buf
        }
        Via::Tcp => {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
            tcp.write_all(&[&len[..], &bytes].concat()).await.unwrap();
            let mut len = [0u8; 2];
            tcp.read_exact(&mut len).await.unwrap();
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            tcp.read_exact(&mut buf).await.unwrap();
            buf
        }
    };
    let msg = Message::from_vec(&answer).unwrap();
    assert_eq!(msg.metadata.id, 4711);
    msg
}

/// The TXT strings of the answer, each record's character-strings joined.
fn txt(msg: &Message) -> Vec<String> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect()
}

fn has_soa_authority(msg: &Message) -> bool {
    msg.authorities
        .iter()
        .any(|r| r.record_type() == RecordType::SOA)
}

fn sts_target(domain: &str) -> String {
    format!("{domain}._mta-sts.{ZONE}.")
}

fn tlsrpt_target(domain: &str) -> String {
    format!("{domain}._smtp._tls.{ZONE}.")
}

/// The id the daemon serves for `domain`.
fn served_id(running: &Running, domain: &str) -> String {
    running
        .registry
        .load()
        .by_domain(domain)
        .expect("tenant served")
        .policy
        .id
        .clone()
}

/// Waits until `name` answers TXT `want` over UDP.
async fn eventually_txt(addr: SocketAddr, name: &str, want: &str) -> bool {
    eventually(Duration::from_secs(20), || async {
        txt(&ask(addr, name, RecordType::TXT, Via::Udp).await) == vec![want.to_owned()]
    })
    .await
}

async fn start_internal(cfg: &TestConfig) -> Running {
    crate::common::start(cfg).await
}

/// A tenant with enough report addresses that its `_smtp._tls` answer exceeds 512 bytes.
fn many_rua_tenant(domain: &str) -> String {
    let rua: Vec<String> = (0..14)
        .map(|i| format!("\"mailto:tls-reports-{i:02}@reports.{domain}\""))
        .collect();
    format!(
        "domain: {domain}\nmode: testing\nmx: [mx.{domain}]\nmax_age: 86400\ntlsrpt: {{rua: [{}]}}\n",
        rua.join(", ")
    )
}

#[tokio::test]
async fn tenant_txt_records_carry_the_served_id_over_udp_and_tcp() {
    let cfg = TestConfig::with_server(&server_yaml("issuer: internal\n"));
    cfg.simple_tenant("a.example");
    cfg.tenant("big.yaml", &many_rua_tenant("big.example"));
    let running = start_internal(&cfg).await;
    let dns = running.dns_addr.expect("the DNS server is bound");
    let want = format!("v=STSv1; id={}", served_id(&running, "a.example"));
    assert!(eventually_txt(dns, &sts_target("a.example"), &want).await);
    let tcp = ask(dns, &sts_target("A.Example"), RecordType::TXT, Via::Tcp).await;
    assert_eq!(txt(&tcp), vec![want.clone()], "case-insensitive, over TCP");
    assert!(tcp.metadata.authoritative);
    assert_eq!(tcp.answers[0].ttl, 120, "dns.ttl");

    // The `_smtp._tls` value is the one `mta-stsd dns` prints for the tenant.
    let server = mta_stsd::config::load_server_config(cfg.path()).unwrap();
    let snapshot = running.registry.load();
    let big = snapshot.by_domain("big.example").unwrap();
    let records =
        mta_stsd::publish::tenant_records(big, mta_stsd::publish::Publishing::of(&server));
    let rua = records.tlsrpt.unwrap().value;
    assert!(rua.len() > 512, "the test needs an answer over 512 bytes");
    let full = ask(
        dns,
        &tlsrpt_target("big.example"),
        RecordType::TXT,
        Via::Tcp,
    )
    .await;
    assert!(!full.metadata.truncation);
    assert_eq!(txt(&full), vec![rua.clone()]);

    // Over UDP without EDNS the answer does not fit: TC is set so the resolver retries on
    // TCP; with a 4096-byte EDNS buffer it fits.
    let udp = ask(
        dns,
        &tlsrpt_target("big.example"),
        RecordType::TXT,
        Via::Udp,
    )
    .await;
    assert!(udp.metadata.truncation, "{udp:?}");
    assert!(txt(&udp).is_empty());
    let edns = ask(
        dns,
        &tlsrpt_target("big.example"),
        RecordType::TXT,
        Via::UdpEdns(4096),
    )
    .await;
    assert!(!edns.metadata.truncation);
    assert_eq!(txt(&edns), vec![rua]);
    running.stop().await;
}

#[tokio::test]
async fn the_zone_has_soa_ns_and_proper_negative_answers() {
    let cfg = TestConfig::with_server(&server_yaml("issuer: internal\n"));
    cfg.simple_tenant("mail.a.example");
    let running = start_internal(&cfg).await;
    let dns = running.dns_addr.unwrap();
    let want = format!("v=STSv1; id={}", served_id(&running, "mail.a.example"));
    assert!(eventually_txt(dns, &sts_target("mail.a.example"), &want).await);
    let apex = format!("{ZONE}.");

    let soa = ask(dns, &apex, RecordType::SOA, Via::Udp).await;
    assert_eq!(soa.metadata.response_code, ResponseCode::NoError);
    let RData::SOA(first) = &soa.answers[0].data else {
        panic!("{soa:?}")
    };
    assert_eq!(first.mname.to_string(), "ns1.operator.example.");
    assert_eq!(first.rname.to_string(), "hostmaster.operator.example.");
    assert!(first.minimum > 0 && first.refresh > first.retry && first.expire > first.refresh);
    let ns = ask(dns, &apex, RecordType::NS, Via::Tcp).await;
    let mut names: Vec<String> = ns.answers.iter().map(|r| r.data.to_string()).collect();
    names.sort();
    assert_eq!(names, ["ns1.operator.example.", "ns2.operator.example."]);

    // A name that does not exist: NXDOMAIN with the SOA for negative caching.
    for name in [sts_target("nobody.example"), format!("www.{ZONE}.")] {
        let nx = ask(dns, &name, RecordType::TXT, Via::Udp).await;
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(has_soa_authority(&nx), "{name}: {nx:?}");
    }
    // Empty non-terminals and other types of existing names: NOERROR with no answer (RFC
    // 8020: NXDOMAIN would tell a minimising resolver that nothing exists below).
    for (name, rtype) in [
        (format!("_mta-sts.{ZONE}."), RecordType::TXT),
        (format!("example._mta-sts.{ZONE}."), RecordType::TXT),
        (format!("a.example._mta-sts.{ZONE}."), RecordType::A),
        (sts_target("mail.a.example"), RecordType::AAAA),
        (apex.clone(), RecordType::TXT),
    ] {
        let nodata = ask(dns, &name, rtype, Via::Udp).await;
        assert_eq!(
            nodata.metadata.response_code,
            ResponseCode::NoError,
            "{name} {rtype}"
        );
        assert!(nodata.answers.is_empty(), "{name} {rtype}: {nodata:?}");
        assert!(has_soa_authority(&nodata), "{name} {rtype}");
    }
    // Outside the zone: REFUSED, never an answer or recursion.
    for name in [
        "example.com.",
        "operator.example.",
        "_mta-sts.mail.a.example.",
    ] {
        let refused = ask(dns, name, RecordType::TXT, Via::Udp).await;
        assert_eq!(
            refused.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
        assert!(refused.answers.is_empty());
    }
    // ANY gets one set (RFC 8482), and a zone transfer is refused.
    let any = ask(
        dns,
        &sts_target("mail.a.example"),
        RecordType::ANY,
        Via::Udp,
    )
    .await;
    assert_eq!(txt(&any), vec![want]);
    assert_eq!(any.answers.len(), 1);
    let any_apex = ask(dns, &apex, RecordType::ANY, Via::Tcp).await;
    assert_eq!(any_apex.answers.len(), 1, "{any_apex:?}");
    let axfr = ask(dns, &apex, RecordType::AXFR, Via::Tcp).await;
    assert_eq!(axfr.metadata.response_code, ResponseCode::Refused);
    assert!(axfr.answers.is_empty());

    // A new tenant appears and the serial moves on.
    cfg.simple_tenant("b.example");
    let status = admin_request(running.admin_addr, Method::POST, "/reload", &[])
        .await
        .status;
    assert!(status.is_success(), "{status}");
    let want_b = format!("v=STSv1; id={}", served_id(&running, "b.example"));
    assert!(eventually_txt(dns, &sts_target("b.example"), &want_b).await);
    let later = ask(dns, &apex, RecordType::SOA, Via::Udp).await;
    let RData::SOA(second) = &later.answers[0].data else {
        panic!("{later:?}")
    };
    assert!(
        second.serial > first.serial,
        "{} then {}",
        first.serial,
        second.serial
    );
    running.stop().await;
}

/// Writes a certificate for `mta-sts.<domain>` under `certs`, valid until `not_after`.
fn cert_until(ca: &TestCa, certs: &std::path::Path, domain: &str, not_after: time::OffsetDateTime) {
    let host = format!("mta-sts.{domain}");
    let now = time::OffsetDateTime::now_utc();
    let pem = ca.leaf_between(&[host.as_str()], now - time::Duration::days(1), not_after);
    write_pair(certs, &host, &pem);
}

async fn reload(running: &Running) {
    let status = admin_request(running.admin_addr, Method::POST, "/reload", &[])
        .await
        .status;
    assert!(status.is_success(), "{status}");
}

#[tokio::test]
async fn an_id_is_answered_only_once_its_policy_is_served_with_a_valid_certificate() {
    let cfg = TestConfig::with_server(&server_yaml("issuer: files\nfiles:\n  dir: certs\n"));
    let ca = TestCa::new();
    let certs = cfg.path().join("certs");
    let now = time::OffsetDateTime::now_utc();
    for d in ["ready.example", "nocert.example"] {
        cfg.simple_tenant(d);
    }
    let flip = |mode: &str, rua: &str| {
        format!(
            "domain: flip.example\nmode: {mode}\nmx: [mx.flip.example]\nmax_age: 86400\ntlsrpt: {{rua: [\"mailto:{rua}@flip.example\"]}}\n"
        )
    };
    cfg.tenant("flip.yaml", &flip("testing", "first"));
    cert_until(&ca, &certs, "ready.example", now + time::Duration::days(30));
    // Long enough for the first refresh at start, short enough to lapse during the test.
    let lapses = now + time::Duration::seconds(6);
    cert_until(&ca, &certs, "flip.example", lapses);

    let daemon = mta_stsd::daemon::Daemon::build(cfg.path()).expect("daemon builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = run_daemon(daemon, listener, ca.der.clone()).await;
    let dns = running.dns_addr.unwrap();
    let ready_id = format!("v=STSv1; id={}", served_id(&running, "ready.example"));
    assert!(eventually_txt(dns, &sts_target("ready.example"), &ready_id).await);
    let first_id = format!("v=STSv1; id={}", served_id(&running, "flip.example"));
    assert!(eventually_txt(dns, &sts_target("flip.example"), &first_id).await);
    // No certificate: no `_mta-sts` record at all, though the policy is loaded.
    let none = ask(
        dns,
        &sts_target("nocert.example"),
        RecordType::TXT,
        Via::Udp,
    )
    .await;
    assert_eq!(
        none.metadata.response_code,
        ResponseCode::NXDomain,
        "{none:?}"
    );

    // flip.example's certificate lapses, then its policy changes: the new body is served at
    // once, but its id must wait for a valid certificate; the old id stays.
    let wait = lapses - time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    tokio::time::sleep(wait.try_into().unwrap_or_default()).await;
    cfg.tenant("flip.yaml", &flip("enforce", "second"));
    reload(&running).await;
    let second_id = format!("v=STSv1; id={}", served_id(&running, "flip.example"));
    assert_ne!(first_id, second_id, "the edit is live");
    // The TLS-RPT value is not gated, so seeing it proves the zone saw this snapshot.
    let marker = "v=TLSRPTv1; rua=mailto:second@flip.example";
    assert!(eventually_txt(dns, &tlsrpt_target("flip.example"), marker).await);
    let held = ask(dns, &sts_target("flip.example"), RecordType::TXT, Via::Tcp).await;
    assert_eq!(
        txt(&held),
        vec![first_id.clone()],
        "the old id stays until the new body is live"
    );
    // The admin API says the same: what the zone answers, and that it lags the served id.
    let flip = delegated(&running, "flip.example").await;
    assert_eq!(
        format!(
            "v=STSv1; id={}",
            flip["mta_sts"]["answered_id"].as_str().unwrap()
        ),
        first_id
    );
    assert_eq!(flip["mta_sts"]["in_step"], false, "{flip}");
    assert_eq!(flip["zone"], ZONE);
    let sts_cname = &flip["cnames"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "_mta-sts.flip.example.")
        .expect("the _mta-sts CNAME")["value"];
    assert_eq!(
        sts_cname.as_str(),
        Some(sts_target("flip.example").as_str())
    );
    let nocert = delegated(&running, "nocert.example").await;
    assert!(nocert["mta_sts"]["answered_id"].is_null(), "{nocert}");
    let url = format!("http://{}", running.admin_addr);
    let (code, live, err) = tokio::task::spawn_blocking(move || {
        crate::common::run_binary(&["dns".as_ref(), "--admin".as_ref(), url.as_ref()], b"")
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let old = first_id.trim_start_matches("v=STSv1; id=");
    assert!(
        live.contains(&format!("; flip.example: the zone answers id {old}; id ")),
        "{live}"
    );
    assert!(
        live.contains("; nocert.example: no _mta-sts record yet"),
        "{live}"
    );

    // Valid certificates arrive (a renewal, a first issuance): both new ids appear.
    cert_until(&ca, &certs, "flip.example", now + time::Duration::days(30));
    cert_until(
        &ca,
        &certs,
        "nocert.example",
        now + time::Duration::days(30),
    );
    reload(&running).await;
    assert!(eventually_txt(dns, &sts_target("flip.example"), &second_id).await);
    let nocert_id = format!("v=STSv1; id={}", served_id(&running, "nocert.example"));
    assert!(eventually_txt(dns, &sts_target("nocert.example"), &nocert_id).await);
    for d in ["flip.example", "nocert.example", "ready.example"] {
        let view = delegated(&running, d).await;
        assert_eq!(view["mta_sts"]["in_step"], true, "{d}: {view}");
    }
    running.stop().await;
}

/// The `delegated` part of `/api/v1/tenants/<domain>`.
async fn delegated(running: &Running, domain: &str) -> serde_json::Value {
    let path = format!("/api/v1/tenants/{domain}");
    let answer = crate::common::admin_get(running.admin_addr, &path).await;
    let v: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    v["delegated"].clone()
}

#[test]
fn a_bad_dns_section_is_reported_with_file_line_and_field() {
    let yaml = server_yaml("issuer: internal\n")
        .replace("zone: sts.operator.example", "zone: \"sts operator\"");
    let cfg = TestConfig::with_server(&yaml);
    let (code, stdout, stderr) = crate::common::run_binary(
        &[
            "check".as_ref(),
            "--config".as_ref(),
            cfg.path().as_os_str(),
        ],
        b"",
    );
    assert_ne!(code, 0);
    let file = cfg.path().join("mta-stsd.yaml");
    let want = format!("{}:6:9: error: dns.zone: ", file.display());
    assert!(
        stdout.contains(&want) || stderr.contains(&want),
        "{want:?} in\n{stdout}\n{stderr}"
    );
}

#[test]
fn a_dns_port_in_use_fails_the_start_with_a_clear_error() {
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let yaml = server_yaml("issuer: internal\n").replace(
        "dns:\n  listen: \"127.0.0.1:0\"",
        &format!("dns:\n  listen: \"127.0.0.1:{port}\""),
    );
    let cfg = TestConfig::with_server(&yaml);
    let mut child = std::process::Command::new(crate::common::binary())
        .args(["serve", "--config"])
        .arg(cfg.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve kept running with its DNS port taken");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("binding the DNS listener 127.0.0.1:{port} (UDP)")),
        "{text}"
    );
    drop(busy);
}

#[tokio::test]
async fn dns_prints_the_delegation_and_cnames_whose_targets_the_zone_answers() {
    let yaml = server_yaml("public_hostname: policy.operator.example\nissuer: internal\n");
    let cfg = TestConfig::with_server(&yaml);
    cfg.simple_tenant("a.example");
    let dir = cfg.path().as_os_str();
    let (code, zone, err) =
        crate::common::run_binary(&["dns".as_ref(), "--config".as_ref(), dir], b"");
    assert_eq!(code, 0, "{err}");
    for line in [
        format!("{ZONE}. IN NS ns1.operator.example."),
        format!("{ZONE}. IN NS ns2.operator.example."),
        "mta-sts.a.example. IN CNAME policy.operator.example.".to_owned(),
        format!("_mta-sts.a.example. IN CNAME a.example._mta-sts.{ZONE}."),
        format!("_smtp._tls.a.example. IN CNAME a.example._smtp._tls.{ZONE}."),
    ] {
        assert!(zone.lines().any(|l| l == line), "{line:?} in\n{zone}");
    }
    assert!(
        !zone.contains("IN TXT"),
        "the zone answers the TXT records:\n{zone}"
    );

    let (code, json, err) = crate::common::run_binary(
        &["dns".as_ref(), "--json".as_ref(), "--config".as_ref(), dir],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cnames = json[0]["cnames"].as_array().unwrap();
    assert_eq!(cnames.len(), 3, "{json:#}");
    assert_eq!(cnames[1]["name"], "_mta-sts.a.example.");
    let target = cnames[1]["value"].as_str().unwrap().to_owned();

    // What a resolver following the customer's CNAME asks the zone.
    let running = start_internal(&cfg).await;
    let dns = running.dns_addr.unwrap();
    let want = format!("v=STSv1; id={}", served_id(&running, "a.example"));
    assert!(eventually_txt(dns, &target, &want).await);

    // From the running daemon: the same CNAMEs, no TXT to publish, no warning once in step.
    let url = format!("http://{}", running.admin_addr);
    let (code, live, err) = tokio::task::spawn_blocking(move || {
        crate::common::run_binary(&["dns".as_ref(), "--admin".as_ref(), url.as_ref()], b"")
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let sts = format!("_mta-sts.a.example. IN CNAME a.example._mta-sts.{ZONE}.");
    assert!(live.lines().any(|l| l == sts), "{live}");
    assert!(!live.contains("IN TXT"), "{live}");
    assert!(!live.contains("follows once"), "{live}");
    running.stop().await;
}

#[tokio::test]
async fn a_flood_from_one_source_is_slipped_to_tcp_over_udp() {
    let cfg = TestConfig::with_server(&server_yaml("issuer: internal\n"));
    cfg.simple_tenant("a.example");
    let running = start_internal(&cfg).await;
    let dns = running.dns_addr.unwrap();
    let want = format!("v=STSv1; id={}", served_id(&running, "a.example"));
    assert!(eventually_txt(dns, &sts_target("a.example"), &want).await);

    // Well past the burst, from one address: sent in rounds until the reader has seen a
    // slipped answer (a loaded machine may drop some queries before the server reads them).
    let socket = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (reader, count) = (socket.clone(), seen.clone());
    let read = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        // Reads until the answers stop coming.
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(2), reader.recv(&mut buf)).await
        {
            let msg = Message::from_vec(&buf[..n]).unwrap();
            if msg.metadata.truncation && msg.answers.is_empty() {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let query = query_bytes(&sts_target("a.example"), RecordType::TXT, Via::Udp);
    for _ in 0..400 {
        if seen.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            break;
        }
        for _ in 0..100 {
            socket.send_to(&query, dns).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    read.await.unwrap();
    assert!(
        seen.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no answer was slipped"
    );
    // TCP is not limited: the resolver's retry gets the answer.
    let tcp = ask(dns, &sts_target("a.example"), RecordType::TXT, Via::Tcp).await;
    assert_eq!(txt(&tcp), vec![want]);
    let metrics = crate::common::admin_get(running.admin_addr, "/metrics")
        .await
        .body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mta_stsd_dns_rate_limited_total{action=\"slip\"} ")),
        "{metrics}"
    );
    running.stop().await;
}

/// Retirement (RFC 8461 §8.3) in the zone: the `mode: none` id is answered while the tenant
/// retires, and both its records leave the zone once the window has passed.
#[tokio::test]
async fn a_retiring_tenant_answers_the_none_id_then_leaves_the_zone() {
    let server = format!("{}retire_max_age: 1\n", server_yaml("issuer: internal\n"));
    let cfg = TestConfig::with_server(&server);
    let yaml = "domain: r.example\nmode: enforce\nmx: [mx.r.example]\nmax_age: 8\ntlsrpt: {rua: [\"mailto:tls@r.example\"]}\n";
    let file = cfg.tenant("r.yaml", yaml);
    let running = start_internal(&cfg).await;
    let dns = running.dns_addr.expect("the DNS server is bound");
    let first = served_id(&running, "r.example");
    let sts = sts_target("r.example");
    assert!(eventually_txt(dns, &sts, &format!("v=STSv1; id={first}")).await);
    assert!(
        !txt(&ask(dns, &tlsrpt_target("r.example"), RecordType::TXT, Via::Udp).await).is_empty()
    );

    std::fs::write(&file, format!("{yaml}retire: true\n")).unwrap();
    let retiring = eventually(Duration::from_secs(20), || async {
        let snapshot = running.registry.load();
        snapshot
            .by_domain("r.example")
            .is_some_and(|t| t.retiring.is_some())
    })
    .await;
    assert!(retiring);
    let none = served_id(&running, "r.example");
    assert_ne!(none, first);
    assert!(eventually_txt(dns, &sts, &format!("v=STSv1; id={none}")).await);

    let gone = eventually(Duration::from_secs(30), || async {
        let sts = txt(&ask(dns, &sts, RecordType::TXT, Via::Udp).await);
        let tlsrpt = ask(dns, &tlsrpt_target("r.example"), RecordType::TXT, Via::Udp).await;
        sts.is_empty() && txt(&tlsrpt).is_empty()
    })
    .await;
    assert!(gone, "the records stay in the zone after the window");
    assert!(running.registry.load().by_domain("r.example").is_none());
    running.stop().await;
}
