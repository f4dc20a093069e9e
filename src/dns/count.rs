//! Counting every answer by query type and response code, around hickory's `Catalog`.

use std::sync::Arc;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::Catalog;

use crate::stats::Metrics;

/// The catalog, with each answer counted in `metrics`.
pub struct Counted {
    /// What answers.
    pub catalog: Catalog,
    /// Where answers are counted.
    pub metrics: Arc<Metrics>,
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
