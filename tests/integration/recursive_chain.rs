//! The real recursive chain a sending MTA walks: Debian's unbound, as the sender's resolver,
//! serves the customer's own zone (with the CNAMEs `mta-stsd dns` prints) and reaches the
//! daemon's delegated zone through a stub zone; the sender then fetches the policy over HTTPS
//! from the real binary. The id it sees in DNS must always belong to a body the daemon serves.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use rustls::pki_types::{CertificateDer, pem::PemObject};

use crate::common::{
    Client, ServeProcess, Unbound, eventually, free_dns_port as free_port, unbound_binary,
};

const ZONE: &str = "sts.operator.test";
const DOMAIN: &str = "example.test";
const RUA: &str = "mailto:tlsrpt@example.test";

fn tenant_yaml(mode: &str) -> String {
    format!(
        "domain: {DOMAIN}\nmode: {mode}\nmx: [mx.{DOMAIN}]\nmax_age: 86400\ntlsrpt: {{rua: [\"{RUA}\"]}}\n"
    )
}

/// What the resolver answered for one name: the CNAMEs followed and the final data.
#[derive(Debug, Default)]
struct Answer {
    cnames: Vec<(String, String)>,
    txt: Vec<String>,
    a: Vec<IpAddr>,
}

/// One recursive query to the resolver at `server` over UDP (EDNS 4096), sent again (a
/// datagram may be lost) until answered, at most 5 times.
async fn resolve(server: SocketAddr, name: &str, rtype: RecordType) -> Answer {
    for _ in 0..5 {
        if let Some(answer) = resolve_once(server, name, rtype).await {
            return answer;
        }
    }
    panic!("{server} did not answer {name} {rtype} in 5 tries");
}

/// One query, `None` without an answer within 2 s.
async fn resolve_once(server: SocketAddr, name: &str, rtype: RecordType) -> Option<Answer> {
    let mut msg = Message::new(4712, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    msg.set_edns(edns);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&msg.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .ok()?
        .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.metadata.id, 4712);
    assert!(!reply.metadata.truncation, "{reply:?}");
    let mut answer = Answer::default();
    if reply.metadata.response_code != ResponseCode::NoError {
        return Some(answer);
    }
    for record in &reply.answers {
        match &record.data {
            RData::CNAME(target) => answer
                .cnames
                .push((record.name.to_string(), target.0.to_string())),
            RData::TXT(t) => answer.txt.push(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            ),
            RData::A(a) => answer.a.push(IpAddr::V4(a.0)),
            _ => {}
        }
    }
    Some(answer)
}

/// The id of the single `v=STSv1` record at `_mta-sts.<DOMAIN>`, if there is one.
async fn dns_id(resolver: SocketAddr) -> Option<String> {
    let answer = resolve(resolver, &format!("_mta-sts.{DOMAIN}."), RecordType::TXT).await;
    let sts: Vec<&String> = answer
        .txt
        .iter()
        .filter(|t| t.starts_with("v=STSv1"))
        .collect();
    assert!(sts.len() <= 1, "one STS record at most: {answer:?}");
    let fields = sts.first()?;
    let id = fields
        .split(';')
        .map(str::trim)
        .find_map(|f| f.strip_prefix("id="))
        .unwrap_or_else(|| panic!("no id in {fields:?}"));
    Some(id.to_owned())
}

/// The policy body the daemon serves for `mta-sts.<DOMAIN>`.
async fn fetch_body(client: &Client) -> String {
    let host = format!("mta-sts.{DOMAIN}");
    let fetched = client.get_policy(&host).await.expect("policy fetch");
    assert_eq!(fetched.status, http::StatusCode::OK);
    String::from_utf8(fetched.body.to_vec()).unwrap()
}

/// `mta-stsd dns --json` for the config dir: the tenant's entry.
fn printed_records(config: &Path) -> serde_json::Value {
    crate::common::dns_json(config).as_array().unwrap()[0].clone()
}

/// The value of the printed `name`/`type` entry in `list`.
fn printed(list: &serde_json::Value, name: &str, rtype: &str) -> String {
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name && r["type"] == rtype)
        .unwrap_or_else(|| panic!("{name} {rtype} not in {list}"))["value"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The customer's zone: the policy host and the two CNAMEs `mta-stsd dns` prints.
fn customer_zone(sts_cname: &str, tlsrpt_cname: &str) -> String {
    format!(
        "$ORIGIN {DOMAIN}.\n$TTL 60\n@ IN SOA ns.{DOMAIN}. hostmaster.{DOMAIN}. 1 3600 600 86400 60\n\
         @ IN NS ns.{DOMAIN}.\nns IN A 127.0.0.1\nmta-sts IN A 127.0.0.1\n\
         _mta-sts IN CNAME {sts_cname}\n_smtp._tls IN CNAME {tlsrpt_cname}\n"
    )
}

#[tokio::test]
async fn a_sender_behind_unbound_never_sees_an_id_before_its_policy_is_served() {
    let unbound = unbound_binary();
    let cwd = tempfile::tempdir().unwrap();
    let config = cwd.path().join("config");
    std::fs::create_dir_all(config.join("tenants")).unwrap();
    let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
    std::fs::write(
        config.join("mta-stsd.yaml"),
        format!(
            "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: internal\ndns:\n  listen: \"{dns}\"\n  zone: {ZONE}\n  nameservers: [ns1.operator.test]\n  hostmaster: hostmaster.operator.test\n  ttl: 60\n"
        ),
    )
    .unwrap();
    let tenant = config.join("tenants").join(format!("{DOMAIN}.yaml"));
    std::fs::write(&tenant, tenant_yaml("testing")).unwrap();

    // What the operator hands the customer, and what the daemon will publish.
    let entry = printed_records(&config);
    let sts_cname = printed(&entry["cnames"], &format!("_mta-sts.{DOMAIN}."), "CNAME");
    let tlsrpt_cname = printed(&entry["cnames"], &format!("_smtp._tls.{DOMAIN}."), "CNAME");
    assert_eq!(sts_cname, format!("{DOMAIN}._mta-sts.{ZONE}."));
    let tlsrpt_value = printed(&entry["records"], &format!("_smtp._tls.{DOMAIN}."), "TXT");
    assert_eq!(tlsrpt_value, format!("v=TLSRPTv1; rua={RUA}"));

    let serve = ServeProcess::spawn(Some(cwd.path()), Path::new("config")).serving();
    let ca = std::fs::read(config.join("state/ca/ca.crt")).unwrap();
    let ca = CertificateDer::from_pem_slice(&ca).unwrap();
    let zone_file = cwd.path().join(format!("{DOMAIN}.zone"));
    std::fs::write(&zone_file, customer_zone(&sts_cname, &tlsrpt_cname)).unwrap();
    let mut resolver = Unbound::start(cwd.path(), &[(DOMAIN, &zone_file)], (ZONE, dns));
    resolver.started().await;
    let log = || serve.log.lock().unwrap().join("\n");
    let ub = resolver.addr;

    // The sender finds the policy host through unbound and connects to it.
    let host_up = eventually(Duration::from_secs(30), || async {
        resolve(ub, &format!("mta-sts.{DOMAIN}."), RecordType::A)
            .await
            .a
            .contains(&IpAddr::from([127, 0, 0, 1]))
    })
    .await;
    resolver.alive_or_panic();
    assert!(
        host_up,
        "{} gave no address for the policy host",
        unbound.display()
    );
    let client = Client::new(
        SocketAddr::new([127, 0, 0, 1].into(), serve.addr.port()),
        ca,
    );

    // The first id, once the ready gate opens, names the body served.
    let first = eventually(Duration::from_secs(30), || async {
        dns_id(ub).await.is_some()
    })
    .await;
    assert!(first, "no STS record through unbound; log:\n{}", log());
    let chain = resolve(ub, &format!("_mta-sts.{DOMAIN}."), RecordType::TXT).await;
    assert_eq!(
        chain.cnames,
        vec![(format!("_mta-sts.{DOMAIN}."), sts_cname.clone())]
    );
    let old_id = dns_id(ub).await.unwrap();
    let old_body = fetch_body(&client).await;
    assert!(old_body.contains("mode: testing"), "{old_body}");
    assert_eq!(old_id, mta_stsd::policy::policy_id(old_body.as_bytes()));
    assert_eq!(entry["id"], old_id.as_str(), "the id `mta-stsd dns` prints");

    // TLS-RPT: the `_smtp._tls` CNAME leads to the value `mta-stsd dns` prints.
    let tlsrpt = resolve(ub, &format!("_smtp._tls.{DOMAIN}."), RecordType::TXT).await;
    assert_eq!(
        tlsrpt.cnames,
        vec![(format!("_smtp._tls.{DOMAIN}."), tlsrpt_cname.clone())]
    );
    assert_eq!(tlsrpt.txt, vec![tlsrpt_value]);

    // The policy changes: on every poll DNS shows the old id or the new one, the new one only
    // once the new body is served, and never the old one again after the new.
    std::fs::write(&tenant, tenant_yaml("enforce")).unwrap();
    let new_id = printed_records(&config)["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, old_id);
    let seen_new = Cell::new(false);
    let polls = Cell::new(0u32);
    let switched = eventually(Duration::from_secs(30), || async {
        polls.set(polls.get() + 1);
        let id = dns_id(ub).await.expect("the STS record stays published");
        let body = fetch_body(&client).await;
        let body_id = mta_stsd::policy::policy_id(body.as_bytes());
        assert!(id == old_id || id == new_id, "unknown id {id} in DNS");
        assert!(
            body_id == old_id || body_id == new_id,
            "unknown body {body}"
        );
        if id == new_id {
            assert_eq!(body_id, new_id, "DNS shows {id} while serving:\n{body}");
            assert!(body.contains("mode: enforce"), "{body}");
            seen_new.set(true);
        } else {
            assert!(!seen_new.get(), "DNS went back to the old id after the new");
        }
        id == new_id
    })
    .await;
    resolver.alive_or_panic();
    assert!(
        switched,
        "DNS never showed {new_id} after {} polls; log:\n{}",
        polls.get(),
        log()
    );
    // After the switch, still consistent.
    assert_eq!(dns_id(ub).await.as_deref(), Some(new_id.as_str()));
    assert_eq!(
        mta_stsd::policy::policy_id(fetch_body(&client).await.as_bytes()),
        new_id
    );
    // Dozens of queries were answered; the DNS library's per-query lines stay out of the log.
    assert!(
        !log().contains("query:"),
        "per-query lines in the log:\n{}",
        log()
    );
}
