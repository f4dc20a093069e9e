//! The monitoring kit in `deploy/`: the Prometheus alert rules pass `promtool check rules` and
//! their unit tests, the Grafana dashboard's queries parse, and every metric name the alerts and
//! the dashboard use is one the daemon really exports (checked against a live `/metrics`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use http::StatusCode;

use crate::common::{BASE_SERVER_YAML, TestConfig, admin_get, gzip, report_json, start};

const ALERTS: &str = "deploy/prometheus/alerts.yaml";
const ALERT_TESTS: &str = "deploy/prometheus/alerts_test.yaml";
const DASHBOARD: &str = "deploy/grafana/mta-stsd.json";

/// Prefix of every metric the daemon exports.
const PREFIX: &str = "mta_stsd_";

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `promtool args`; returns (success, stdout + stderr).
fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}); CI installs it with apt-get install prometheus")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// --- The files in deploy/ ---------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(serde::Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(serde::Deserialize)]
struct Rule {
    alert: Option<String>,
    expr: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

fn alert_rules() -> Vec<Rule> {
    let text = std::fs::read_to_string(repo_path(ALERTS)).expect("alerts.yaml");
    let file: RuleFile = serde_saphyr::from_str(&text).expect("alerts.yaml parses");
    file.groups.into_iter().flat_map(|g| g.rules).collect()
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(repo_path(DASHBOARD)).expect("dashboard JSON");
    serde_json::from_str(&text).expect("dashboard is JSON")
}

/// Every panel, nested ones (collapsed rows) included.
fn panels(dash: &serde_json::Value) -> Vec<&serde_json::Value> {
    fn walk<'a>(list: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// Every PromQL expression of the dashboard: panel targets and template variable queries,
/// with (title, expression).
fn dashboard_exprs(dash: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("every target has an expr");
            out.push((
                p["title"].as_str().unwrap_or("?").to_owned(),
                expr.to_owned(),
            ));
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .expect("query variable has a query");
            out.push((format!("variable {}", v["name"]), q.to_owned()));
        }
    }
    out
}

/// Every PromQL expression that must only name exported metrics: (where, expression).
fn all_exprs() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = alert_rules()
        .into_iter()
        .map(|r| (format!("alert {}", r.alert.unwrap_or_default()), r.expr))
        .collect();
    out.extend(
        dashboard_exprs(&dashboard())
            .into_iter()
            .map(|(w, e)| (format!("dashboard panel {w}"), e)),
    );
    out
}

// --- The checker --------------------------------------------------------------------------------

/// The metric names (identifiers starting with `mta_stsd_`) a PromQL expression selects. String
/// literals, comments, label names inside `{…}` and the label lists of `by`, `without`, `on`,
/// `ignoring`, `group_left` and `group_right` are not metric names; `{__name__="…"}` is.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut braces = 0usize;
    // Paren depth at which a label list opened, while inside one.
    let mut label_list: Option<usize> = None;
    let mut parens = 0usize;
    let mut last_ident = String::new();
    // Inside braces: the last label name and operator, to catch `__name__="…"`.
    let mut matcher_label = String::new();
    let mut matcher_op = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && c != '`' && i + 1 < chars.len() {
                    i += 1;
                }
                s.push(chars[i]);
                i += 1;
            }
            i += 1;
            if braces > 0
                && matcher_label == "__name__"
                && matcher_op == "="
                && s.starts_with(PREFIX)
            {
                names.insert(s);
            }
            last_ident.clear();
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            // Numbers and durations (5m, 1e3, 0x1f): never a name.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || ".+-_".contains(chars[i]))
            {
                let sign = chars[i] == '+' || chars[i] == '-';
                if sign && !matches!(chars[i - 1], 'e' | 'E') {
                    break;
                }
                i += 1;
            }
            last_ident.clear();
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            if braces > 0 {
                matcher_label = ident.clone();
                matcher_op.clear();
            } else if label_list.is_none() && ident.starts_with(PREFIX) {
                names.insert(ident.clone());
            }
            last_ident = ident;
            continue;
        }
        match c {
            '{' => {
                braces += 1;
                matcher_label.clear();
            }
            '}' => braces = braces.saturating_sub(1),
            '(' => {
                if braces == 0 && label_list.is_none() && LABEL_LISTS.contains(&last_ident.as_str())
                {
                    label_list = Some(parens);
                }
                parens += 1;
            }
            ')' => {
                parens = parens.saturating_sub(1);
                if label_list == Some(parens) {
                    label_list = None;
                }
            }
            '=' | '!' | '~' if braces > 0 => matcher_op.push(c),
            ',' if braces > 0 => {
                matcher_label.clear();
                matcher_op.clear();
            }
            _ => {}
        }
        if !c.is_whitespace() {
            last_ident.clear();
        }
        i += 1;
    }
    names
}

/// The series names a scrape can produce, from the `# TYPE` lines of an OpenMetrics exposition
/// (where a counter family is named without `_total`) and from its sample lines: a counter
/// family `x` gives `x_total` (and `x_created`), a histogram `x_bucket`, `x_sum`, `x_count` (and
/// `x_created`), a summary `x`, `x_sum`, `x_count`, an info `x_info`, a gauge or unknown `x`.
/// The bare name of a counter or histogram family is not a series name: PromQL cannot select it.
fn exported_series(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" | "gaugehistogram" => {
                    &["_bucket", "_sum", "_count", "_created", "_gcount", "_gsum"]
                }
                "summary" => &["", "_sum", "_count", "_created"],
                "info" => &["_info"],
                "stateset" | "gauge" | "unknown" | "untyped" => &[""],
                other => panic!("unknown metric type {other:?} in {line:?}"),
            };
            names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The names `exprs` reference that `exported` lacks, each with where it is used.
fn unexported(exprs: &[(String, String)], exported: &BTreeSet<String>) -> Vec<String> {
    let mut missing = Vec::new();
    for (place, expr) in exprs {
        for name in metric_names(expr) {
            let entry = format!("{name} (in {place})");
            if !exported.contains(&name) && !missing.contains(&entry) {
                missing.push(entry);
            }
        }
    }
    missing
}

#[test]
fn checker_finds_metric_names_in_promql() {
    let got = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        got(
            r#"sum by (class) (rate(mta_stsd_requests_total{domain=~"mta_stsd_not_a_name", instance=~"$instance"}[$__rate_interval]))"#
        ),
        ["mta_stsd_requests_total"]
    );
    assert_eq!(
        got(
            "histogram_quantile(0.99, sum by (le) (rate(mta_stsd_request_duration_seconds_bucket[5m])))"
        ),
        ["mta_stsd_request_duration_seconds_bucket"]
    );
    // Both sides of a join; labels in on()/ignoring() and matchers are not names.
    assert_eq!(
        got(
            "(a_mta_stsd_x + mta_stsd_a > 14 * 86400) and on (mta_stsd_label) ignoring(mta_stsd_l2) group_left(mta_stsd_l3) mta_stsd_b{mta_stsd_label!=\"\"}\n# mta_stsd_comment\n"
        ),
        ["mta_stsd_a", "mta_stsd_b"]
    );
    assert_eq!(
        got(r#"count({__name__="mta_stsd_by_name", job="x"}) + mta_stsd_c offset 1h"#),
        ["mta_stsd_by_name", "mta_stsd_c"]
    );
    assert_eq!(
        got("label_values(mta_stsd_policy_info{instance=~\"$instance\"}, domain)"),
        ["mta_stsd_policy_info"]
    );
    assert!(got("1e3 + 0x1f - 5m").is_empty());
}

#[test]
fn checker_knows_the_suffixes_and_catches_wrong_names() {
    let scrape = "# HELP mta_stsd_orders Orders.\n# TYPE mta_stsd_orders counter\nmta_stsd_orders_total{result=\"success\"} 1\n\
                  # HELP mta_stsd_d Duration.\n# TYPE mta_stsd_d histogram\nmta_stsd_d_bucket{le=\"+Inf\"} 0\nmta_stsd_d_sum 0\nmta_stsd_d_count 0\n\
                  # HELP mta_stsd_g G.\n# TYPE mta_stsd_g gauge\nmta_stsd_g 3\n# EOF\n";
    let exported = exported_series(scrape);
    let exprs = |e: &[&str]| -> Vec<(String, String)> {
        e.iter()
            .map(|e| ("test".to_owned(), (*e).to_owned()))
            .collect()
    };
    let ok = exprs(&[
        "rate(mta_stsd_orders_total[5m])",
        "histogram_quantile(0.5, rate(mta_stsd_d_bucket[5m])) + mta_stsd_d_sum / mta_stsd_d_count",
        "mta_stsd_g > 1",
    ]);
    assert_eq!(unexported(&ok, &exported), Vec::<String>::new());
    let wrong = exprs(&[
        // A counter without _total, a histogram's bare name, a gauge with a counter suffix,
        // and a typo.
        "rate(mta_stsd_orders[5m])",
        "mta_stsd_d",
        "mta_stsd_g_total",
        "mta_stsd_orderz_total",
    ]);
    assert_eq!(
        unexported(&wrong, &exported),
        [
            "mta_stsd_orders (in test)",
            "mta_stsd_d (in test)",
            "mta_stsd_g_total (in test)",
            "mta_stsd_orderz_total (in test)",
        ]
    );
}

// --- The tests of deploy/ -----------------------------------------------------------------------

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", ALERTS]);
    assert!(ok, "promtool check rules {ALERTS} failed:\n{out}");
    let (ok, out) = promtool(&["test", "rules", ALERT_TESTS]);
    assert!(ok, "promtool test rules {ALERT_TESTS} failed:\n{out}");
}

#[test]
fn every_alert_has_severity_summary_description_and_a_unit_test() {
    let tests = std::fs::read_to_string(repo_path(ALERT_TESTS)).unwrap();
    let rules = alert_rules();
    assert!(rules.len() >= 5, "{} alerts", rules.len());
    for r in &rules {
        let name = r
            .alert
            .as_deref()
            .expect("only alerting rules in alerts.yaml");
        let severity = r.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("critical" | "warning" | "info")),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description"] {
            assert!(
                r.annotations.get(key).is_some_and(|a| !a.trim().is_empty()),
                "{name}: no {key}"
            );
        }
        if r.expr.contains("domain") {
            assert!(
                r.annotations["summary"].contains("$labels.domain"),
                "{name}: a per-tenant alert names the domain in its summary"
            );
        }
        // One case where it fires (exp_alerts with labels), one where it must not (exp_alerts: []).
        let cases: Vec<&str> = tests
            .split("- alertname: ")
            .skip(1)
            .filter(|c| c.starts_with(&format!("{name}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_labels:")),
            "{name}: no unit test where it fires"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{name}: no unit test where it must not fire"
        );
    }
}

#[test]
fn dashboard_is_well_formed_and_its_queries_parse() {
    let dash = dashboard();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    let vars = dash["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let domain = var("domain")["query"]["query"].as_str().unwrap();
    assert!(
        domain.starts_with("label_values(mta_stsd_policy_info") && domain.ends_with(", domain)"),
        "{domain}"
    );
    let mut ids = BTreeSet::new();
    for p in panels(&dash) {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap();
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }

    // Every query, with Grafana's variables replaced, must be valid PromQL: promtool parses it
    // as the expression of a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in dashboard_exprs(&dash).iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$__range", "1h")
            .replace("$instance", ".*")
            .replace("$domain", ".*");
        let expr = if expr.starts_with("label_values(") {
            // Grafana's own function: the selector inside is the PromQL.
            let inner = &expr["label_values(".len()..expr.rfind(',').unwrap()];
            inner.to_owned()
        } else {
            expr
        };
        assert!(!expr.contains('$'), "unreplaced variable in {expr}");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-queries.yaml");
    std::fs::write(&path, &rules).unwrap();
    let (ok, out) = promtool(&["check", "rules", path.to_str().unwrap()]);
    assert!(ok, "a dashboard query is not valid PromQL:\n{out}\n{rules}");
}

/// Two real daemons, so every family has samples: one with the internal CA (tenants in enforce
/// and testing with certificates, requests and a refused handshake, a broken tenant file, a
/// TLS-RPT report with failures received over HTTPS), and one with the ACME issuer that gets its
/// certificate from Pebble (ACME order counters: a family with no samples is not exported).
#[tokio::test]
async fn alerts_and_dashboard_only_use_exported_metrics() {
    let acme_scrape = {
        let setup = crate::acme::Setup::new(&["acme.test"], "", false).await;
        let running = setup.start().await;
        assert!(
            crate::acme::all_valid(&running, &["acme.test"], std::time::Duration::from_secs(60))
                .await,
            "no certificate from Pebble: {:?}\n{}",
            running.board.all(),
            setup.pebble.log_text()
        );
        let scrape = admin_get(running.admin_addr, "/metrics").await;
        assert_eq!(scrape.status, StatusCode::OK);
        running.stop().await;
        scrape.body
    };

    const REPORT_HOST: &str = "tlsrpt.operator.example";
    let cfg = TestConfig::with_server(&format!(
        "{BASE_SERVER_YAML}tlsrpt:\n  report_host: {REPORT_HOST}\n"
    ));
    cfg.tenant(
        "example.net.yaml",
        "domain: example.net\nmode: enforce\nmx: [mx.example.net]\nmax_age: 604800\n",
    );
    cfg.simple_tenant("example.com");
    cfg.tenant("broken.yaml", "domain: [\n");
    let running = start(&cfg).await;
    let client = running.client();
    client.get_policy("mta-sts.example.net").await.unwrap();
    assert!(
        client
            .handshake("mta-sts.unknown.example", &[b"http/1.1"])
            .await
            .is_err()
    );
    let yesterday = time::OffsetDateTime::now_utc()
        .date()
        .previous_day()
        .unwrap();
    let report = report_json(
        "Sender Org",
        "obs-1",
        "example.net",
        yesterday,
        980,
        &[("certificate-expired", "mx.example.net", 20)],
    );
    let got = client
        .post_report(
            REPORT_HOST,
            "example.net",
            "application/tlsrpt+gzip",
            gzip(&report),
        )
        .await
        .unwrap();
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);

    let scrape = admin_get(running.admin_addr, "/metrics").await;
    assert_eq!(scrape.status, StatusCode::OK);
    let body = &scrape.body;
    // The families the per-tenant panels and alerts need have samples, not only a # TYPE line.
    for sample in [
        "mta_stsd_certificate_expiry_timestamp_seconds{domain=\"example.net\"} ",
        "mta_stsd_certificate_state{domain=\"example.net\",state=\"valid\"} 1",
        "mta_stsd_tenant_ready{domain=\"example.net\"} 1",
        "mta_stsd_policy_info{domain=\"example.net\",mode=\"enforce\",",
        "mta_stsd_config_errors{file=",
        "mta_stsd_tlsrpt_reports_received_total{source=\"https\",outcome=\"stored\"} 1",
        "mta_stsd_tlsrpt_sessions{domain=\"example.net\",result=\"failure\"} 20",
        "mta_stsd_tlsrpt_failures{domain=\"example.net\",result_type=\"certificate-expired\"} 20",
        "mta_stsd_tlsrpt_window_seconds ",
    ] {
        assert!(
            body.contains(sample),
            "no {sample:?} in the scrape:\n{body}"
        );
    }
    let order = "mta_stsd_acme_orders_total{result=\"success\"} 1";
    assert!(
        acme_scrape.contains(order),
        "no {order:?} in the ACME daemon's scrape:\n{acme_scrape}"
    );
    let mut exported = exported_series(body);
    exported.extend(exported_series(&acme_scrape));

    let exprs = all_exprs();
    let referenced: BTreeSet<String> = exprs.iter().flat_map(|(_, e)| metric_names(e)).collect();
    // The extraction sees the alerts' and the dashboard's metrics (an empty set would pass).
    for name in [
        "mta_stsd_certificate_expiry_timestamp_seconds",
        "mta_stsd_tlsrpt_sessions",
        "mta_stsd_request_duration_seconds_bucket",
        "mta_stsd_acme_orders_total",
    ] {
        assert!(
            referenced.contains(name),
            "{name} not found in any expression"
        );
    }
    let missing = unexported(&exprs, &exported);
    assert!(
        missing.is_empty(),
        "metrics used by {ALERTS} or {DASHBOARD} but not exported by the daemon:\n  {}\n\nexported series names:\n  {}",
        missing.join("\n  "),
        exported.iter().cloned().collect::<Vec<_>>().join("\n  ")
    );

    // The same check against the same scrape catches a wrong name.
    let wrong = vec![
        (
            "deliberate".to_owned(),
            "rate(mta_stsd_requests[5m])".to_owned(),
        ),
        (
            "deliberate".to_owned(),
            "mta_stsd_request_duration_seconds".to_owned(),
        ),
        (
            "deliberate".to_owned(),
            "mta_stsd_tenant_readyy == 0".to_owned(),
        ),
    ];
    assert_eq!(unexported(&wrong, &exported).len(), 3);
    running.stop().await;
}
