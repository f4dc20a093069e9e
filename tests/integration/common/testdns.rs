//! An authoritative DNS server in the test process (hickory-server's in-memory zone), on a
//! loopback UDP port, answering the records a test gives it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_server::Server;
use hickory_server::proto::rr::rdata::{A, CNAME, MX, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

/// One record of a test zone: `(owner, data)`; owners are absolute, without the dot.
pub type TestRecord = (String, RData);

/// `owner A ip`.
pub fn a(owner: &str, ip: Ipv4Addr) -> TestRecord {
    (owner.into(), RData::A(A(ip)))
}

/// `owner CNAME target`.
pub fn cname(owner: &str, target: &str) -> TestRecord {
    (owner.into(), RData::CNAME(CNAME(name(target))))
}

/// `owner TXT "value"`.
pub fn txt(owner: &str, value: &str) -> TestRecord {
    (owner.into(), RData::TXT(TXT::new(vec![value.into()])))
}

/// `owner MX preference host`.
pub fn mx(owner: &str, preference: u16, host: &str) -> TestRecord {
    (owner.into(), RData::MX(MX::new(preference, name(host))))
}

fn name(text: &str) -> Name {
    let mut n = Name::from_ascii(text).unwrap();
    n.set_fqdn(true);
    n
}

/// The server; stops when dropped.
pub struct TestDns {
    /// Its UDP address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TestDns {
    /// Serves `records` as the zone `origin` on 127.0.0.1:<ephemeral> (TTL 0).
    pub async fn start(origin: &str, records: &[TestRecord]) -> TestDns {
        let origin = name(origin);
        let mut zone =
            InMemoryZoneHandler::<hickory_server::net::runtime::TokioRuntimeProvider>::empty(
                origin.clone(),
                ZoneType::Primary,
                AxfrPolicy::Deny,
            );
        let soa = SOA::new(name("ns.test"), name("hostmaster.test"), 1, 60, 60, 600, 0);
        assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), 0, RData::SOA(soa)), 1));
        for (owner, data) in records {
            assert!(zone.upsert_mut(Record::from_rdata(name(owner), 0, data.clone()), 1));
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let mut server = Server::new(catalog);
        server.register_socket(socket);
        let task = tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        TestDns { addr, task }
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}
