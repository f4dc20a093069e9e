//! A TLS-RPT report body → `tlsrpt::decode` (media type, both size caps, bounded gunzip, JSON
//! validation), then `trim_unknown_fields` as the intake applies it before storing.
//!
//! The media type follows the body's first bytes (gzip magic → `+gzip`, else `+json`), as a
//! well-behaved sender labels it. The body is decoded under the default caps and under the
//! smallest caps the configuration allows, so the cap paths run on small inputs too.
//!
//! Properties: a decoded report's JSON is within the decompressed cap and decodes to the same
//! report on its own; a plain body is returned as sent; what passes the small caps passes the
//! default caps identically; a body over the compressed cap is refused. Trimming drops
//! something or returns `None`, keeps the report the same, and trimming again drops nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_stsd::tlsrpt::report::trim_unknown_fields;
use mta_stsd::tlsrpt::{Limits, Report, ReportError, decode};

/// The smallest caps `tlsrpt.limits` accepts.
const SMALL: Limits = Limits {
    max_compressed: 4096,
    max_decompressed: 4096,
};

fuzz_target!(|data: &[u8]| {
    let content_type = if data.starts_with(&[0x1f, 0x8b]) {
        "application/tlsrpt+gzip"
    } else {
        "application/tlsrpt+json; charset=utf-8"
    };
    let default = decode(data, content_type, &Limits::default());
    let small = decode(data, content_type, &SMALL);
    if data.len() > SMALL.max_compressed {
        assert!(matches!(small, Err(ReportError::TooLarge { .. })));
    }
    if let Ok(decoded) = &small {
        assert_eq!(
            default.as_ref().ok(),
            Some(decoded),
            "small caps passed, default did not"
        );
    }
    let Ok((report, json)) = default else {
        return;
    };
    assert!(json.len() <= Limits::default().max_decompressed);
    if !data.starts_with(&[0x1f, 0x8b]) {
        assert_eq!(json, data);
    }
    assert_eq!(Report::from_json(&json).as_ref(), Ok(&report));
    assert!(!report.policies.is_empty());
    assert!(report.date_range.start < report.date_range.end);
    if let Some((trimmed, dropped)) = trim_unknown_fields(&json) {
        assert!(!dropped.is_empty());
        assert_eq!(
            Report::from_json(&trimmed).as_ref(),
            Ok(&report),
            "trimming changed the report"
        );
        assert_eq!(
            trim_unknown_fields(&trimmed),
            None,
            "trimming twice dropped more"
        );
    }
});
