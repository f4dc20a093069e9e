//! In front of hickory's `Catalog`: the UDP rate limit ([`super::limit`]) and the count of
//! every answer by query type and response code.

use std::sync::Arc;
use std::time::Instant;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::RecordType;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, MessageResponseBuilder};

use super::limit::{RateLimit, Verdict};
use crate::stats::Metrics;

/// The catalog, with UDP answers rate limited per source and each answer counted. Cheap to
/// clone: the UDP server and the TCP accept loop share one.
#[derive(Clone)]
pub struct Counted {
    /// What answers.
    pub catalog: Arc<Catalog>,
    /// Where answers are counted.
    pub metrics: Arc<Metrics>,
    /// The per-source buckets.
    pub limit: Arc<RateLimit>,
}

/// An empty answer with TC set: a real resolver retries over TCP.
async fn slip<R: ResponseHandler>(request: &Request, mut handle: R) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.truncation = true;
    let response = MessageResponseBuilder::new(&request.queries, None).build_no_records(metadata);
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(_) => unsent(request),
    }
}

/// What the server is told about an answer that was not sent.
fn unsent(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::Refused;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// The label of a query type: the types a resolver asks this zone for, the rest as `other`
/// (labels never come from request input).
pub fn type_label(rtype: Option<RecordType>) -> &'static str {
    match rtype {
        Some(RecordType::TXT) => "TXT",
        Some(RecordType::SOA) => "SOA",
        Some(RecordType::NS) => "NS",
        Some(RecordType::A) => "A",
        Some(RecordType::AAAA) => "AAAA",
        Some(RecordType::CNAME) => "CNAME",
        Some(RecordType::ANY) => "ANY",
        Some(RecordType::AXFR) => "AXFR",
        Some(_) => "other",
        None => "none",
    }
}

/// The label of a response code.
pub fn rcode_label(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NotImp => "NOTIMP",
        _ => "other",
    }
}

#[async_trait::async_trait]
impl RequestHandler for Counted {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        if request.protocol() == Protocol::Udp {
            match self.limit.check(request.src().ip(), Instant::now()) {
                Verdict::Answer => {}
                Verdict::Slip => {
                    self.metrics.dns_limited("slip");
                    return slip(request, response_handle).await;
                }
                Verdict::Drop => {
                    self.metrics.dns_limited("drop");
                    return unsent(request);
                }
            }
        }
        let info = self
            .catalog
            .handle_request::<R, T>(request, response_handle)
            .await;
        let rtype = request.request_info().ok().map(|i| i.query.query_type());
        self.metrics
            .dns_query(type_label(rtype), rcode_label(info.response_code));
        info
    }
}
