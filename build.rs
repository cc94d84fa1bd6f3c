//! Stamps the build for `banshare --version`: the git commit it was built
//! from and the cargo features it was built with, so a bug report names
//! exactly which binary ran.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BANSHARE_COMMIT");
    println!("cargo:rustc-env=BANSHARE_COMMIT={}", commit());
    println!("cargo:rustc-env=BANSHARE_FEATURES={}", features());
}

/// `BANSHARE_COMMIT` if set (a packager building from a tarball knows it),
/// else the checkout's commit, else "unknown": a crates.io tarball has no
/// `.git`, and the build must not fail for it.
fn commit() -> String {
    if let Ok(commit) = std::env::var("BANSHARE_COMMIT") {
        return commit;
    }
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    // Rebuilt when HEAD moves (a commit, a checkout), not on every edit.
    for file in git_files() {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    head
}

/// The files whose change means another commit: HEAD, the branch it
/// names, and packed-refs. Only existing ones: cargo reruns every build
/// for a path that does not exist.
fn git_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        files.push(Path::new(&dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        files.push(Path::new(&common).join("packed-refs"));
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            files.push(Path::new(&common).join(branch));
        }
    }
    files.retain(|f| f.exists());
    files
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// The enabled cargo features, as `sftp,zmq` (or "none").
fn features() -> String {
    let mut names: Vec<String> = std::env::vars()
        .filter_map(|(key, _)| key.strip_prefix("CARGO_FEATURE_").map(str::to_owned))
        .filter(|name| name != "DEFAULT")
        .map(|name| name.to_lowercase().replace('_', "-"))
        .collect();
    names.sort();
    match names.is_empty() {
        true => "none".into(),
        false => names.join(","),
    }
}
