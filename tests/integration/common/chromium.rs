//! Headless Chromium (Debian's `chromium`) as the tests' browser: the DOM after scripts ran
//! (`--dump-dom`), screenshots, and the net log of every URL the browser asked for.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The browser binary.
pub fn chromium_binary() -> PathBuf {
    PathBuf::from(std::env::var_os("CHROMIUM").unwrap_or_else(|| "chromium".into()))
}

/// What one page load gave.
pub struct Loaded {
    /// The serialized DOM (`--dump-dom`), or empty for a screenshot.
    pub dom: String,
    /// Every URL the page had the browser request (see [`urls_in`]).
    pub requested: Vec<String>,
}

/// Runs Chromium once on `url` with `action` (`--dump-dom` or `--screenshot=…`).
fn run(url: &str, action: &[String]) -> Loaded {
    let profile = tempfile::tempdir().unwrap();
    let net_log = profile.path().join("net-log.json");
    // As root Chromium needs --no-sandbox; the background-networking flags keep it from
    // calling Google's services at start. Autofill would send a digest of every page with a
    // form (the tenant filters) to Google under the page's own network key: it is the
    // browser's doing, not the page's, and is turned off so the net log shows the page alone.
    let out = Command::new(chromium_binary())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--disable-features=AutofillServerCommunication,NetworkTimeServiceQuerying",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--log-net-log={}", net_log.display()))
        .args(action)
        .arg(url)
        .output()
        .expect("run chromium (Debian package chromium)");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(&net_log).unwrap_or_default();
    Loaded {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        requested: urls_in(&log),
    }
}

/// The DOM of `url` once loaded and its scripts ran.
pub fn dump_dom(url: &str) -> Loaded {
    run(url, &["--dump-dom".into()])
}

/// A PNG of `url` at `width`×`height` into `file`.
pub fn screenshot(url: &str, file: &Path, width: u32, height: u32) -> Loaded {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    run(
        url,
        &[
            format!("--screenshot={}", file.display()),
            format!("--window-size={width},{height}"),
        ],
    )
}

/// The URLs a page asked for: every request job in the net log whose network isolation key
/// is the page's own site (`http://127.0.0.1 …`). The browser's own background requests (its
/// clock, Google accounts) carry Google's key and are not the page's doing.
fn urls_in(log: &str) -> Vec<String> {
    // A log cut short at exit lacks its closing brackets.
    let parsed: serde_json::Value = serde_json::from_str(log)
        .or_else(|_| serde_json::from_str(&format!("{}]}}", log.trim_end().trim_end_matches(','))))
        .unwrap_or_default();
    let start_job = parsed["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_i64();
    let mut out: Vec<String> = parsed["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"].as_i64() == start_job && start_job.is_some())
        .filter(|e| {
            e["params"]["network_isolation_key"]
                .as_str()
                .is_some_and(|k| k.starts_with("http://127.0.0.1 "))
        })
        .filter_map(|e| e["params"]["url"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out.dedup();
    out
}
