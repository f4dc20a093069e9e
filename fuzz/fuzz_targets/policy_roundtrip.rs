//! Policy rendering against the strict RFC 8461 §3.2 parser (`policy::parse`).
//!
//! The first byte chooses the property:
//! - even: the rest is `mode\nmax_age\nmx\nmx…`; those values go through the real tenant
//!   validation (`config::parse_tenants` on a tenant built from them). When the tenant
//!   compiles, `parse(render(mode, mx, max_age))` must give back exactly the compiled
//!   values, and the served body must be that rendering.
//! - odd: the rest is a policy body. When `parse` accepts it, rendering the fields and parsing
//!   again must give the same fields (when the rendering stays within the size limit), and
//!   the parsed fields must obey the grammar's own limits.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mta_stsd::config::parse_tenants;
use mta_stsd::policy::{self, Fields, MAX_AGE_LIMIT, MAX_BODY_BYTES, Mode};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        validated_round_trip(rest);
    } else {
        parsed_round_trip(rest);
    }
});

/// A tenant file (JSON, which is YAML) from the fuzzed values, compiled by the real loader.
fn validated_round_trip(rest: &[u8]) {
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut lines = text.split('\n');
    let (Some(mode), Some(max_age)) = (lines.next(), lines.next()) else {
        return;
    };
    let mx: Vec<&str> = lines.collect();
    let max_age = match max_age.parse::<u64>() {
        Ok(n) => serde_json::Value::from(n),
        Err(_) => serde_json::Value::from(max_age),
    };
    let yaml = serde_json::json!({
        "domain": "example.com",
        "mode": mode,
        "mx": mx,
        "max_age": max_age,
    })
    .to_string();
    let file = parse_tenants(Path::new("fuzz.yaml"), &yaml);
    let Some(tenant) = file.tenants.first() else {
        return;
    };
    let p = &tenant.policy;
    assert_eq!(p.mode.as_str(), mode, "mode changed in compilation");
    let body = policy::render(p.mode, &p.mx, p.max_age);
    assert_eq!(&body[..], &p.body[..]);
    let want = Fields {
        mode: p.mode,
        mx: p.mx.clone(),
        max_age: p.max_age,
    };
    assert_eq!(policy::parse(&body), Ok(want), "{yaml}");
}

fn parsed_round_trip(body: &[u8]) {
    let Ok(fields) = policy::parse(body) else {
        return;
    };
    assert!(fields.max_age <= MAX_AGE_LIMIT);
    assert!(fields.mode == Mode::None || !fields.mx.is_empty());
    assert!(body.starts_with(b"version:"));
    for mx in &fields.mx {
        assert!(mx.is_ascii() && !mx.ends_with('.') && !mx.contains(['\r', '\n', ' ', ':']));
    }
    let rendered = policy::render(fields.mode, &fields.mx, fields.max_age);
    if rendered.len() <= MAX_BODY_BYTES {
        assert_eq!(
            policy::parse(&rendered),
            Ok(fields),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}
