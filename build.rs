//! Embeds the commit the binary is built from, for `mta_stsd_build_info`: `MTA_STSD_COMMIT`
//! if set (a container build passes it as a build argument), else `git rev-parse --short HEAD`
//! when the crate is its own Git checkout, else "unknown" (a tarball, the Dockerfile's copy).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MTA_STSD_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let from_env = std::env::var("MTA_STSD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty());
    let commit = match from_env {
        Some(commit) => commit.trim().to_owned(),
        None if own_checkout() => {
            watch_head();
            git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=MTA_STSD_COMMIT={commit}");
}

/// The output of `git args` in the crate directory, when it succeeds and says something.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
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

/// Rebuilds when HEAD moves: HEAD itself, the branch it names and the packed refs. Only
/// existing files are named (cargo reruns the script every build for a missing one).
fn watch_head() {
    let mut refs = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
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
}
