//! A tiny authoritative DNS responder for tests: every A query gets 127.0.0.1 unless the test
//! says otherwise for that name (another address, a CNAME, a TXT record); everything else gets
//! an empty answer. Pebble (validation), the daemon (preflight) and `ingest-mail` (DKIM keys)
//! ask it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// What a name resolves to.
#[derive(Clone, Debug)]
pub enum Answer {
    Ip(IpAddr),
    Cname(String),
    /// A TXT record (one string per element), e.g. a DKIM key.
    Txt(Vec<String>),
    /// SERVFAIL, as from a broken authoritative server.
    ServFail,
}

/// A running responder; stops when dropped.
pub struct Dns {
    pub addr: SocketAddr,
    names: Arc<Mutex<HashMap<String, Answer>>>,
    task: JoinHandle<()>,
}

impl Dns {
    /// Starts on 127.0.0.1 with a free port.
    pub async fn start() -> Dns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let names: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let map = names.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let reply = answer(&query, &map.lock().unwrap());
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        Dns { addr, names, task }
    }

    /// Makes `name` resolve to `answer` (instead of 127.0.0.1).
    pub fn set(&self, name: &str, answer: Answer) {
        self.names
            .lock()
            .unwrap()
            .insert(name.trim_end_matches('.').to_ascii_lowercase(), answer);
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(query: &Message, names: &HashMap<String, Answer>) -> Message {
    let mut reply = Message::new(
        query.metadata.id,
        MessageType::Response,
        query.metadata.op_code,
    );
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    for q in &query.queries {
        reply.add_query(q.clone());
        let name = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let owner = q.name().clone();
        let found = names
            .get(&name)
            .cloned()
            .unwrap_or(Answer::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        match (found, q.query_type()) {
            (Answer::Cname(target), _) => {
                let target = Name::from_ascii(format!("{target}.")).unwrap();
                reply.add_answer(Record::from_rdata(
                    owner,
                    0,
                    RData::CNAME(CNAME(target.clone())),
                ));
                // The target itself points at loopback, like a real operator host would.
                if q.query_type() == RecordType::A {
                    reply.add_answer(Record::from_rdata(
                        target,
                        0,
                        RData::A(A(Ipv4Addr::LOCALHOST)),
                    ));
                }
            }
            (Answer::Ip(IpAddr::V4(ip)), RecordType::A) => {
                reply.add_answer(Record::from_rdata(owner, 0, RData::A(A(ip))));
            }
            (Answer::ServFail, _) => reply.metadata.response_code = ResponseCode::ServFail,
            (Answer::Txt(strings), RecordType::TXT) => {
                reply.add_answer(Record::from_rdata(owner, 0, RData::TXT(TXT::new(strings))));
            }
            (Answer::Ip(IpAddr::V6(ip)), RecordType::AAAA) => {
                reply.add_answer(Record::from_rdata(owner, 0, RData::AAAA(AAAA(ip))));
            }
            _ => {}
        }
    }
    reply
}
