//! TLS-RPT load: HTTPS posts (new reports, duplicates, and hostile ones: bad JSON, oversized,
//! an unknown tenant, a report naming another domain, a gzip bomb, a wrong media type) and
//! mailed reports through `mta-stsd ingest-mail`. Every report acknowledged (200, exit 0) is
//! recorded, to be looked up in the database at the end.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{Method, StatusCode};

use crate::net;
use crate::setup::{AUTHSERV_ID, LIMITS, REPORT_HOST};
use crate::state::{Counts, Rng, Shared};

/// Post kinds, their expected status and the intake outcome label the daemon counts them as.
pub const POST_KINDS: [(&str, u16, &str); 8] = [
    ("new report", 200, "stored"),
    ("duplicate (reformatted)", 200, "duplicate"),
    ("bad JSON", 400, "invalid"),
    ("names another domain", 400, "invalid"),
    ("unknown tenant", 404, "unknown_domain"),
    ("oversized body", 413, "too_large"),
    ("gzip bomb", 413, "too_large"),
    ("wrong media type", 415, "unsupported_media_type"),
];

/// Mail kinds and the exit status `ingest-mail` must give.
pub const MAIL_KINDS: [(&str, i32); 4] = [
    ("new report", 0),
    ("duplicate", 0),
    ("no trusted DKIM pass", 65),
    ("unknown domain", 65),
];

/// A report acknowledged: (organization, report-id, tenant, source).
pub type Acked = (String, String, String, &'static str);

pub struct ReportStats {
    pub posts: [crate::state::Counts; 8],
    pub post_503_retries: AtomicU64,
    pub mails: [crate::state::Counts; 4],
    pub mail_deferred: AtomicU64,
    pub acked: Mutex<Vec<Acked>>,
    /// Acknowledged reports (JSON, tenant) to send again as duplicates.
    recent: Mutex<Vec<(Vec<u8>, usize)>>,
    recent_mail: Mutex<Vec<Vec<u8>>>,
    serial: AtomicU64,
    pub bin: PathBuf,
    pub config: PathBuf,
    bomb: Vec<u8>,
}

impl ReportStats {
    pub fn new(bin: PathBuf, config: PathBuf) -> Self {
        // 64 MiB of zeros gzip to about 64 KiB: far over the decompressed cap.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        ReportStats {
            posts: Default::default(),
            post_503_retries: AtomicU64::new(0),
            mails: Default::default(),
            mail_deferred: AtomicU64::new(0),
            acked: Mutex::new(Vec::new()),
            recent: Mutex::new(Vec::new()),
            recent_mail: Mutex::new(Vec::new()),
            serial: AtomicU64::new(0),
            bin,
            config,
            bomb: enc.finish().unwrap(),
        }
    }

    fn next_id(&self, run: &str) -> String {
        format!("soak-{run}-{}", self.serial.fetch_add(1, Ordering::Relaxed))
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A one-policy report for `domain` covering yesterday (UTC).
pub fn report_json(org: &str, report_id: &str, domain: &str, failed: u64) -> Vec<u8> {
    let fmt = &time::format_description::well_known::Rfc3339;
    let end = time::OffsetDateTime::now_utc()
        .date()
        .midnight()
        .assume_utc();
    let start = end - time::Duration::days(1);
    let details: Vec<serde_json::Value> = (failed > 0)
        .then(|| {
            serde_json::json!({"result-type": "certificate-expired",
                "receiving-mx-hostname": format!("mx.{domain}"), "failed-session-count": failed})
        })
        .into_iter()
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "organization-name": org,
        "date-range": {"start-datetime": start.format(fmt).unwrap(),
                       "end-datetime": end.format(fmt).unwrap()},
        "contact-info": format!("tlsrpt@{}", org_domain(org)),
        "report-id": report_id,
        "policies": [{
            "policy": {"policy-type": "sts", "policy-domain": domain,
                       "policy-string": ["version: STSv1", "mode: testing"],
                       "mx-host": [format!("mx.{domain}")]},
            "summary": {"total-successful-session-count": 1000,
                        "total-failure-session-count": failed},
            "failure-details": details,
        }]
    }))
    .unwrap()
}

fn org_domain(org: &str) -> String {
    format!("{}.example", org.to_ascii_lowercase().replace(' ', "-"))
}

/// An RFC 8460 §5.3 report mail from `submitter` carrying `json` gzipped, with an
/// Authentication-Results header from the trusted MTA when `signed`.
pub fn report_mail(submitter: &str, domain: &str, json: &[u8], signed: bool) -> Vec<u8> {
    let auth = if signed {
        format!(
            "Authentication-Results: {AUTHSERV_ID};\r\n\tdkim=pass header.d={submitter} header.s=s1\r\n"
        )
    } else {
        String::new()
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(gzip(json));
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "{auth}From: TLS reports <tlsrpt@{submitter}>\r\n\
         To: tlsrpt@operator.example\r\n\
         Subject: Report Domain: {domain} Submitter: {submitter}\r\n\
         TLS-Report-Domain: {domain}\r\n\
         TLS-Report-Submitter: {submitter}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"b1\"\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: text/plain\r\n\
         \r\n\
         An aggregate TLS report.\r\n\
         --b1\r\n\
         Content-Type: application/tlsrpt+gzip\r\n\
         Content-Disposition: attachment; filename=\"{submitter}!{domain}!1!2.json.gz\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {}\r\n\
         --b1--\r\n",
        lines.join("\r\n")
    )
    .into_bytes()
}

struct Post {
    kind: usize,
    path: String,
    media: &'static str,
    body: Vec<u8>,
    /// What to record once acknowledged.
    ack: Option<(String, String, usize, Vec<u8>)>,
}

fn make_post(shared: &Shared, stats: &ReportStats, rng: &mut Rng, run: &str) -> Post {
    let n = shared.layout.domains.len();
    let t = rng.below(n);
    let domain = shared.layout.domains[t].clone();
    let path = format!("/tlsrpt/{domain}");
    let roll = rng.below(100);
    let kind = match roll {
        0..50 => 0,
        50..65 => 1,
        65..72 => 2,
        72..79 => 3,
        79..86 => 4,
        86..91 => 5,
        91..95 => 6,
        _ => 7,
    };
    let org = format!("Soak Org {}", rng.below(5));
    let fresh = |rid: &str| report_json(&org, rid, &domain, rng_failed(t));
    match kind {
        1 => {
            let recent = stats.recent.lock().unwrap();
            if let Some((json, t)) = recent.get(t % recent.len().max(1)).cloned() {
                // The same report pretty-printed: still a duplicate by content.
                let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
                let body = serde_json::to_vec_pretty(&v).unwrap();
                let path = format!("/tlsrpt/{}", shared.layout.domains[t]);
                return Post {
                    kind,
                    path,
                    media: "application/tlsrpt+json",
                    body,
                    ack: None,
                };
            }
            drop(recent);
            make_new(stats, run, &org, t, &domain, path)
        }
        2 => Post {
            kind,
            path,
            media: "application/tlsrpt+json",
            body: b"{\"organization-name\": \"x\", ".to_vec(),
            ack: None,
        },
        3 => {
            let json = report_json(&org, &stats.next_id(run), "stranger.invalid", 0);
            Post {
                kind,
                path,
                media: "application/tlsrpt+gzip",
                body: gzip(&json),
                ack: None,
            }
        }
        4 => {
            let json = fresh("nobody");
            let path = "/tlsrpt/nobody.soak-unknown.example".into();
            Post {
                kind,
                path,
                media: "application/tlsrpt+json",
                body: json,
                ack: None,
            }
        }
        5 => {
            let mut body = vec![b' '; LIMITS.max_compressed + (512 << 10)];
            body[0] = b'{';
            Post {
                kind,
                path,
                media: "application/tlsrpt+json",
                body,
                ack: None,
            }
        }
        6 => Post {
            kind,
            path,
            media: "application/tlsrpt+gzip",
            body: stats.bomb.clone(),
            ack: None,
        },
        7 => Post {
            kind,
            path,
            media: "text/plain",
            body: fresh("media"),
            ack: None,
        },
        _ => make_new(stats, run, &org, t, &domain, path),
    }
}

fn rng_failed(t: usize) -> u64 {
    (t % 3) as u64
}

fn make_new(
    stats: &ReportStats,
    run: &str,
    org: &str,
    t: usize,
    domain: &str,
    path: String,
) -> Post {
    let rid = stats.next_id(run);
    let json = report_json(org, &rid, domain, rng_failed(t));
    let gz = t.is_multiple_of(2);
    Post {
        kind: 0,
        path,
        media: if gz {
            "application/tlsrpt+gzip"
        } else {
            "application/tlsrpt+json"
        },
        body: if gz { gzip(&json) } else { json.clone() },
        ack: Some((org.to_owned(), rid, t, json)),
    }
}

async fn send_post(
    shared: &Shared,
    from: IpAddr,
    h2: bool,
    p: &Post,
) -> Result<net::Reply, String> {
    let fut = async {
        let mut c = net::open(
            shared.addr,
            Some(from),
            REPORT_HOST,
            shared.tls.pick(h2, true),
            h2,
        )
        .await?;
        c.send(
            Method::POST,
            REPORT_HOST,
            &p.path,
            &[("content-type", p.media)],
            Bytes::from(p.body.clone()),
        )
        .await
    };
    match tokio::time::timeout(Duration::from_secs(60), fut).await {
        Ok(r) => r,
        Err(_) => Err("timed out".into()),
    }
}

/// Posts reports `gap` apart from loopback addresses 127.0.1.`base`.. until stopped.
pub async fn posts(
    shared: Arc<Shared>,
    stats: Arc<ReportStats>,
    seed: u64,
    base: u8,
    gap: Duration,
    run: String,
) {
    let mut rng = Rng::new(seed);
    let mut k = 0u8;
    while shared.nap(gap).await {
        k = k.wrapping_add(1);
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 1, base.wrapping_add(k % 32)));
        let post = make_post(&shared, &stats, &mut rng, &run);
        let h2 = rng.chance(50);
        let (label, want, _) = POST_KINDS[post.kind];
        let c = &stats.posts[post.kind];
        let mut start = Instant::now();
        let mut r = send_post(&shared, from, h2, &post).await;
        for _ in 0..3 {
            match &r {
                Ok(reply) if reply.status == StatusCode::SERVICE_UNAVAILABLE => {
                    Counts::add(&stats.post_503_retries);
                    shared.nap(Duration::from_secs(1)).await;
                    start = Instant::now();
                    r = send_post(&shared, from, h2, &post).await;
                }
                _ => break,
            }
        }
        let end = Instant::now();
        match r {
            Ok(reply) if reply.status.as_u16() == want && body_fits(post.kind, &reply.body) => {
                c.ok_era(shared.restart.era(start, end));
                if let Some((org, rid, t, json)) = post.ack {
                    let domain = shared.layout.domains[t].clone();
                    stats
                        .acked
                        .lock()
                        .unwrap()
                        .push((org, rid, domain, "https"));
                    let mut recent = stats.recent.lock().unwrap();
                    if recent.len() >= 200 {
                        recent.remove(0);
                    }
                    recent.push((json, t));
                }
            }
            Ok(reply) => {
                Counts::add(&c.failed);
                shared.fail(format!(
                    "TLS-RPT post ({label}) to {}: {} {:?}, expected {want}",
                    post.path,
                    reply.status,
                    String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)])
                ));
            }
            Err(_) if shared.restart.in_window(start, end) => Counts::add(&c.in_window),
            Err(e) => {
                Counts::add(&c.failed);
                shared.fail(format!("TLS-RPT post ({label}) to {}: {e}", post.path));
            }
        }
    }
}

fn body_fits(kind: usize, body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    match kind {
        0 => text.starts_with("report stored"),
        1 => text.contains("duplicate"),
        _ => true,
    }
}

/// Pipes one mail into `ingest-mail` every `gap` until stopped (the daemon's state does not
/// matter: the command writes the database itself).
pub async fn mails(
    shared: Arc<Shared>,
    stats: Arc<ReportStats>,
    seed: u64,
    gap: Duration,
    run: String,
) {
    let mut rng = Rng::new(seed);
    while shared.nap(gap).await {
        let t = rng.below(shared.layout.domains.len());
        let domain = shared.layout.domains[t].clone();
        let submitter = format!("mailer{}.example", rng.below(4));
        let org = format!("Mailer {}", rng.below(4));
        let roll = rng.below(100);
        let kind = match roll {
            0..70 => 0,
            70..80 => 1,
            80..90 => 2,
            _ => 3,
        };
        let rid = stats.next_id(&run);
        let (mail, ack) = match kind {
            1 if !stats.recent_mail.lock().unwrap().is_empty() => {
                let recent = stats.recent_mail.lock().unwrap();
                (recent[rng.below(recent.len())].clone(), None)
            }
            2 => (
                report_mail(
                    &submitter,
                    &domain,
                    &report_json(&org, &rid, &domain, 0),
                    false,
                ),
                None,
            ),
            3 => {
                let d = "nobody.soak-unknown.example";
                (
                    report_mail(&submitter, d, &report_json(&org, &rid, d, 0), true),
                    None,
                )
            }
            _ => {
                let mail = report_mail(
                    &submitter,
                    &domain,
                    &report_json(&org, &rid, &domain, 1),
                    true,
                );
                (mail, Some((org.clone(), rid.clone(), domain.clone())))
            }
        };
        let kind = if kind == 1 && ack.is_some() { 0 } else { kind };
        let (bin, config) = (stats.bin.clone(), stats.config.clone());
        let input = mail.clone();
        let start = Instant::now();
        let mark = shared.broken_mark();
        let out = tokio::task::spawn_blocking(move || ingest(&bin, &config, &input))
            .await
            .expect("ingest task");
        let era = shared.restart.era(start, Instant::now());
        let (label, want) = MAIL_KINDS[kind];
        let c = &stats.mails[kind];
        match out {
            Ok((code, _)) if code == want => {
                c.ok_era(era);
                if let Some((org, rid, domain)) = ack {
                    stats.acked.lock().unwrap().push((org, rid, domain, "mail"));
                    let mut recent = stats.recent_mail.lock().unwrap();
                    if recent.len() >= 100 {
                        recent.remove(0);
                    }
                    recent.push(mail);
                }
            }
            // A domain unknown while some tenant file is broken may be in that file: deferred
            // by design (the MTA retries after the operator fixed it).
            Ok((75, _))
                if kind != 2
                    && shared.was_broken(mark, (kind == 0).then(|| shared.layout.file_of[t])) =>
            {
                Counts::add(&stats.mail_deferred);
            }
            Ok((75, err)) => {
                Counts::add(&c.failed);
                shared.fail(format!("ingest-mail ({label}) deferred (75): {err}"));
            }
            Ok((code, err)) => {
                Counts::add(&c.failed);
                shared.fail(format!(
                    "ingest-mail ({label}): exit {code}, expected {want}: {err}"
                ));
            }
            Err(e) => {
                Counts::add(&c.failed);
                shared.fail(format!("ingest-mail ({label}): {e}"));
            }
        }
    }
}

fn ingest(bin: &PathBuf, config: &PathBuf, mail: &[u8]) -> Result<(i32, String), String> {
    let mut child = std::process::Command::new(bin)
        .args(["--log-format", "json", "ingest-mail", "--config"])
        .arg(config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(mail)
        .map_err(|e| format!("stdin: {e}"))?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    Ok((
        out.status.code().unwrap_or(-1),
        err.chars().take(300).collect(),
    ))
}

/// Successes answered by the restarted daemon for certain, and those that straddle the kill.
pub fn after(c: &Counts) -> (u64, u64) {
    (Counts::get(&c.ok_after), Counts::get(&c.ok_straddle))
}
