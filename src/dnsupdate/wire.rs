//! The three exchanges with a primary: read a TXT RRset, replace it, delete it if it still
//! holds what mta-stsd wrote. hickory-net builds, signs (TSIG on updates only) and sends the
//! messages; this module only says which records go in which section (RFC 2136 §2.4, §2.5).

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_net::DnsHandle;
use hickory_net::proto::op::{
    DnsRequest, DnsRequestOptions, Message, OpCode, Query, ResponseCode, UpdateMessage,
};
use hickory_net::proto::rr::rdata::TXT;
use hickory_net::proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::DnsExchange;

use crate::config::{TsigAlg, UpdateTarget};

/// How long one exchange may take, retransmissions included: a slow primary delays only
/// this task, never the policy listener.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Clock skew accepted by the server (RFC 8945 §10 recommends 300 s).
const FUDGE: u16 = 300;

/// A connection to one primary: UDP, updates signed with the target's key.
#[derive(Clone)]
pub struct Primary {
    exchange: DnsExchange<TokioRuntimeProvider>,
}

impl Primary {
    /// Opens the exchange (its background task runs on the current runtime).
    pub fn connect(target: &UpdateTarget) -> anyhow::Result<Primary> {
        let algorithm = match target.algorithm {
            TsigAlg::HmacSha256 => TsigAlgorithm::HmacSha256,
            TsigAlg::HmacSha384 => TsigAlgorithm::HmacSha384,
            TsigAlg::HmacSha512 => TsigAlgorithm::HmacSha512,
        };
        let key_name = Name::from_ascii(&target.key_name)?;
        let signer = TSigner::new(target.secret.0.clone(), algorithm, key_name, FUDGE)?;
        let exchange = udp(target.server)
            .with_timeout(Some(EXCHANGE_TIMEOUT))
            .with_signer(Some(signer))
            .exchange();
        Ok(Primary { exchange })
    }

    /// The TXT values at `name` (each record's strings joined), empty when there are none.
    pub async fn txt(&self, name: &Name) -> Result<Vec<String>, String> {
        let mut options = DnsRequestOptions::default();
        options.recursion_desired = false;
        options.use_edns = true;
        let query = Query::query(name.clone(), RecordType::TXT);
        let response = self.send(DnsRequest::from_query(query, options)).await?;
        match response.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => {}
            code => return Err(rcode(code)),
        }
        let values = response
            .answers
            .iter()
            .filter(|r| r.name == *name)
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(joined(txt)),
                _ => None,
            })
            .collect();
        Ok(values)
    }

    /// Replaces the TXT RRset at `name` with the one record `value`, in one signed update.
    pub async fn replace(
        &self,
        zone: &Name,
        name: &Name,
        value: &str,
        ttl: u32,
    ) -> Result<(), String> {
        let mut message = update(zone);
        message.add_update(delete_rrset(name));
        message.add_update(Record::from_rdata(
            name.clone(),
            ttl,
            RData::TXT(txt(value)),
        ));
        self.apply(message).await
    }

    /// Deletes the TXT RRset at `name` only if it is exactly `value`: the prerequisite makes
    /// the server refuse (NXRRSET) when someone else changed it since, and nothing is lost.
    pub async fn delete_if(&self, zone: &Name, name: &Name, value: &str) -> Result<(), String> {
        let mut message = update(zone);
        message.add_pre_requisite(Record::from_rdata(name.clone(), 0, RData::TXT(txt(value))));
        message.add_update(delete_rrset(name));
        match self.apply(message).await {
            Err(code) if code == "NXRRSET" => Ok(()),
            other => other,
        }
    }

    async fn apply(&self, message: Message) -> Result<(), String> {
        let response = self.send(DnsRequest::from(message)).await?;
        match response.metadata.response_code {
            ResponseCode::NoError => Ok(()),
            code => Err(rcode(code)),
        }
    }

    async fn send(
        &self,
        request: DnsRequest,
    ) -> Result<hickory_net::proto::op::DnsResponse, String> {
        let mut stream = self.exchange.send(request);
        match tokio::time::timeout(EXCHANGE_TIMEOUT * 2, stream.next()).await {
            Err(_) => Err("timeout".into()),
            Ok(None) => Err("no response".into()),
            Ok(Some(Err(err))) => Err(net_error(&err)),
            Ok(Some(Ok(response))) => Ok(response),
        }
    }
}

fn udp(server: SocketAddr) -> hickory_net::udp::UdpClientStreamBuilder<TokioRuntimeProvider> {
    UdpClientStream::builder(server, TokioRuntimeProvider::default())
}

/// An UPDATE for `zone`: the zone section names its SOA (RFC 2136 §2.3).
fn update(zone: &Name) -> Message {
    let mut message = Message::query();
    message.metadata.op_code = OpCode::Update;
    message.metadata.recursion_desired = false;
    let mut query = Query::new();
    query
        .set_name(zone.clone())
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    message.add_zone(query);
    message
}

/// "Delete an RRset" (RFC 2136 §2.5.2): class ANY, TTL 0, no rdata; only TXT at `name`.
fn delete_rrset(name: &Name) -> Record {
    let mut record = Record::from_rdata(name.clone(), 0, RData::Update0(RecordType::TXT));
    record.dns_class = DNSClass::ANY;
    record
}

/// `value` as TXT strings of at most 255 octets (RFC 1035 §3.3.14).
fn txt(value: &str) -> TXT {
    let chunks = value
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    TXT::new(chunks)
}

fn joined(txt: &TXT) -> String {
    let bytes: Vec<u8> = txt
        .txt_data
        .iter()
        .flat_map(|s| s.iter().copied())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The rcode's mnemonic as operators know it from BIND's logs (`NOTAUTH`, `REFUSED`).
fn rcode(code: ResponseCode) -> String {
    code.to_str().to_ascii_uppercase()
}

/// A transport or verification failure, with the rcode when hickory has one. A server that
/// rejects the key (BADSIG, BADKEY: RFC 8945 §5.2) answers NOTAUTH with an empty MAC, which
/// hickory's verifier refuses as a "truncated HMAC" before the rcode is seen; only a rejecting
/// server sends an empty MAC, so that failure is named for what it is.
fn net_error(err: &hickory_net::NetError) -> String {
    match err {
        hickory_net::NetError::Dns(hickory_net::DnsError::ResponseCode(code)) => rcode(*code),
        other if other.to_string().contains("truncated HMAC") => TSIG_REJECTED.into(),
        other => other.to_string(),
    }
}

/// How a rejected TSIG key is reported (the metric label is the part before the colon).
pub const TSIG_REJECTED: &str = "NOTAUTH: the server rejected the TSIG signature (BADSIG or BADKEY); check key_name, algorithm and secret_file";
