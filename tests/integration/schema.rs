//! The JSON Schemas under `schema/`: current with what the binary prints, and checked by a
//! real validator (Python `jsonschema`, Debian python3-jsonschema) against the example
//! configuration and against broken files.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{BASE_SERVER_YAML, TestConfig, run_binary};

/// Validates each YAML file against the JSON Schema in `schema` (draft 2020-12, the schema
/// itself checked first); returns each file's error messages, sorted, with the messages of
/// the branches of a failed `oneOf`/`anyOf` (a tenant file is a mapping or a list).
pub(crate) fn validate_yaml(schema: &Path, files: &[PathBuf]) -> Vec<(PathBuf, Vec<String>)> {
    const SCRIPT: &str = r#"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
def messages(e):
    yield e.message
    for c in e.context:
        yield from messages(c)
for f in sys.argv[2:]:
    doc = yaml.safe_load(open(f))
    print(json.dumps(sorted(m for e in v.iter_errors(doc) for m in messages(e))))
"#;
    // Debian's interpreter, where python3-jsonschema and python3-yaml install.
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(schema)
        .args(files)
        .output()
        .expect("run /usr/bin/python3 (needs python3-jsonschema and python3-yaml)");
    assert!(
        out.status.success(),
        "validator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Vec<String>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("validator output"))
        .collect();
    assert_eq!(lines.len(), files.len());
    files.iter().cloned().zip(lines).collect()
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn committed_schemas_are_what_the_binary_prints() {
    for kind in ["tenant", "server"] {
        let (code, out, err) = run_binary(&["schema".as_ref(), kind.as_ref()], b"");
        assert_eq!(code, 0, "mta-stsd schema {kind}: {err}");
        let file = format!("schema/{kind}.schema.json");
        let committed = std::fs::read_to_string(repo(&file)).unwrap();
        assert!(
            committed == out,
            "{file} is stale: run `mta-stsd schema {kind} > {file}` and commit it"
        );
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            value["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
    }
}

#[test]
fn example_configuration_matches_the_schemas() {
    let tenants: Vec<PathBuf> = std::fs::read_dir(repo("config/tenants"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert!(!tenants.is_empty());
    let mut results = validate_yaml(&repo("schema/tenant.schema.json"), &tenants);
    results.extend(validate_yaml(
        &repo("schema/server.schema.json"),
        &[repo("config/mta-stsd.yaml")],
    ));
    for (file, errors) in results {
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }
}

#[test]
fn broken_tenant_files_fail_the_schema() {
    let cfg = TestConfig::new();
    let good = cfg.tenant(
        "good.yaml",
        "# yaml-language-server: $schema=../../schema/tenant.schema.json\n\
         - domain: a.example\n  mode: enforce\n  mx: mail.a.example\n  max_age: 1w\n\
         - domain: b.example\n  mode: none\n  max_age: 86400\n  tlsrpt:\n    rua: [\"mailto:r@b.example\"]\n",
    );
    let cases = [
        (
            "wrong mode",
            "domain: a.example\nmode: enforcing\nmx: [mail.a.example]\n",
            "enforcing",
        ),
        (
            "unknown key",
            "domain: a.example\nmode: testing\nmaxage: 86400\n",
            "maxage",
        ),
        (
            "no mode",
            "domain: a.example\nmx: [mail.a.example]\n",
            "'mode' is a required",
        ),
        (
            "bad max_age",
            "domain: a.example\nmode: testing\nmax_age: 1 year\n",
            "1 year",
        ),
        (
            "bad in a list",
            "- domain: a.example\n  mode: testing\n- domain: b.example\n  mode: testing\n  tlsrpt: {rua: [x], ruf: [y]}\n",
            "ruf",
        ),
    ];
    let mut files = vec![good.clone()];
    for (i, (_, yaml, _)) in cases.iter().enumerate() {
        files.push(cfg.tenant(&format!("bad{i}.yaml"), yaml));
    }
    let results = validate_yaml(&repo("schema/tenant.schema.json"), &files);
    assert_eq!(results[0].1, Vec::<String>::new(), "valid file refused");
    for ((name, _, needle), (file, errors)) in cases.iter().zip(&results[1..]) {
        assert!(!errors.is_empty(), "{name}: {} passed", file.display());
        let all = errors.join("\n");
        assert!(all.contains(needle), "{name}: {all}");
    }
    // The daemon agrees: the valid file is clean for `check`, a broken one is an error.
    let (code, out, err) = run_binary(
        &[
            "check".as_ref(),
            "--config".as_ref(),
            cfg.path().as_os_str(),
        ],
        b"",
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(!format!("{out}{err}").contains("good.yaml"), "{out}{err}");
}

#[test]
fn broken_server_file_fails_the_schema() {
    let cfg = TestConfig::with_server(&format!(
        "{BASE_SERVER_YAML}limits:\n  max_conections: 10\nvalidation:\n  interval: soon\n"
    ));
    let files = [cfg.path().join("mta-stsd.yaml")];
    let results = validate_yaml(&repo("schema/server.schema.json"), &files);
    let all = results[0].1.join("\n");
    assert!(all.contains("max_conections"), "{all}");
    assert!(all.contains("soon"), "{all}");
    let ok = TestConfig::new();
    let results = validate_yaml(
        &repo("schema/server.schema.json"),
        &[ok.path().join("mta-stsd.yaml")],
    );
    assert!(results[0].1.is_empty(), "{:?}", results[0].1);
}
