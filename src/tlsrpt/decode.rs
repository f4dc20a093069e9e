//! From request body to [`Report`]: media type check, size caps, bounded gunzip, JSON validation.

use std::io::Read;

use flate2::read::MultiGzDecoder;

use super::report::{Report, ReportError};
pub use crate::config::{DEFAULT_MAX_COMPRESSED, DEFAULT_MAX_DECOMPRESSED, ReportLimits as Limits};

/// Decompression step: small enough that overshooting the cap by one step costs nothing.
const INFLATE_CHUNK: usize = 64 * 1024;

/// The two magic bytes every gzip member starts with (RFC 1952 §2.3.1).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The two report media types of RFC 8460 §5.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/tlsrpt+gzip`.
    Gzip,
    /// `application/tlsrpt+json`.
    Json,
}

/// Classify a `Content-Type` value: parameters after `;` are ignored, case does not matter.
pub fn media_type(content_type: &str) -> Result<MediaType, ReportError> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/tlsrpt+gzip") {
        Ok(MediaType::Gzip)
    } else if essence.eq_ignore_ascii_case("application/tlsrpt+json") {
        Ok(MediaType::Json)
    } else {
        // Debug-quote and cut the echoed value: it is client input going into a response.
        let shown: String = content_type.chars().take(100).collect();
        Err(ReportError::UnsupportedMediaType(shown))
    }
}

/// Decode one report body: check the media type, apply both caps, gunzip if needed, validate.
///
/// Returns the report and its raw JSON bytes (to be stored as received). The actual encoding
/// is decided by the gzip magic bytes rather than the label, since some senders mislabel
/// gzip as `+json` or the reverse; the label must still be one of the two types.
pub fn decode(
    body: &[u8],
    content_type: &str,
    limits: &Limits,
) -> Result<(Report, Vec<u8>), ReportError> {
    media_type(content_type)?;
    if body.len() > limits.max_compressed {
        return Err(ReportError::TooLarge {
            what: "compressed body",
            limit: limits.max_compressed,
        });
    }
    let json = if body.starts_with(&GZIP_MAGIC) {
        gunzip_bounded(body, limits.max_decompressed)?
    } else {
        if body.len() > limits.max_decompressed {
            return Err(ReportError::TooLarge {
                what: "decompressed report",
                limit: limits.max_decompressed,
            });
        }
        body.to_vec()
    };
    let report = Report::from_json(&json)?;
    Ok((report, json))
}

/// Gunzip `input` (one or more members), failing as soon as the output would exceed `max`.
///
/// Output is produced in 64 KiB steps and the buffer never grows past `max`, so a
/// gzip bomb costs at most `max` bytes of memory and the time to inflate `max` bytes.
pub fn gunzip_bounded(input: &[u8], max: usize) -> Result<Vec<u8>, ReportError> {
    inflate_capped(MultiGzDecoder::new(input), max)
}

fn inflate_capped(mut decoder: impl Read, max: usize) -> Result<Vec<u8>, ReportError> {
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; INFLATE_CHUNK];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ReportError::Invalid(format!(
                    "truncated or corrupt gzip: {e}"
                )));
            }
        };
        if out.len() + n > max {
            return Err(ReportError::TooLarge {
                what: "decompressed report",
                limit: max,
            });
        }
        if out.capacity() < out.len() + n {
            // Grow by doubling but never past the cap, so capacity stays <= max.
            let target = (out.capacity() * 2).max(out.len() + n).min(max);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    if out.is_empty() {
        return Err(ReportError::Invalid("gzip body is empty".to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlsrpt::testutil::{fixture, gzip};

    /// A gzip stream of `members` identical members, each `member_size` zero bytes: valid
    /// multi-member gzip (RFC 1952), built in memory in well under a second.
    fn zero_bomb(member_size: usize, members: usize) -> Vec<u8> {
        let member = gzip(&vec![0u8; member_size]);
        member.repeat(members)
    }

    /// A reader that counts how many compressed bytes the decoder pulled.
    struct Counting<'a> {
        inner: &'a [u8],
        read: std::rc::Rc<std::cell::Cell<usize>>,
    }

    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.set(self.read.get() + n);
            Ok(n)
        }
    }

    #[test]
    fn plain_json_and_gzip_give_the_same_report() {
        let json = fixture("rfc-example.json");
        let limits = Limits::default();
        let (plain, raw_plain) = decode(&json, "application/tlsrpt+json", &limits).unwrap();
        let (gz, raw_gz) = decode(
            &gzip(&json),
            "Application/TLSRPT+gzip; charset=binary",
            &limits,
        )
        .unwrap();
        assert_eq!(plain, gz);
        assert_eq!(raw_plain, json);
        assert_eq!(raw_gz, json);
        assert_eq!(plain.report_id, "20250301-example.com-1");
    }

    #[test]
    fn mislabelled_gzip_is_sniffed() {
        let json = fixture("google.json");
        let (r, _) = decode(&gzip(&json), "application/tlsrpt+json", &Limits::default()).unwrap();
        assert_eq!(r.organization_name, "Google Inc.");
    }

    #[test]
    fn wrong_media_type_is_415() {
        let json = fixture("rfc-example.json");
        for ct in [
            "application/json",
            "text/plain",
            "",
            "application/tlsrpt+gzipx",
        ] {
            let err = decode(&json, ct, &Limits::default()).unwrap_err();
            assert_eq!(err, ReportError::UnsupportedMediaType(ct.to_string()));
            assert_eq!(err.http_status(), 415);
        }
    }

    #[test]
    fn oversized_body_is_413_before_any_parsing() {
        let limits = Limits {
            max_compressed: 100,
            max_decompressed: 1000,
        };
        // 101 bytes of garbage: rejected for size, not as invalid JSON.
        let err = decode(&[b'x'; 101], "application/tlsrpt+json", &limits).unwrap_err();
        assert_eq!(
            err,
            ReportError::TooLarge {
                what: "compressed body",
                limit: 100
            }
        );
        assert_eq!(err.http_status(), 413);
        // Exactly at the cap is not over it.
        let err = decode(&[b'x'; 100], "application/tlsrpt+json", &limits).unwrap_err();
        assert!(matches!(err, ReportError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn plain_json_over_the_decompressed_cap_is_413() {
        let limits = Limits {
            max_compressed: 1000,
            max_decompressed: 10,
        };
        let err = decode(&[b' '; 11], "application/tlsrpt+json", &limits).unwrap_err();
        assert_eq!(
            err,
            ReportError::TooLarge {
                what: "decompressed report",
                limit: 10
            }
        );
    }

    #[test]
    fn gzip_bomb_is_rejected_at_the_cap_without_inflating_the_rest() {
        // 1 GiB of zeros in ~1 MiB of gzip: 128 members of 8 MiB each.
        let bomb = zero_bomb(8 << 20, 128);
        assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
        let limits = Limits::default();
        let started = std::time::Instant::now();
        let err = decode(&bomb, "application/tlsrpt+gzip", &limits).unwrap_err();
        assert_eq!(
            err,
            ReportError::TooLarge {
                what: "decompressed report",
                limit: DEFAULT_MAX_DECOMPRESSED
            }
        );
        assert_eq!(err.http_status(), 413);

        // The decoder stopped at the cap: it pulled only the members needed for 50 MiB
        // (7 of 128), not the whole input.
        let consumed = std::rc::Rc::new(std::cell::Cell::new(0));
        let reader = Counting {
            inner: &bomb,
            read: consumed.clone(),
        };
        let err = inflate_capped(MultiGzDecoder::new(reader), DEFAULT_MAX_DECOMPRESSED);
        assert!(matches!(err, Err(ReportError::TooLarge { .. })));
        assert!(
            consumed.get() < bomb.len() / 8,
            "decoder read {} of {} compressed bytes",
            consumed.get(),
            bomb.len()
        );
        // Inflating 1 GiB would take far longer than inflating 50 MiB even unoptimized.
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
    }

    #[test]
    fn single_member_bomb_is_rejected_too() {
        let bomb = gzip(&vec![0u8; 4 << 20]);
        assert!(bomb.len() < 10_000, "bomb is {} bytes", bomb.len());
        let limits = Limits {
            max_compressed: DEFAULT_MAX_COMPRESSED,
            max_decompressed: 1 << 20,
        };
        let err = decode(&bomb, "application/tlsrpt+gzip", &limits).unwrap_err();
        assert_eq!(
            err,
            ReportError::TooLarge {
                what: "decompressed report",
                limit: 1 << 20
            }
        );
    }

    #[test]
    fn output_buffer_never_exceeds_the_cap() {
        let data = vec![b'a'; 300_000];
        let out = gunzip_bounded(&gzip(&data), 300_000).unwrap();
        assert_eq!(out, data);
        assert!(out.capacity() <= 300_000, "capacity {}", out.capacity());
        assert!(gunzip_bounded(&gzip(&data), 299_999).is_err());
    }

    #[test]
    fn truncated_gzip_is_invalid() {
        let gz = gzip(&fixture("rfc-example.json"));
        for cut in [gz.len() - 1, gz.len() - 8, gz.len() / 2, 12] {
            let err =
                decode(&gz[..cut], "application/tlsrpt+gzip", &Limits::default()).unwrap_err();
            match err {
                ReportError::Invalid(reason) => {
                    assert!(reason.contains("gzip"), "cut {cut}: {reason}")
                }
                other => panic!("cut {cut}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn corrupt_gzip_crc_is_invalid() {
        let mut gz = gzip(&fixture("rfc-example.json"));
        let n = gz.len();
        gz[n - 6] ^= 0xff; // inside the CRC32 trailer
        let err = decode(&gz, "application/tlsrpt+gzip", &Limits::default()).unwrap_err();
        assert!(
            matches!(err, ReportError::Invalid(ref r) if r.contains("gzip")),
            "{err:?}"
        );
    }

    #[test]
    fn gzip_of_garbage_is_invalid_json() {
        let err = decode(
            &gzip(b"{\"a\":1}"),
            "application/tlsrpt+gzip",
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, ReportError::Invalid(ref r) if r.contains("organization-name")),
            "{err:?}"
        );
    }
}
