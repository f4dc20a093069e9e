//! Tenant YAML → `config::parse_tenants` (parse + compile), the path every tenant file takes.
//!
//! Properties: a failed file yields no tenant and an error; every tenant is self-consistent
//! (host, id, body within the limits) and its body parses back, strictly, to its own fields;
//! domains are unique within the file.
#![no_main]

use std::collections::HashSet;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mta_stsd::config::parse_tenants;
use mta_stsd::policy::{self, Fields, ID_LEN, MAX_AGE_LIMIT, MAX_BODY_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz/tenant.yaml");
    let file = parse_tenants(path, text);
    assert_eq!(file.file, path);
    if file.failed {
        assert!(file.tenants.is_empty());
        assert!(file.diagnostics.iter().any(|d| d.is_error()));
    }
    let mut domains = HashSet::new();
    for t in &file.tenants {
        assert!(domains.insert(t.domain.as_str()), "duplicate {}", t.domain);
        assert_eq!(t.host, format!("mta-sts.{}", t.domain));
        assert!(t.domain.is_ascii() && t.domain == t.domain.to_ascii_lowercase());
        let p = &t.policy;
        assert!(p.max_age <= MAX_AGE_LIMIT);
        assert!(p.body.len() <= MAX_BODY_BYTES);
        assert_eq!(&p.body[..], &policy::render(p.mode, &p.mx, p.max_age)[..]);
        assert_eq!(p.id, policy::policy_id(&p.body));
        assert_eq!(p.id.len(), ID_LEN);
        let parsed = policy::parse(&p.body)
            .unwrap_or_else(|e| panic!("a compiled policy does not parse: {e}: {:?}", p.body));
        let want = Fields {
            mode: p.mode,
            mx: p.mx.clone(),
            max_age: p.max_age,
        };
        assert_eq!(parsed, want);
    }
});
