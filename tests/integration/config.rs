//! Configuration validation: one test per rule, with the exact text an operator sees.

use std::path::Path;

use mta_stsd::config::{Diagnostic, Severity, assemble, parse_tenants};
use mta_stsd::policy::policy_id;

/// Parses `yaml` as `tenants/t.yaml` and returns every diagnostic as text.
fn diags(yaml: &str) -> Vec<String> {
    parse_tenants(Path::new("tenants/t.yaml"), yaml)
        .diagnostics
        .iter()
        .map(Diagnostic::to_string)
        .collect()
}

fn one(yaml: &str) -> String {
    let all = diags(yaml);
    assert_eq!(
        all.len(),
        1,
        "expected exactly one diagnostic, got {all:#?}"
    );
    all.into_iter().next().unwrap()
}

const OK: &str = "domain: example.com\nmode: testing\nmx: [mx.example.com]\nmax_age: 86400\n";

#[test]
fn valid_tenant_has_no_diagnostics() {
    let file = parse_tenants(Path::new("tenants/t.yaml"), OK);
    assert!(file.diagnostics.is_empty(), "{:?}", file.diagnostics);
    let t = &file.tenants[0];
    assert_eq!(t.domain, "example.com");
    assert_eq!(t.host, "mta-sts.example.com");
    assert_eq!((t.line, t.column), (1, 9));
}

#[test]
fn domain_is_lowercased_and_idn_converted() {
    let file = parse_tenants(
        Path::new("t.yaml"),
        "domain: Bücher.EXAMPLE\nmode: testing\nmx: [MX.Bücher.example]\n",
    );
    assert!(file.diagnostics.is_empty(), "{:?}", file.diagnostics);
    assert_eq!(file.tenants[0].domain, "xn--bcher-kva.example");
    assert_eq!(file.tenants[0].policy.mx, vec!["mx.xn--bcher-kva.example"]);
}

#[test]
fn domain_rules() {
    assert_eq!(
        one("domain: example.com.\nmode: testing\nmx: [mx.example.com]\n"),
        "tenants/t.yaml:1:9: error: domain: \"example.com.\" must not end with a dot"
    );
    assert_eq!(
        one("domain: 192.0.2.7\nmode: testing\nmx: [mx.example.com]\n"),
        "tenants/t.yaml:1:9: error: domain: \"192.0.2.7\" is an IP address; a host name is required"
    );
    assert_eq!(
        one("domain: exa_mple.com\nmode: testing\nmx: [mx.example.com]\n"),
        "tenants/t.yaml:1:9: error: domain: \"exa_mple.com\" is not a valid host name (IDNA conversion failed)"
    );
    assert_eq!(
        one("mode: testing\ndomain: localhost\nmx: [mx.example.com]\n"),
        "tenants/t.yaml:2:9: error: domain: \"localhost\" is not a valid host name: needs at least two labels (e.g. example.com)"
    );
}

#[test]
fn mx_rules() {
    let yaml = "domain: example.com\nmode: enforce\nmax_age: 604800\nmx:\n  - \"*.mx.example.com\"\n  - \"mx.*.example.com\"\n  - 198.51.100.1\n  - mx.example.com:25\n  - mx.example.com.\n  - \"*.MX.example.com\"\n";
    assert_eq!(
        diags(yaml),
        vec![
            "tenants/t.yaml:6:5: error: mx[1]: \"mx.*.example.com\": a wildcard is allowed only as the whole left-most label (\"*.example.com\")",
            "tenants/t.yaml:7:5: error: mx[2]: \"198.51.100.1\" is an IP address; a host name is required",
            "tenants/t.yaml:8:5: error: mx[3]: \"mx.example.com:25\" must not contain a port",
            "tenants/t.yaml:9:5: error: mx[4]: \"mx.example.com.\" must not end with a dot",
            "tenants/t.yaml:10:5: error: mx[5]: duplicate MX pattern \"*.mx.example.com\"",
        ]
    );
}

#[test]
fn mx_required_unless_none() {
    assert_eq!(
        one("domain: example.com\nmode: testing\n"),
        "tenants/t.yaml:2:7: error: mx: missing: at least one MX pattern is required in mode testing"
    );
    assert_eq!(
        one("domain: example.com\nmode: enforce\nmx: []\n"),
        "tenants/t.yaml:3:5: error: mx: at least one MX pattern is required in mode enforce"
    );
    let none = parse_tenants(Path::new("t.yaml"), "domain: example.com\nmode: none\n");
    assert!(none.diagnostics.is_empty());
    assert_eq!(none.tenants[0].policy.max_age, 604_800, "default max_age");
}

#[test]
fn max_age_range_and_warnings() {
    assert_eq!(
        one("domain: example.com\nmode: testing\nmx: [mx.example.com]\nmax_age: 31557601\n"),
        "tenants/t.yaml:4:10: error: max_age: 31557601 is above the RFC 8461 limit of 31557600 seconds"
    );
    assert_eq!(
        one("domain: example.com\nmode: testing\nmx: [mx.example.com]\nmax_age: -1\n"),
        "tenants/t.yaml:4:10: error: max_age: -1 is negative; give seconds or a duration such as 1d"
    );
    let short = parse_tenants(
        Path::new("t.yaml"),
        "domain: example.com\nmode: testing\nmx: [mx.example.com]\nmax_age: 3600\n",
    );
    assert_eq!(
        short.tenants.len(),
        1,
        "a warning does not reject the tenant"
    );
    assert_eq!(short.diagnostics[0].severity, Severity::Warning);
    assert_eq!(
        short.diagnostics[0].to_string(),
        "t.yaml:4:10: warning: max_age: 3600 seconds is less than a day; senders will re-fetch often and be less protected"
    );
    assert_eq!(
        one("domain: example.com\nmode: enforce\nmx: [mx.example.com]\nmax_age: 86400\n"),
        "tenants/t.yaml:4:10: warning: max_age: 86400 seconds is short for enforce mode; at least 604800 (one week) is recommended"
    );
    assert!(
        diags("domain: example.com\nmode: testing\nmx: [mx.example.com]\nmax_age: 31557600\n")
            .is_empty()
    );
}

#[test]
fn rua_rules() {
    let yaml = "domain: example.com\nmode: testing\nmx: [mx.example.com]\ntlsrpt:\n  rua:\n    - mailto:tls@example.com\n    - \"mailto:a,b@example.com\"\n    - \"https://r.example.com/x;y\"\n    - \"mailto:a!b@example.com\"\n    - ftp://r.example.com/\n";
    assert_eq!(
        diags(yaml),
        vec![
            "tenants/t.yaml:7:7: error: tlsrpt.rua[1]: \"mailto:a,b@example.com\" contains ',', which must be percent-encoded as %2C in a TLS-RPT URI (RFC 8460 §3)",
            "tenants/t.yaml:8:7: error: tlsrpt.rua[2]: \"https://r.example.com/x;y\" contains ';', which must be percent-encoded as %3B in a TLS-RPT URI (RFC 8460 §3)",
            "tenants/t.yaml:9:7: error: tlsrpt.rua[3]: \"mailto:a!b@example.com\" contains '!', which must be percent-encoded as %21 in a TLS-RPT URI (RFC 8460 §3)",
            "tenants/t.yaml:10:7: error: tlsrpt.rua[4]: \"ftp://r.example.com/\" must be a mailto: or https: URI",
        ]
    );
}

#[test]
fn unknown_and_duplicate_keys_are_errors() {
    assert_eq!(
        one("domain: example.com\nmode: testing\nmxx: [mx.example.com]\n"),
        "tenants/t.yaml:3:1: error: mxx: unknown field `mxx`, expected one of domain, mode, mx, max_age, tlsrpt, retire"
    );
    assert_eq!(
        one("domain: example.com\nmode: testing\nmx: [mx.example.com]\nmode: enforce\n"),
        "tenants/t.yaml:4:1: error: mode: duplicate key \"mode\""
    );
    assert_eq!(
        one("domain: example.com\nmode: enforcing\nmx: [mx.example.com]\n"),
        "tenants/t.yaml:2:7: error: mode: unknown variant `enforcing`, expected one of enforce, testing, none"
    );
}

#[test]
fn bulk_file_and_duplicate_domains() {
    let bulk = "- domain: a.example\n  mode: testing\n  mx: [mx.a.example]\n- domain: b.example\n  mode: none\n- domain: A.example\n  mode: none\n";
    let file = parse_tenants(Path::new("tenants/bulk.yaml"), bulk);
    assert_eq!(file.tenants.len(), 2);
    assert_eq!(
        file.diagnostics
            .iter()
            .map(Diagnostic::to_string)
            .collect::<Vec<_>>(),
        vec![
            "tenants/bulk.yaml:6:11: error: [2].domain: duplicate domain \"a.example\", already defined at line 1"
        ]
    );
    let other = parse_tenants(
        Path::new("tenants/zz.yaml"),
        "domain: b.example\nmode: none\n",
    );
    let set = assemble(vec![file, other]);
    assert_eq!(set.tenants.len(), 2, "the first owner keeps the domain");
    assert_eq!(
        set.diagnostics.last().unwrap().to_string(),
        "tenants/zz.yaml:1:9: error: domain: duplicate domain \"b.example\": already defined in tenants/bulk.yaml"
    );
}

#[test]
fn syntax_error_names_line() {
    assert_eq!(
        one("domain: [example.com\nmode: testing\n"),
        "tenants/t.yaml:1:9: error: domain: expected string scalar"
    );
}

#[test]
fn id_is_stable_and_changes_with_one_character() {
    let a = parse_tenants(Path::new("a.yaml"), OK).tenants.remove(0);
    let b = parse_tenants(
        Path::new("b.yaml"),
        &format!(
            "# same policy, other spelling\n{}",
            OK.replace("mode: testing", "mode:   testing")
        ),
    )
    .tenants
    .remove(0);
    assert_eq!(a.policy.id, b.policy.id, "same body → same id");
    assert_eq!(a.policy.id, policy_id(&a.policy.body));
    let c = parse_tenants(
        Path::new("c.yaml"),
        &OK.replace("mx.example.com", "mx.example.con"),
    )
    .tenants
    .remove(0);
    assert_ne!(a.policy.id, c.policy.id, "one character → new id");
    assert!(a.policy.id.len() <= 32 && a.policy.id.chars().all(|c| c.is_ascii_alphanumeric()));
}

#[test]
fn a_bulk_file_of_60000_tenants_parses() {
    // serde-saphyr's default node budget stopped a single file near 40 000 tenants.
    let mut yaml = String::with_capacity(60_000 * 60);
    for i in 0..60_000 {
        yaml.push_str(&format!(
            "- domain: t{i}.example\n  mode: testing\n  mx: [mx.t{i}.example]\n"
        ));
    }
    let file = parse_tenants(Path::new("tenants/bulk.yaml"), &yaml);
    assert!(
        file.diagnostics.is_empty(),
        "{:?}",
        file.diagnostics.first()
    );
    assert_eq!(file.tenants.len(), 60_000);
}

fn tenant(yaml: &str) -> mta_stsd::config::Tenant {
    let mut file = parse_tenants(Path::new("t.yaml"), yaml);
    assert!(file.diagnostics.is_empty(), "{:?}", file.diagnostics);
    file.tenants.remove(0)
}

#[test]
fn max_age_takes_duration_units_and_the_body_says_seconds() {
    let base = "domain: example.com\nmode: testing\nmx: [mx.example.com]\n";
    for (value, seconds) in [
        ("1d", 86_400),
        ("2w", 1_209_600),
        ("36h", 129_600),
        ("\"90000\"", 90_000),
    ] {
        let t = tenant(&format!("{base}max_age: {value}\n"));
        assert_eq!(t.policy.max_age, seconds, "{value}");
        let body = String::from_utf8_lossy(&t.policy.body).into_owned();
        assert!(body.ends_with(&format!("max_age: {seconds}\r\n")), "{body}");
    }
    assert_eq!(
        one(&format!("{base}max_age: 500ms\n")),
        "tenants/t.yaml:4:10: error: max_age: \"500ms\" is not a whole number of seconds"
    );
    assert_eq!(
        one(&format!("{base}max_age: 1y\n")),
        "tenants/t.yaml:4:10: error: max_age: unknown duration unit \"y\" (use ms, s, m, h, d or w)"
    );
    assert_eq!(
        one(&format!("{base}max_age: 400d\n")),
        "tenants/t.yaml:4:10: error: max_age: 34560000 is above the RFC 8461 limit of 31557600 seconds"
    );
}

#[test]
fn a_single_mx_pattern_is_a_one_element_list() {
    let t = tenant("domain: example.com\nmode: enforce\nmx: MX.example.com\n");
    assert_eq!(t.policy.mx, vec!["mx.example.com"]);
    assert_eq!(
        one("domain: example.com\nmode: enforce\nmx: \"mx.*.example.com\"\n"),
        "tenants/t.yaml:3:5: error: mx[0]: \"mx.*.example.com\": a wildcard is allowed only as the whole left-most label (\"*.example.com\")"
    );
    assert_eq!(
        one("domain: example.com\nmode: enforce\nmx: {a: b}\n"),
        "tenants/t.yaml:3:5: error: mx: invalid type: map, expected a list of MX patterns (or one pattern)"
    );
}

#[test]
fn a_tab_in_the_indentation_is_reported_where_it_is() {
    assert_eq!(
        one("domain: example.com\n\tmode: testing\nmx: [mx.example.com]\n"),
        "tenants/t.yaml:2:1: error: mode: a tab in the indentation: YAML indents with spaces only"
    );
    assert_eq!(
        one("- domain: example.com\n  mode: testing\n \tmx: [mx.example.com]\n"),
        "tenants/t.yaml:3:2: error: mx: a tab in the indentation: YAML indents with spaces only"
    );
}

#[test]
fn a_policy_over_64_kib_is_an_error_naming_its_size() {
    let mut yaml = "domain: example.com\nmode: enforce\nmx:\n".to_owned();
    for i in 0..3000 {
        yaml.push_str(&format!("  - mx{i:04}.mail-exchangers.example.com\n"));
    }
    let file = parse_tenants(Path::new("tenants/t.yaml"), &yaml);
    assert!(file.tenants.is_empty(), "the tenant is not served");
    let all: Vec<String> = file.diagnostics.iter().map(Diagnostic::to_string).collect();
    assert_eq!(
        all,
        [
            "tenants/t.yaml:4:3: error: mx: the policy body would be 120048 bytes, over the 65536 bytes senders may refuse (RFC 8461 §3.3); use fewer or wildcard MX patterns"
        ]
    );
    // Exactly at the limit is fine: the body is what senders count.
    let fits = parse_tenants(
        Path::new("t.yaml"),
        &yaml.lines().take(3 + 1400).collect::<Vec<_>>().join("\n"),
    );
    assert!(
        fits.diagnostics.is_empty(),
        "{:?}",
        fits.diagnostics.first()
    );
}

#[test]
fn parser_messages_quote_only_a_short_excerpt_and_never_a_pem_block() {
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC\n-----END PRIVATE KEY-----\n";
    let got = one(pem);
    assert_eq!(
        got,
        "tenants/t.yaml:0:0: error: invalid type: string \"-----BEGIN … (PEM data not shown)\", expected a tenant (mapping) or a list of tenants"
    );
    let long = format!("{}\n", "s3cr3t".repeat(30));
    assert_eq!(
        one(&long),
        format!(
            "tenants/t.yaml:0:0: error: invalid type: string \"{}…\", expected a tenant (mapping) or a list of tenants",
            &"s3cr3t".repeat(7)[..40]
        )
    );
    let shadow = "root:$y$j9T$SALTSALTSALTSALT$HASHHASHHASHHASHHASHHASH:19000:0:99999:7:::\n";
    assert_eq!(
        one(shadow),
        "tenants/t.yaml:1:1: error: unknown field (not a key name; not shown), expected one of domain, mode, mx, max_age, tlsrpt, retire"
    );
}

#[test]
fn server_file_durations_take_days_and_weeks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mta-stsd.yaml"),
        "listen: \"127.0.0.1:0\"\nstate_dir: s\nissuer: internal\nlimits:\n  max_connection_age: 1d\n  idle_timeout: 1w\n",
    )
    .unwrap();
    let cfg = mta_stsd::config::load_server_config(dir.path()).unwrap_or_else(|d| panic!("{d:#?}"));
    assert_eq!(
        cfg.limits.max_connection_age,
        std::time::Duration::from_secs(86_400)
    );
    assert_eq!(
        cfg.limits.idle_timeout,
        std::time::Duration::from_secs(604_800)
    );
}

#[test]
fn retire_is_a_boolean_and_retire_max_age_a_duration() {
    assert!(tenant(&format!("{OK}retire: true\n")).retire);
    assert!(!tenant(OK).retire);
    assert_eq!(
        one(&format!("{OK}retire: maybe\n")),
        "tenants/t.yaml:5:9: error: retire: invalid boolean"
    );
    let dir = Path::new("/etc/mta-stsd");
    let base = "listen: \"127.0.0.1:0\"\nstate_dir: s\nissuer: internal\n";
    let parse = |extra: &str| mta_stsd::config::parse_server_config(dir, &format!("{base}{extra}"));
    assert_eq!(parse("").unwrap().retire_max_age, 86_400);
    assert_eq!(parse("retire_max_age: 2h\n").unwrap().retire_max_age, 7_200);
    let errors = parse("retire_max_age: soon\n").unwrap_err();
    assert!(
        errors[0]
            .to_string()
            .ends_with("4:17: error: retire_max_age: \"soon\" is not a duration (use e.g. \"10s\", \"500ms\", \"5m\", \"7d\")"),
        "{}",
        errors[0]
    );
}
