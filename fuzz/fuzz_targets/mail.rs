//! A raw RFC 5322 message → `tlsrpt::mail::extract_report` (MIME walk, report part, headers,
//! decode), and every `Authentication-Results` value → `parse_authentication_results`, as the
//! DKIM policy reads them.
//!
//! The header parser also runs on the `Authentication-Results` lines of messages that hold no
//! report, so it is exercised whether or not the MIME structure is right.
//!
//! Properties: an extracted report's JSON decodes to the same report and is within the cap;
//! the domains read from headers are non-empty and normalized (normalizing again changes
//! nothing); header values are unfolded and within their cap. A parsed header has a
//! non-empty, lowercase authserv-id without spaces, lowercase results, normalized domains, and
//! no more `dkim` results than the value names `dkim`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_stsd::tlsrpt::mail::extract::MAX_HEADER_LEN;
use mta_stsd::tlsrpt::mail::{extract_report, parse_authentication_results};
use mta_stsd::tlsrpt::report::normalize_domain;
use mta_stsd::tlsrpt::{Limits, Report};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let extracted = extract_report(data, &limits);
    if std::env::var_os("FUZZ_TRACE").is_some() {
        eprintln!("{:?}", extracted.as_ref().map(|e| &e.report.report_id));
    }
    match extracted {
        Ok(ex) => {
            assert!(ex.raw_json.len() <= limits.max_decompressed);
            assert_eq!(Report::from_json(&ex.raw_json).as_ref(), Ok(&ex.report));
            for domain in [&ex.report_domain, &ex.submitter, &ex.from_domain]
                .into_iter()
                .flatten()
            {
                assert_normalized(domain);
            }
            for value in &ex.authentication_results {
                assert!(value.len() <= MAX_HEADER_LEN);
                assert!(!value.contains("\r\n"));
                check_auth(value);
            }
        }
        Err(_) => {
            // Header lines of a message that holds no report, unfolded naively.
            let text = String::from_utf8_lossy(data);
            for line in text.lines() {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                if name.eq_ignore_ascii_case("Authentication-Results") {
                    check_auth(value.trim());
                }
            }
        }
    }
});

fn check_auth(value: &str) {
    let Some(results) = parse_authentication_results(value) else {
        return;
    };
    let id = &results.authserv_id;
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "{id:?}"
    );
    assert_eq!(id, &id.to_ascii_lowercase());
    let named = value.to_ascii_lowercase().matches("dkim").count();
    assert!(results.dkim.len() <= named, "{value:?} → {results:?}");
    for (result, domain) in &results.dkim {
        assert_eq!(result, &result.to_ascii_lowercase());
        if let Some(domain) = domain {
            assert_normalized(domain);
        }
    }
    assert_eq!(parse_authentication_results(value).as_ref(), Some(&results));
}

fn assert_normalized(domain: &str) {
    assert!(!domain.is_empty());
    assert_eq!(
        normalize_domain(domain),
        domain,
        "not normalized: {domain:?}"
    );
}
