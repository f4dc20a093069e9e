//! The dialogue against scripted peers: the replies a real server rarely gives on demand
//! (tests/integration/probe.rs runs a real SMTP server for the TLS verdicts).

use super::*;
use tokio::io::{AsyncBufReadExt, DuplexStream};

fn opts() -> ProbeOptions {
    let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).unwrap();
    ProbeOptions::new(
        "probe.example.net",
        TrustRoots::Only(vec![ca.cert.der().clone()]),
    )
    .unwrap()
}

/// A peer that sends `greeting`, then answers each command line from `answers` in order
/// (by its first word) and records what it received; stops at EOF.
fn peer(
    greeting: &'static str,
    answers: &'static [(&'static str, &'static str)],
) -> (DuplexStream, tokio::task::JoinHandle<Vec<String>>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(async move {
        let mut server = BufReader::new(server);
        let mut seen = Vec::new();
        server
            .get_mut()
            .write_all(greeting.as_bytes())
            .await
            .unwrap();
        loop {
            let mut line = String::new();
            if server.read_line(&mut line).await.unwrap_or(0) == 0 {
                return seen;
            }
            let line = line.trim_end().to_string();
            let word = line.split(' ').next().unwrap_or_default().to_string();
            seen.push(line);
            if let Some((_, answer)) = answers.iter().find(|(w, _)| *w == word)
                && server.get_mut().write_all(answer.as_bytes()).await.is_err()
            {
                return seen;
            }
        }
    });
    (client, task)
}

async fn run(stream: DuplexStream) -> ProbeOutcome {
    let clock = Clock {
        deadline: Instant::now() + Duration::from_secs(30),
        step: Duration::from_secs(10),
    };
    let name = server_name("mx.example.com.").unwrap();
    probe_stream(&opts(), name, stream, &clock).await
}

fn result(outcome: &ProbeOutcome) -> Option<&str> {
    outcome.result_type().map(ResultType::as_str)
}

#[tokio::test]
async fn no_starttls_in_ehlo_and_a_polite_quit() {
    let (stream, peer) = peer(
        "220-mx.example.com ESMTP\r\n220 second greeting line\r\n",
        &[
            (
                "EHLO",
                "250-mx.example.com\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n",
            ),
            ("QUIT", "221 bye\r\n"),
        ],
    );
    let outcome = run(stream).await;
    assert_eq!(
        result(&outcome),
        Some("starttls-not-supported"),
        "{outcome}"
    );
    assert_eq!(peer.await.unwrap(), ["EHLO probe.example.net", "QUIT"]);
}

#[tokio::test]
async fn starttls_refused_is_not_supported() {
    for answer in ["454 4.7.0 TLS not available\r\n", "502 5.5.1 no\r\n"] {
        let answers: &'static [(&str, &str)] = Box::leak(Box::new([
            ("EHLO", "250-mx\r\n250 STARTTLS\r\n"),
            ("STARTTLS", answer),
            ("QUIT", "221 bye\r\n"),
        ]));
        let (stream, peer) = peer("220 mx\r\n", answers);
        let outcome = run(stream).await;
        assert_eq!(
            result(&outcome),
            Some("starttls-not-supported"),
            "{outcome}"
        );
        assert!(outcome.to_string().contains(answer.trim_end()), "{outcome}");
        assert_eq!(peer.await.unwrap().last().unwrap(), "QUIT");
    }
}

#[tokio::test]
async fn ehlo_refused_means_no_starttls_but_a_temporary_error_is_no_verdict() {
    let (stream, _peer) = peer(
        "220 mx\r\n",
        &[("EHLO", "502 5.5.2 HELO only\r\n"), ("QUIT", "221 bye\r\n")],
    );
    assert_eq!(result(&run(stream).await), Some("starttls-not-supported"));
    let (stream, _peer) = peer(
        "220 mx\r\n",
        &[("EHLO", "421 4.3.2 busy\r\n"), ("QUIT", "221 bye\r\n")],
    );
    assert!(matches!(
        run(stream).await,
        ProbeOutcome::Unreachable {
            step: Step::Ehlo,
            ..
        }
    ));
}

#[tokio::test]
async fn a_refusing_greeting_is_no_verdict() {
    let (stream, _peer) = peer("554 5.3.2 no service\r\n", &[("QUIT", "221 bye\r\n")]);
    let outcome = run(stream).await;
    assert!(
        matches!(&outcome, ProbeOutcome::Unreachable { step: Step::Greeting, detail } if detail.contains("554")),
        "{outcome}"
    );
}

#[tokio::test]
async fn data_pipelined_after_the_220_is_refused() {
    let (stream, _peer) = peer(
        "220 mx\r\n",
        &[
            ("EHLO", "250-mx\r\n250 STARTTLS\r\n"),
            ("STARTTLS", "220 go ahead\r\n250 injected\r\n"),
        ],
    );
    let outcome = run(stream).await;
    assert!(
        matches!(&outcome, ProbeOutcome::Unreachable { step: Step::Starttls, detail } if detail.contains("before the handshake")),
        "{outcome}"
    );
}

#[tokio::test]
async fn a_garbled_greeting_is_a_protocol_error() {
    let (stream, _peer) = peer("HTTP/1.1 400 Bad Request\r\n", &[]);
    let outcome = run(stream).await;
    assert!(
        matches!(&outcome, ProbeOutcome::Unreachable { step: Step::Greeting, detail } if detail.contains("not an SMTP")),
        "{outcome}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_times_out_at_its_step() {
    let (client, _server) = tokio::io::duplex(1024);
    let outcome = run(client).await;
    assert!(
        matches!(&outcome, ProbeOutcome::Unreachable { step: Step::Greeting, detail } if detail.contains("no answer within")),
        "{outcome}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_whole_probe_has_a_deadline() {
    // Each reply comes just inside the step timeout; the total deadline still ends it.
    let (client, server) = tokio::io::duplex(1024);
    tokio::spawn(async move {
        let mut server = BufReader::new(server);
        tokio::time::sleep(Duration::from_secs(9)).await;
        server.get_mut().write_all(b"220 mx\r\n").await.unwrap();
        let mut line = String::new();
        server.read_line(&mut line).await.unwrap();
        tokio::time::sleep(Duration::from_secs(9)).await;
        server
            .get_mut()
            .write_all(b"250-mx\r\n250 STARTTLS\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let clock = Clock {
        deadline: Instant::now() + Duration::from_secs(20),
        step: Duration::from_secs(10),
    };
    let name = server_name("mx.example.com").unwrap();
    let outcome = probe_stream(&opts(), name, client, &clock).await;
    assert!(
        matches!(&outcome, ProbeOutcome::Unreachable { step: Step::Starttls, detail } if detail.contains("within 2s")),
        "{outcome}"
    );
}

#[test]
fn server_names() {
    assert!(
        matches!(server_name("MX.Example.com."), Ok(ServerName::DnsName(n)) if n.as_ref() == "mx.example.com")
    );
    assert!(server_name("192.0.2.1").is_err());
    assert!(server_name("bad name").is_err());
    assert!(ProbeOptions::new("two words", TrustRoots::Only(vec![])).is_err());
    assert!(ProbeOptions::new("probe.example", TrustRoots::Only(vec![])).is_err());
}

#[test]
fn outcomes_as_json() {
    let ok = ProbeOutcome::Ok(TlsSession {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
        not_after: 1_800_000_000,
    });
    assert_eq!(
        serde_json::to_value(&ok).unwrap(),
        serde_json::json!({"outcome": "ok", "version": "TLSv1.3",
            "cipher": "TLS13_AES_128_GCM_SHA256", "not_after": 1_800_000_000})
    );
    let failed = ProbeOutcome::failed(ResultType::CertificateExpired, "expired");
    assert_eq!(
        serde_json::to_value(&failed).unwrap(),
        serde_json::json!({"outcome": "failed", "result_type": "certificate-expired",
            "detail": "expired"})
    );
    let unreachable = ProbeOutcome::unreachable(Step::HostName, "bad");
    assert_eq!(
        serde_json::to_value(&unreachable).unwrap(),
        serde_json::json!({"outcome": "unreachable", "step": "host-name", "detail": "bad"})
    );
    assert!(ok.is_ok() && !failed.is_ok());
}
