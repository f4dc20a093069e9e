//! The HTTPS endpoint against a real listener and a real TLS client.

use http::{Method, StatusCode, header};

use crate::common::{TestConfig, start};

const POLICY: &str = mta_stsd::http::POLICY_PATH;

fn three_tenants() -> TestConfig {
    let cfg = TestConfig::new();
    cfg.tenant(
        "example.com.yaml",
        "domain: example.com\nmode: testing\nmx: [mail.example.com]\nmax_age: 86400\n",
    );
    cfg.tenant(
        "example.net.yaml",
        "domain: example.net\nmode: enforce\nmx: [\"*.mx.example.net\", mail.example.net]\nmax_age: 604800\n",
    );
    cfg.tenant(
        "example.org.yaml",
        "domain: example.org\nmode: none\nmax_age: 86400\n",
    );
    cfg
}

#[tokio::test]
async fn serves_exact_policy_bytes_over_http1_and_h2() {
    let cfg = three_tenants();
    let running = start(&cfg).await;
    let client = running.client();
    for h2 in [false, true] {
        let got = client
            .request(
                "mta-sts.example.net",
                "mta-sts.example.net",
                Method::GET,
                POLICY,
                h2,
            )
            .await
            .unwrap();
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(
            got.version,
            if h2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            }
        );
        assert_eq!(
            &got.body[..],
            b"version: STSv1\r\nmode: enforce\r\nmx: *.mx.example.net\r\nmx: mail.example.net\r\nmax_age: 604800\r\n"
        );
        assert_eq!(
            got.headers[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            got.headers[header::CONTENT_LENGTH],
            got.body.len().to_string()
        );
        assert_eq!(got.headers[header::CACHE_CONTROL], "max-age=60");
        assert!(got.headers.get(header::LOCATION).is_none());
    }
    let none = client.get_policy("mta-sts.example.org").await.unwrap();
    assert_eq!(
        &none.body[..],
        b"version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n"
    );
    running.stop().await;
}

#[tokio::test]
async fn head_has_length_and_no_body() {
    let cfg = three_tenants();
    let running = start(&cfg).await;
    let client = running.client();
    let full = client.get_policy("mta-sts.example.com").await.unwrap();
    for h2 in [false, true] {
        let head = client
            .request(
                "mta-sts.example.com",
                "mta-sts.example.com",
                Method::HEAD,
                POLICY,
                h2,
            )
            .await
            .unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert!(head.body.is_empty());
        assert_eq!(
            head.headers[header::CONTENT_LENGTH],
            full.body.len().to_string()
        );
        assert_eq!(
            head.headers[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
    running.stop().await;
}

#[tokio::test]
async fn unknown_sni_and_missing_sni_abort_the_handshake() {
    let cfg = three_tenants();
    let running = start(&cfg).await;
    let client = running.client();
    let err = client
        .handshake("mta-sts.unknown.example", &[b"http/1.1"])
        .await
        .expect_err("unknown SNI must fail");
    assert!(
        err.to_string().to_lowercase().contains("unrecognisedname")
            || err.to_string().to_lowercase().contains("unrecognizedname")
            || err.to_string().to_lowercase().contains("unrecognised"),
        "expected unrecognized_name alert, got {err}"
    );
    // No SNI at all: an IP-address server name makes rustls send none.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(running.ca.clone()).unwrap();
    let tls = std::sync::Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let ip = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let err = tokio_rustls::TlsConnector::from(tls)
        .connect(ip, tcp)
        .await
        .expect_err("no SNI must fail");
    assert!(
        err.to_string().to_lowercase().contains("unrecognised"),
        "got {err}"
    );
    // The listener keeps serving.
    assert_eq!(
        client
            .get_policy("mta-sts.example.com")
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
    running.stop().await;
}

#[tokio::test]
async fn certificates_are_per_tenant() {
    let cfg = three_tenants();
    let running = start(&cfg).await;
    let client = running.client();
    let mut serials = Vec::new();
    for host in [
        "mta-sts.example.com",
        "mta-sts.example.net",
        "mta-sts.example.org",
    ] {
        let tls = client.handshake(host, &[b"http/1.1"]).await.unwrap();
        let (_, conn) = tls.get_ref();
        let leaf = &conn.peer_certificates().unwrap()[0];
        assert!(mta_stsd::certs::cert_covers_host(leaf, host).unwrap());
        for other in [
            "mta-sts.example.com",
            "mta-sts.example.net",
            "mta-sts.example.org",
        ] {
            if other != host {
                assert!(!mta_stsd::certs::cert_covers_host(leaf, other).unwrap());
            }
        }
        serials.push(mta_stsd::certs::cert_info(leaf).unwrap().serial);
    }
    serials.dedup();
    assert_eq!(serials.len(), 3);
    running.stop().await;
}

#[tokio::test]
async fn routing_errors_never_redirect() {
    let cfg = three_tenants();
    let running = start(&cfg).await;
    let client = running.client();
    let host = "mta-sts.example.com";
    let cases = [
        (
            host,
            "mta-sts.nowhere.example",
            Method::GET,
            POLICY,
            StatusCode::NOT_FOUND,
        ),
        (host, host, Method::GET, "/", StatusCode::NOT_FOUND),
        (
            host,
            host,
            Method::GET,
            "/.well-known/mta-sts.txt/",
            StatusCode::NOT_FOUND,
        ),
        (
            host,
            host,
            Method::GET,
            "/.well-known",
            StatusCode::NOT_FOUND,
        ),
        (
            host,
            host,
            Method::POST,
            POLICY,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            host,
            host,
            Method::PUT,
            POLICY,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            host,
            "mta-sts.example.net",
            Method::GET,
            POLICY,
            StatusCode::MISDIRECTED_REQUEST,
        ),
    ];
    for h2 in [false, true] {
        for (sni, host_header, method, path, want) in cases.clone() {
            let got = client
                .request(sni, host_header, method.clone(), path, h2)
                .await
                .unwrap();
            assert_eq!(got.status, want, "{method} {host_header}{path} h2={h2}");
            assert!(!got.status.is_redirection());
            assert!(got.headers.get(header::LOCATION).is_none());
            if want == StatusCode::METHOD_NOT_ALLOWED {
                assert_eq!(got.headers[header::ALLOW], "GET, HEAD");
            }
        }
    }
    running.stop().await;
}

#[tokio::test]
async fn any_user_agent_including_none() {
    let cfg = three_tenants();
    let running = start(&cfg).await;
    // A raw HTTP/1.1 request with no User-Agent and Host with a port.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let client = running.client();
    let mut tls = client.handshake("mta-sts.example.com", &[]).await.unwrap();
    tls.write_all(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.com:443\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.ends_with(
            "version: STSv1\r\nmode: testing\r\nmx: mail.example.com\r\nmax_age: 86400\r\n"
        ),
        "{text}"
    );
    running.stop().await;
}

#[tokio::test]
async fn tls12_and_tls13_both_work() {
    let cfg = three_tenants();
    let running = start(&cfg).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(running.ca.clone()).unwrap();
        let tls = std::sync::Arc::new(
            rustls::ClientConfig::builder_with_protocol_versions(&[version])
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("mta-sts.example.com").unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.protocol_version(), Some(version.version));
    }
    running.stop().await;
}

/// One raw request on a fresh HTTP/1.x connection with SNI `mta-sts.example.com`; the answer.
async fn raw_request(running: &crate::common::Running, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let client = running.client();
    let mut tls = client
        .handshake("mta-sts.example.com", &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn two_host_headers_are_a_bad_request() {
    let cfg = three_tenants();
    let running = start(&cfg).await;
    for second in ["mta-sts.example.com", "mta-sts.example.net"] {
        let got = raw_request(
            &running,
            &format!(
                "GET {POLICY} HTTP/1.1\r\nHost: mta-sts.example.com\r\nHost: {second}\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 400 "), "{second}: {got}");
        assert!(!got.contains("STSv1"), "{got}");
    }
    running.stop().await;
}

#[tokio::test]
async fn http10_without_host_is_served_by_sni_and_http11_still_needs_host() {
    let cfg = three_tenants();
    let running = start(&cfg).await;
    let got = raw_request(&running, &format!("GET {POLICY} HTTP/1.0\r\n\r\n")).await;
    assert!(got.starts_with("HTTP/1.0 200 OK\r\n"), "{got}");
    assert!(
        got.ends_with(
            "version: STSv1\r\nmode: testing\r\nmx: mail.example.com\r\nmax_age: 86400\r\n"
        ),
        "{got}"
    );
    let got = raw_request(
        &running,
        &format!("GET {POLICY} HTTP/1.1\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
    running.stop().await;
}
