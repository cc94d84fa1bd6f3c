//! The previous release's `banshare`, built from its commit for tests of a
//! cluster in the middle of a rolling upgrade.
//!
//! The source comes from this repository's history (`git archive`), so the
//! test needs a clone with that commit (CI's has the full history). It is
//! built once per target directory, with the file transport only (no
//! default features: no libssh2 or libzmq to build), into a target
//! directory of its own under `CARGO_TARGET_TMPDIR`, and kept there: a
//! later run finds the binary and builds nothing. Building it shares no
//! artifacts with the main build (a second build into the same target
//! directory would overwrite `target/debug/banshare`, which other test
//! binaries run); measured on a 2-core machine shared with other builds,
//! 2 min 9 s of wall time (46 s of CPU) the first time, nothing after.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// banshare 0.1.0: main before issue 13 (the allowlist and incident
/// controls, origin nodes in `active.json`, `control.json`).
pub const PREVIOUS_RELEASE: &str = "2ad1854";

/// The previous release's binary, built if needed. Panics (the test fails,
/// never skips) when it cannot be: no git, no such commit, a failed build.
pub fn previous_banshare() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("prev-{PREVIOUS_RELEASE}"));
    let bin = root.join("target/debug/banshare");
    fs::create_dir_all(&root).unwrap();
    // One build at a time: test binaries and tests may ask at once.
    let lock = fs::File::create(root.join(".lock")).unwrap();
    lock.lock().unwrap();
    if bin.exists() {
        return bin;
    }
    let src = root.join("src");
    let _ = fs::remove_dir_all(&src);
    fs::create_dir_all(&src).unwrap();
    extract(&src);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = std::time::Instant::now();
    let out = Command::new(cargo)
        .args([
            "build",
            "--locked",
            "--no-default-features",
            "--bin",
            "banshare",
        ])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", root.join("target"))
        .stdout(Stdio::null())
        .output()
        .expect("cannot run cargo");
    assert!(
        out.status.success(),
        "building banshare {PREVIOUS_RELEASE} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "built banshare {PREVIOUS_RELEASE} in {:.0?}",
        started.elapsed()
    );
    let _ = fs::remove_dir_all(&src);
    bin
}

/// The commit's tree, from `git archive` into `dest`.
fn extract(dest: &Path) {
    let repo = env!("CARGO_MANIFEST_DIR");
    let mut archive = Command::new("git")
        .args(["-C", repo, "archive", "--format=tar", PREVIOUS_RELEASE])
        .stdout(Stdio::piped())
        .spawn()
        .expect("git is needed to build the previous release");
    let untar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dest)
        .stdin(archive.stdout.take().unwrap())
        .status()
        .unwrap();
    let archived = archive.wait().unwrap();
    assert!(
        archived.success() && untar.success(),
        "cannot extract commit {PREVIOUS_RELEASE} (a shallow clone without it?)"
    );
}
