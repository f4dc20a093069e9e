//! The deployment kit in `deploy/`: the systemd unit passes `systemd-analyze verify` and keeps
//! its sandbox; every server file shipped there passes the real `mta-stsd check`.
//!
//! The external tool comes from Debian (`systemd`). In CI (`CI` set) a missing tool fails the
//! test; elsewhere the test says so and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::binary;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A missing tool: a failure in CI, a note elsewhere.
fn missing(name: &str, install: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{name} is missing: {install}"
    );
    eprintln!("skipped: {name} is missing ({install})");
}

/// The path of `name` on PATH, if there.
fn tool(name: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        missing(name, install);
    }
    found
}

/// Runs `mta-stsd check` on a configuration directory; returns (success, output).
fn check(dir: &Path) -> (bool, String) {
    let out = Command::new(binary())
        .arg("check")
        .arg("--config")
        .arg(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------------------
// systemd

const UNIT: &str = "deploy/systemd/mta-stsd.service";
const UNIT_EXEC_START: &str = "ExecStart=/usr/local/bin/mta-stsd serve --config /etc/mta-stsd";

/// `systemd-analyze verify` on a copy of `unit` (ExecStart pointing at the test binary, which
/// verify requires to exist); returns the lines that concern the unit.
fn verify_unit(analyze: &Path, unit: &str) -> Vec<String> {
    assert_eq!(
        unit.matches(UNIT_EXEC_START).count(),
        1,
        "the unit starts mta-stsd from /usr/local/bin with /etc/mta-stsd"
    );
    let exec = format!(
        "ExecStart={} serve --config /etc/mta-stsd",
        binary().display()
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("mta-stsd.service");
    std::fs::write(&copy, unit.replace(UNIT_EXEC_START, &exec)).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.contains("mta-stsd"))
        .map(str::to_owned)
        .collect();
    if !out.status.success() {
        lines.push(format!(
            "systemd-analyze exited with {}: {text}",
            out.status
        ));
    }
    lines
}

#[test]
fn systemd_unit_passes_verify_without_warnings() {
    let Some(analyze) = tool("systemd-analyze", "apt-get install systemd") else {
        return;
    };
    let problems = verify_unit(&analyze, &read(UNIT));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn systemd_verify_reports_a_bad_key() {
    // The check above is only worth something if verify's warnings reach it.
    let Some(analyze) = tool("systemd-analyze", "apt-get install systemd") else {
        return;
    };
    let broken = read(UNIT).replace(
        "NoNewPrivileges=yes",
        "NoNewPrivileges=yes\nProtectSystems=strict",
    );
    let problems = verify_unit(&analyze, &broken);
    assert!(
        problems.iter().any(|l| l.contains("ProtectSystems")),
        "{problems:?}"
    );
}

#[test]
fn systemd_unit_keeps_its_sandbox() {
    let unit = read(UNIT);
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for wanted in [
        "User=mta-stsd",
        "DynamicUser=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "StateDirectory=mta-stsd",
        "ConfigurationDirectory=mta-stsd",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
        "SystemCallArchitectures=native",
    ] {
        assert!(lines.contains(&wanted), "{UNIT} lacks {wanted}");
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("User=root")),
        "{UNIT} must not run as root"
    );
}

#[test]
fn systemd_server_file_checks_clean_and_uses_the_unit_directories() {
    let server = read("deploy/systemd/mta-stsd.yaml");
    // StateDirectory=mta-stsd is /var/lib/mta-stsd, the only writable path in the sandbox.
    assert!(
        server
            .lines()
            .any(|l| l.trim() == "state_dir: /var/lib/mta-stsd"),
        "state_dir must be the unit's StateDirectory"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mta-stsd.yaml"), &server).unwrap();
    std::fs::create_dir(dir.path().join("tenants")).unwrap();
    for entry in std::fs::read_dir(repo().join("config/tenants")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            dir.path().join("tenants").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let (ok, out) = check(dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("0 error(s), 0 warning(s)"), "{out}");
}
