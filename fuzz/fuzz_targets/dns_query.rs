//! The delegated zone's answer to one UDP datagram (`dns::answer_datagram`, the path hickory's
//! UDP server takes into the rate limit, the catalog and the zone).
//!
//! Properties: an answer is a DNS message that parses, is a response with the query's id, and
//! fits the size the query allowed (512 bytes, or its EDNS payload size): a bigger one must be
//! truncated instead. Input that hickory cannot read gets no answer, never a crash.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use hickory_server::proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use mta_stsd::config::DnsConfig;
use mta_stsd::dns::gate::Update;
use mta_stsd::dns::names::Kind;
use mta_stsd::dns::{Zone, count::Counted, limit::RateLimit};

/// A zone with a few tenants, one with a TXT value long enough to need truncation.
fn handler() -> &'static Counted {
    static HANDLER: OnceLock<Counted> = OnceLock::new();
    HANDLER.get_or_init(|| {
        let config = DnsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            zone: "sts.operator.example".into(),
            nameservers: vec!["ns1.operator.example".into(), "ns2.operator.example".into()],
            hostmaster: "hostmaster.operator.example".into(),
            ttl: 300,
            rate_per_second: 0,
            rate_burst: 1,
        };
        let zone = Arc::new(Zone::new(&config, 1).unwrap());
        let rua: Vec<String> = (0..40).map(|i| format!("mailto:r{i}@long.example")).collect();
        let updates = [
            (Kind::Sts, "a.example", "v=STSv1; id=20261202T000000".to_owned()),
            (Kind::TlsRpt, "a.example", "v=TLSRPTv1; rua=mailto:t@a.example".to_owned()),
            (Kind::Sts, "long.example", "v=STSv1; id=1".to_owned()),
            (Kind::TlsRpt, "long.example", format!("v=TLSRPTv1; rua={}", rua.join(","))),
        ];
        let updates: Vec<Update> = updates
            .into_iter()
            .map(|(kind, domain, value)| Update { kind, domain: domain.into(), value: Some(value) })
            .collect();
        zone.apply(&updates, 2);
        // No rate limit: every input must reach the zone.
        let limit = RateLimit::with_rate(f64::INFINITY, f64::INFINITY);
        mta_stsd::dns::handler(zone, Arc::default(), limit)
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let src: SocketAddr = "192.0.2.1:5353".parse().unwrap();
    let Some(answer) = runtime().block_on(mta_stsd::dns::answer_datagram(handler(), data, src)) else {
        return;
    };
    let query = Message::from_vec(data).expect("answered, so the query was readable");
    let response = Message::from_vec(&answer).expect("an answer is a DNS message");
    assert_eq!(response.metadata.message_type, MessageType::Response);
    assert_eq!(response.metadata.id, query.metadata.id);
    assert!(
        answer.len() <= usize::from(query.max_payload()),
        "{} bytes for a query allowing {}",
        answer.len(),
        query.max_payload()
    );
});
