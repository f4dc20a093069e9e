//! The admin client: plain HTTP/1.1 requests to the admin listener.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A plain-HTTP response from the admin listener.
#[derive(Debug)]
pub struct AdminResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl AdminResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request to the admin listener at `addr`, with optional extra headers.
pub async fn admin_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> AdminResponse {
    let tcp = TcpStream::connect(addr).await.expect("admin connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("admin handshake");
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .expect("admin request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    AdminResponse {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).expect("UTF-8 body"),
    }
}

/// `GET path` on the admin listener.
pub async fn admin_get(addr: SocketAddr, path: &str) -> AdminResponse {
    admin_request(addr, Method::GET, path, &[]).await
}
