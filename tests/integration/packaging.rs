//! What an operator reaches for around the daemon, from the real binary: `--version` with the
//! commit, the same build values in `/api/v1/status` and `mta_stsd_build_info`, shell
//! completions, the man page, and `health` against a running daemon.

use std::process::Command;
use std::time::Duration;

use crate::common::{BASE_SERVER_YAML, ServeProcess, TestConfig, admin_get, binary};

/// Runs the binary with `args`; (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(binary()).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `git rev-parse --short HEAD` of the checkout, or "unknown" without Git (a tarball), as
/// build.rs falls back.
fn checkout_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

#[test]
fn version_names_the_cargo_version_and_the_commit() {
    let (code, out, err) = run(&["--version"]);
    assert_eq!(code, Some(0), "{err}");
    let line = out.trim_end();
    let rest = line
        .strip_prefix(&format!("mta-stsd {} (", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line:?}"));
    let label = rest.strip_suffix(')').unwrap_or_else(|| panic!("{line:?}"));
    let commit = label.strip_suffix("-dirty").unwrap_or(label);
    assert_eq!(commit, checkout_commit(), "{line:?}");
    assert_eq!(commit, mta_stsd::util::build::COMMIT);
    assert_eq!(label.ends_with("-dirty"), mta_stsd::util::build::DIRTY);
    // A subcommand's --version says the same.
    let (_, sub, _) = run(&["serve", "--version"]);
    assert!(sub.ends_with(&format!("{rest}\n")), "{sub:?}");
}

#[test]
fn completions_cover_every_subcommand_and_load_in_bash() {
    let (code, bash, err) = run(&["completions", "bash"]);
    assert_eq!(code, Some(0), "{err}");
    for sub in [
        "serve",
        "check",
        "dns",
        "ingest-mail",
        "reports",
        "certs",
        "health",
        "completions",
        "man",
    ] {
        assert!(bash.contains(sub), "no {sub} in\n{bash}");
    }
    // The real bash loads it and registers the completion function.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("mta-stsd.bash");
    std::fs::write(&script, &bash).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg("source \"$0\" && complete -p mta-stsd")
        .arg(&script)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && shown.contains("mta-stsd"),
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, zsh, _) = run(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef mta-stsd"), "{zsh}");
    let (_, fish, _) = run(&["completions", "fish"]);
    assert!(fish.contains("complete -c mta-stsd"), "{fish}");
    let (code, _, err) = run(&["completions", "tcsh"]);
    assert_eq!(code, Some(2), "an unknown shell is a usage error: {err}");
}

#[test]
fn man_page_is_roff_with_name_and_subcommands() {
    let (code, page, err) = run(&["man"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(page.contains(".TH mta-stsd 1"), "{page}");
    let name = page
        .split(".SH NAME\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no NAME section in\n{page}"));
    assert!(name.starts_with("mta\\-stsd \\- "), "{name}");
    for section in [".SH SYNOPSIS", ".SH SUBCOMMANDS", ".SH VERSION"] {
        assert!(page.contains(section), "no {section} in\n{page}");
    }
    assert!(page.contains(mta_stsd::util::build::COMMIT), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("man1");
    let (code, listed, err) = run(&["man", "--dir", target.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    for file in ["mta-stsd.1", "mta-stsd-serve.1", "mta-stsd-health.1"] {
        let path = target.join(file);
        assert!(listed.contains(&path.display().to_string()), "{listed}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(".SH NAME"), "{file}: {text}");
    }
}

/// Starts the real binary with an admin listener on an ephemeral port; its admin URL.
fn serve_with_admin(cfg: &TestConfig) -> (ServeProcess, String) {
    let mut starting = ServeProcess::spawn(None, cfg.path());
    let line = starting
        .wait_for(Duration::from_secs(60), |v| {
            v["message"] == "admin listener up"
        })
        .expect("admin listener up");
    let url = format!("http://{}", line["admin"].as_str().unwrap());
    (starting.serving(), url)
}

#[tokio::test]
async fn health_reports_a_running_daemon_and_fails_without_one() {
    let cfg = TestConfig::with_server(&format!(
        "{BASE_SERVER_YAML}admin:\n  listen: \"127.0.0.1:0\"\n"
    ));
    cfg.simple_tenant("example.com");
    let (daemon, url) = serve_with_admin(&cfg);
    let health = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args)
        })
    };
    let (code, out, err) = health(vec!["health".into(), "--admin".into(), url.clone()])
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("{url}/readyz: ready\n"));
    let live = vec!["health", "--admin", &url, "--probe", "live"];
    let (code, out, err) = health(live.into_iter().map(String::from).collect())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("{url}/healthz: ok\n"));

    // The build values are the same in the API, the metric and --version.
    let addr = url.trim_start_matches("http://").parse().unwrap();
    let status = admin_get(addr, "/api/v1/status").await.json();
    let (_, version, _) = run(&["--version"]);
    let label = format!(
        "{}{}",
        status["commit"].as_str().unwrap(),
        if status["dirty"] == true {
            "-dirty"
        } else {
            ""
        }
    );
    assert_eq!(
        version,
        format!(
            "mta-stsd {} ({label})\n",
            status["version"].as_str().unwrap()
        )
    );
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["commit"], checkout_commit());
    let metrics = admin_get(addr, "/metrics").await.body;
    let build = format!(
        "mta_stsd_build_info{{version=\"{}\",commit=\"{}\",dirty=\"{}\"}} 1",
        status["version"].as_str().unwrap(),
        status["commit"].as_str().unwrap(),
        status["dirty"]
    );
    assert!(metrics.contains(&build), "no {build} in\n{metrics}");

    // Nothing listening any more: a failure that says why.
    drop(daemon);
    let (code, out, err) = health(vec!["health".into(), "--admin".into(), url.clone()])
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert!(
        err.contains(&format!("health check of {url}/readyz failed"))
            && err.contains("Connection refused"),
        "{err}"
    );
}

#[tokio::test]
async fn health_gives_up_on_a_listener_that_never_answers() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    // Accepts and holds every connection without a byte of answer.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let args = ["health", "--admin", &url, "--timeout", "300ms"].map(String::from);
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args)
    })
    .await
    .unwrap();
    holder.abort();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no answer within 300ms"), "{err}");
}

/// The crates linked into the release binary for `target`, as `name vX.Y.Z: licence` (the
/// licence from each crate's Cargo.toml), without the package itself and without procedural
/// macros and what only they use (they run in the compiler only).
fn linked_crates(target: &str) -> Vec<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "-e", "normal,no-proc-macro", "--prefix", "none"])
        .arg("--locked")
        .args(["--format", "{p}|{l}", "--target", target, "--manifest-path"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("mta-stsd "))
        .map(|l| l.replace(" (*)", "").replacen('|', ": ", 1))
        .collect()
}

#[test]
fn notice_lists_every_crate_the_release_binary_links() {
    let notice =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("NOTICE"))
            .unwrap();
    let listed: std::collections::BTreeSet<&str> = notice
        .split_once("BEGIN CRATES\n")
        .and_then(|(_, rest)| rest.split_once("END CRATES"))
        .expect("NOTICE has a BEGIN CRATES … END CRATES block")
        .0
        .lines()
        .collect();
    // The targets deny.toml checks, which the Dockerfile builds for.
    let mut linked = std::collections::BTreeSet::new();
    for target in ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"] {
        linked.extend(linked_crates(target));
    }
    let linked: std::collections::BTreeSet<&str> = linked.iter().map(String::as_str).collect();
    assert!(linked.len() > 100, "{linked:?}");
    let missing: Vec<_> = linked.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&linked).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "NOTICE is out of date: add {missing:#?}, remove {stale:#?}"
    );
    // The C code compiled in is named with its licence.
    for bundled in [
        "AWS-LC",
        "SQLite",
        "public domain",
        "mimalloc",
        "MIT License",
    ] {
        assert!(
            notice.contains(bundled),
            "NOTICE does not mention {bundled}"
        );
    }
}
