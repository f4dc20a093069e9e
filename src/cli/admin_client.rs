//! A minimal client of the admin API, for commands that read the running daemon.

use std::time::Duration;

/// A GET from synchronous code, on a runtime of its own, answered within `limit`.
pub(super) fn get_blocking(
    base: &str,
    path: &str,
    token: Option<&str>,
    limit: Duration,
) -> anyhow::Result<Vec<u8>> {
    call_blocking(http::Method::GET, base, path, token, limit)
}

/// [`admin_call`] from synchronous code, answered within `limit`.
pub(super) fn call_blocking(
    method: http::Method,
    base: &str,
    path: &str,
    token: Option<&str>,
    limit: Duration,
) -> anyhow::Result<Vec<u8>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::time::timeout(limit, admin_call(method, base, path, token))
            .await
            .map_err(|_| anyhow::anyhow!("{base}: no answer within {limit:?}"))?
    })
}

/// A request without a body to a plain-HTTP admin URL; the body of a 2xx answer.
pub(super) async fn admin_call(
    method: http::Method,
    base: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<Vec<u8>> {
    use http_body_util::BodyExt;
    let uri: http::Uri = base
        .parse()
        .map_err(|e| anyhow::anyhow!("{base:?} is not a URL: {e}"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "{base}: the admin listener speaks plain http://"
    );
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow::anyhow!("{base}: no host:port"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| anyhow::anyhow!("connecting to {authority}: {e}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let prefix = uri.path().trim_end_matches('/');
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("{prefix}{path}"))
        .header(http::header::HOST, authority.as_str());
    if let Some(token) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let resp = send
        .send_request(req.body(http_body_util::Empty::<bytes::Bytes>::new())?)
        .await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes().to_vec();
    anyhow::ensure!(
        status.is_success(),
        "{base}{path}: {status}: {}",
        String::from_utf8_lossy(&body).trim()
    );
    Ok(body)
}
