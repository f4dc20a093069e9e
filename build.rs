//! Embeds the commit the binary is built from and whether the work tree had uncommitted
//! changes, for `--version`, `mta_stsd_build_info` and `/api/v1/status`:
//! - `MTA_STSD_COMMIT` if set (a container build passes it as a build argument; a trailing
//!   `-dirty`, as `git describe --dirty` writes it, sets the dirty flag), with `MTA_STSD_DIRTY`
//!   (`true`/`1`) as the other way to say so;
//! - else `git rev-parse --short HEAD` and `git status` when the crate is its own Git checkout;
//! - else "unknown", not dirty (a source tarball, the Dockerfile's copy without `.git`).
//!
//! Sets `MTA_STSD_COMMIT`, `MTA_STSD_DIRTY` (`true`/`false`) and `MTA_STSD_LONG_VERSION`
//! (`0.1.0 (1a2b3c4-dirty)`) for the crate's code (`src/util/build.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MTA_STSD_COMMIT");
    println!("cargo:rerun-if-env-changed=MTA_STSD_DIRTY");
    println!("cargo:rerun-if-changed=build.rs");
    let from_env = std::env::var("MTA_STSD_COMMIT")
        .ok()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    let dirty_env = std::env::var("MTA_STSD_DIRTY")
        .is_ok_and(|d| matches!(d.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    let (commit, dirty) = match from_env {
        Some(commit) => match commit.strip_suffix("-dirty") {
            Some(clean) => (clean.to_owned(), true),
            None => (commit, dirty_env),
        },
        None if own_checkout() => {
            watch_tree();
            match git(&["rev-parse", "--short", "HEAD"]) {
                Some(commit) => (commit, tree_dirty()),
                None => ("unknown".into(), false),
            }
        }
        None => ("unknown".into(), false),
    };
    println!("cargo:rustc-env=MTA_STSD_COMMIT={commit}");
    println!("cargo:rustc-env=MTA_STSD_DIRTY={dirty}");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let suffix = if dirty { "-dirty" } else { "" };
    println!("cargo:rustc-env=MTA_STSD_LONG_VERSION={version} ({commit}{suffix})");
}

/// The output of `git args` in the crate directory, when it succeeds and says something.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Whether a tracked file differs from HEAD (untracked files do not count: scratch files and
/// an in-tree `target/` are not part of what is built).
fn tree_dirty() -> bool {
    let out = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output();
    matches!(out, Ok(out) if out.status.success() && !out.stdout.is_empty())
}

/// Whether the crate directory is the top of a Git work tree (not a tarball unpacked inside
/// some other repository, whose commit would be the wrong one).
fn own_checkout() -> bool {
    let top = git(&["rev-parse", "--show-toplevel"]).map(PathBuf::from);
    let here = std::env::var("CARGO_MANIFEST_DIR").ok().map(PathBuf::from);
    match (top, here) {
        (Some(top), Some(here)) => {
            top.canonicalize().ok() == Some(here).and_then(|h| h.canonicalize().ok())
        }
        _ => false,
    }
}

/// Reruns when HEAD moves (HEAD itself, the branch it names, the packed refs), when the index
/// changes (a commit, `git add`) and when the sources change, so the dirty flag follows edits;
/// nothing else makes the script run again, so builds stay incremental. Only existing paths
/// are named (cargo reruns the script on every build for a missing one).
fn watch_tree() {
    let mut refs = vec![
        "HEAD".to_owned(),
        "packed-refs".to_owned(),
        "index".to_owned(),
    ];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        refs.push(branch);
    }
    for name in refs {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    for source in ["src", "Cargo.toml", "Cargo.lock"] {
        if Path::new(source).exists() {
            println!("cargo:rerun-if-changed={source}");
        }
    }
}
