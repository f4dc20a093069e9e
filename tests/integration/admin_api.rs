//! `docs/admin-api.yaml` against the real binary: every documented operation is called, and
//! every answer's status, media type and body must be what the document says (bodies checked
//! by Python `jsonschema` against the document's schemas).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::common::{AdminResponse, ServeProcess, TestConfig, admin_request, eventually};

const TOKEN: &str = "s3cret-admin-token";

/// One exchange: the documented path template, the method, what came back.
struct Case {
    template: &'static str,
    method: Method,
    path: String,
    response: AdminResponse,
}

fn config() -> TestConfig {
    let cfg = TestConfig::new();
    let token = cfg.path().join("admin.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        cfg.path().join("mta-stsd.yaml"),
        format!(
            "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: internal\nadmin:\n  listen: \"127.0.0.1:0\"\n  token_file: {}\ntlsrpt:\n  report_host: reports.operator.test\n",
            token.display()
        ),
    )
    .unwrap();
    cfg.tenant(
        "example.com.yaml",
        "domain: example.com\nmode: testing\nmx: [mail.example.com]\nmax_age: 86400\ntlsrpt:\n  rua: [\"mailto:r@example.com\"]\n",
    );
    cfg.tenant(
        "old.yaml",
        "domain: old.example\nmode: testing\nmx: [mail.old.example]\nretire: true\n",
    );
    cfg.tenant("broken.yaml", "domain: broken.example\nmode: sometimes\n");
    cfg
}

async fn call(addr: SocketAddr, method: Method, path: &str, auth: bool) -> AdminResponse {
    let bearer = format!("Bearer {TOKEN}");
    let headers: Vec<(&str, &str)> = if auth {
        vec![("authorization", bearer.as_str())]
    } else {
        vec![]
    };
    admin_request(addr, method, path, &headers).await
}

/// Every documented operation, with its success and its documented errors.
async fn exercise(addr: SocketAddr) -> Vec<Case> {
    let plan: &[(&'static str, Method, &str, bool)] = &[
        ("/healthz", Method::GET, "/healthz", false),
        ("/readyz", Method::GET, "/readyz", false),
        ("/metrics", Method::GET, "/metrics", true),
        ("/metrics", Method::GET, "/metrics", false),
        ("/metrics", Method::PUT, "/metrics", true),
        ("/reload", Method::POST, "/reload", true),
        ("/reload", Method::GET, "/reload", true),
        ("/api/v1/status", Method::GET, "/api/v1/status", true),
        ("/api/v1/status", Method::POST, "/api/v1/status", true),
        ("/api/v1/tenants", Method::GET, "/api/v1/tenants", true),
        (
            "/api/v1/tenants",
            Method::GET,
            "/api/v1/tenants?limit=1&mode=testing",
            true,
        ),
        (
            "/api/v1/tenants",
            Method::GET,
            "/api/v1/tenants?limit=zero",
            true,
        ),
        (
            "/api/v1/tenants/{domain}",
            Method::GET,
            "/api/v1/tenants/Example.COM.",
            true,
        ),
        (
            "/api/v1/tenants/{domain}",
            Method::GET,
            "/api/v1/tenants/old.example",
            true,
        ),
        (
            "/api/v1/tenants/{domain}",
            Method::GET,
            "/api/v1/tenants/nope.example",
            true,
        ),
        (
            "/api/v1/tenants/{domain}",
            Method::DELETE,
            "/api/v1/tenants/example.com",
            true,
        ),
        (
            "/api/v1/tenants/{domain}/tlsrpt",
            Method::GET,
            "/api/v1/tenants/example.com/tlsrpt",
            true,
        ),
        (
            "/api/v1/tenants/{domain}/tlsrpt",
            Method::GET,
            "/api/v1/tenants/example.com/tlsrpt?since=2w",
            true,
        ),
        (
            "/api/v1/tenants/{domain}/tlsrpt",
            Method::GET,
            "/api/v1/tenants/example.com/tlsrpt?since=soon",
            true,
        ),
        (
            "/api/v1/tenants/{domain}/tlsrpt",
            Method::GET,
            "/api/v1/tenants/nope.example/tlsrpt",
            true,
        ),
        (
            "/api/v1/tenants/{domain}/forget",
            Method::POST,
            "/api/v1/tenants/example.com/forget",
            true,
        ),
        (
            "/api/v1/tenants/{domain}/forget",
            Method::POST,
            "/api/v1/tenants/old.example/forget",
            true,
        ),
        // Retired now: the detail is the records to remove.
        (
            "/api/v1/tenants/{domain}",
            Method::GET,
            "/api/v1/tenants/old.example",
            true,
        ),
        (
            "/api/v1/tenants/{domain}/forget",
            Method::POST,
            "/api/v1/tenants/nope.example/forget",
            true,
        ),
    ];
    let mut cases = Vec::new();
    for (template, method, path, auth) in plan {
        let response = call(addr, method.clone(), path, *auth).await;
        cases.push(Case {
            template,
            method: method.clone(),
            path: (*path).to_owned(),
            response,
        });
    }
    cases
}

/// Checks each case against the document; returns the validator's complaints (one per line).
fn check_against_document(cases: &[Case]) -> String {
    const SCRIPT: &str = r##"
import json, sys, yaml, jsonschema
spec = yaml.safe_load(open(sys.argv[1]))
cases = json.load(sys.stdin)
assert spec["openapi"].startswith("3.1"), spec["openapi"]
for name, s in spec["components"]["schemas"].items():
    jsonschema.Draft202012Validator.check_schema(s)
def deref(obj):
    while "$ref" in obj:
        kind, name = obj["$ref"].split("/")[-2:]
        obj = spec["components"][kind][name]
    return obj
def messages(e):
    yield e.message
    for c in e.context:
        yield from messages(c)
done = set()
for c in cases:
    where = f'{c["method"]} {c["path"]} -> {c["status"]}'
    op = spec["paths"].get(c["template"], {}).get(c["method"].lower())
    if op is None and c["status"] == 405:
        # A method the path does not have: the document's MethodNotAllowed answer.
        op = {"responses": {"405": {"$ref": "#/components/responses/MethodNotAllowed"}}}
    elif op is None:
        print(f"{where}: operation not documented"); continue
    else:
        done.add((c["template"], c["method"].lower()))
    resp = op["responses"].get(str(c["status"]))
    if resp is None:
        print(f"{where}: status not documented"); continue
    resp = deref(resp)
    media = c["content_type"].split(";")[0].strip()
    content = resp.get("content", {}).get(media)
    if content is None:
        print(f"{where}: media type {media!r} not documented"); continue
    body = json.loads(c["body"]) if media == "application/json" else c["body"]
    schema = dict(content["schema"], components=spec["components"])
    v = jsonschema.Draft202012Validator(schema)
    for e in v.iter_errors(body):
        print(f"{where}: at {list(e.absolute_path)}: " + " | ".join(messages(e)))
for path, item in spec["paths"].items():
    for method in item:
        if method != "parameters" and (path, method) not in done:
            print(f"{method.upper()} {path}: documented but not exercised")
"##;
    let cases: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            serde_json::json!({
                "template": c.template,
                "method": c.method.as_str(),
                "path": c.path,
                "status": c.response.status.as_u16(),
                "content_type": c.response.headers.get("content-type").map_or("", |v| v.to_str().unwrap()),
                "body": c.response.body,
            })
        })
        .collect();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/admin-api.yaml");
    let mut child = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&spec)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3 (needs python3-jsonschema and python3-yaml)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(serde_json::to_string(&cases).unwrap().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "validator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn every_documented_operation_answers_as_documented() {
    let cfg = config();
    let daemon = ServeProcess::start(cfg.path());
    let addr = daemon.admin_addr();
    assert!(
        eventually(Duration::from_secs(30), || async {
            call(addr, Method::GET, "/readyz", false).await.status == StatusCode::OK
        })
        .await
    );
    let cases = exercise(addr).await;
    let statuses: Vec<(&str, u16)> = cases
        .iter()
        .map(|c| (c.template, c.response.status.as_u16()))
        .collect();
    // The plan really reaches the answers it is meant to (else the check proves little).
    for expected in [
        ("/metrics", 401),
        ("/metrics", 405),
        ("/reload", 422),
        ("/api/v1/tenants", 400),
        ("/api/v1/tenants/{domain}", 404),
        ("/api/v1/tenants/{domain}", 405),
        ("/api/v1/tenants/{domain}/tlsrpt", 400),
        ("/api/v1/tenants/{domain}/forget", 409),
        ("/api/v1/tenants/{domain}/forget", 200),
    ] {
        assert!(
            statuses.contains(&expected),
            "{expected:?} not in {statuses:?}"
        );
    }
    let retired = &cases[22].response;
    assert_eq!(retired.json()["state"], "retired", "{}", retired.body);
    let complaints = check_against_document(&cases);
    assert!(
        complaints.is_empty(),
        "docs/admin-api.yaml disagrees with the daemon:\n{complaints}"
    );
    // An unknown path is a JSON error too, as the document says for every path.
    let unknown = call(addr, Method::GET, "/nope", true).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.json()["error"].is_string());
}

#[test]
fn the_document_names_every_route_of_the_admin_router() {
    let router =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/admin/mod.rs"))
            .unwrap();
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/admin-api.yaml"))
            .unwrap();
    for route in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/reload",
        "/api/v1/status",
        "/api/v1/tenants",
    ] {
        assert!(
            router.contains(&format!("\"{route}\"")),
            "router lost {route}"
        );
        assert!(
            spec.contains(&format!("\n  {route}:\n")),
            "{route} not documented"
        );
    }
    for suffix in ["/tlsrpt", "/forget"] {
        assert!(
            router.contains(&format!("\"{suffix}\"")),
            "router lost {suffix}"
        );
        let documented = format!("\n  /api/v1/tenants/{{domain}}{suffix}:\n");
        assert!(spec.contains(&documented), "{suffix} not documented");
    }
}
