//! The fail2ban integration files against the real fail2ban (Debian's
//! package): the filter with `fail2ban-regex`, and `banshare fail2ban
//! install` producing a configuration fail2ban accepts. Fails, never skips,
//! without fail2ban.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::BANSHARE;

const FILTER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fail2ban/filter.d/banshare.conf"
);

/// The lines `fail2ban-regex` matched in `log`, and those it missed.
fn regex_split(log: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = Command::new("fail2ban-regex")
        .args(["--print-all-matched", "--print-all-missed"])
        .arg(log)
        .arg(FILTER)
        .output()
        .expect("run fail2ban-regex (Debian package fail2ban)");
    assert!(
        out.status.success(),
        "fail2ban-regex failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut matched = BTreeSet::new();
    let mut missed = BTreeSet::new();
    let mut section = None;
    for line in text.lines() {
        if line.starts_with("|- Matched line(s):") {
            section = Some(true);
        } else if line.starts_with("|- Missed line(s):") {
            section = Some(false);
        } else if line.starts_with("`-") {
            section = None;
        } else if let (Some(is_match), Some(entry)) = (section, line.strip_prefix("|  ")) {
            if is_match { &mut matched } else { &mut missed }.insert(entry.to_owned());
        }
    }
    (matched, missed)
}

#[test]
fn filter_matches_ban_records_and_nothing_else() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/filter-cases.log");
    let (matched, missed) = regex_split(&fixture);
    let addresses: BTreeSet<String> = matched
        .iter()
        .map(|l| {
            l.split(" HOST ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    let expected: BTreeSet<String> = [
        "192.0.2.1",
        "192.0.2.2",
        "2001:db8::3",
        "192.0.2.4",
        "192.0.2.5",
    ]
    .map(String::from)
    .into();
    assert_eq!(addresses, expected, "matched: {matched:#?}");
    let total = fs::read_to_string(&fixture).unwrap().lines().count();
    assert_eq!(
        matched.len() + missed.len(),
        total,
        "every line was either matched or missed"
    );
    assert!(
        missed.iter().all(|l| !l.contains("192.0.2.")),
        "{missed:#?}"
    );
}

#[test]
fn filter_matches_real_logger_lines_and_banshare_bans_but_not_unbans() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("newbans.log");
    // Lines captured from util-linux logger -s (tests/fixtures).
    let logger = include_str!("fixtures/logger-lines.txt");
    let logger_lines: Vec<&str> = logger
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty() && !l.contains('/'))
        .collect();
    fs::write(&log, logger_lines.join("\n") + "\n").unwrap();
    // banshare's own ban and unban lines, written by the real binary.
    for (op, addr) in [
        ("ban", "192.0.2.50"),
        ("ban", "2001:db8::50"),
        ("unban", "192.0.2.51"),
    ] {
        support::run_ok(
            Command::new(BANSHARE)
                .args([
                    "--config",
                    "/dev/null",
                    "--quiet",
                    op,
                    addr,
                    "--jail",
                    "sshd",
                    "--bantime",
                    "600",
                    "--node",
                    "n1",
                    "--log",
                ])
                .arg(&log)
                .arg("--spool-dir")
                .arg(dir.path().join("spool")),
        );
    }
    let (matched, missed) = regex_split(&log);
    assert_eq!(
        matched.len(),
        logger_lines.len() + 2,
        "matched: {matched:#?}\nmissed: {missed:#?}"
    );
    assert_eq!(missed.len(), 1, "{missed:#?}");
    assert!(missed.iter().next().unwrap().contains("UNBAN 192.0.2.51"));
}

#[test]
fn install_writes_files_fail2ban_accepts_and_refuses_to_clobber() {
    let dir = tempfile::tempdir().unwrap();
    let conf = copy_of_etc_fail2ban(dir.path());
    let install = |extra: &[&str]| install_into(&conf, extra);
    let out = install(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "action.d/banshare.conf",
        "filter.d/banshare.conf",
        "jail.d/banshare.local.example",
    ] {
        assert!(conf.join(file).exists(), "{file}");
    }
    // fail2ban parses the whole configuration, with the action added to a
    // jail the way docs/fail2ban.md says, and the example sections copied
    // to a file it reads.
    let auth = dir.path().join("auth.log");
    fs::write(&auth, b"").unwrap();
    fs::write(
        conf.join("jail.local"),
        format!(
            "[sshd]\nenabled = true\nbackend = polling\nlogpath = {}\naction = %(action_)s\n          banshare\n",
            auth.display()
        ),
    )
    .unwrap();
    fs::copy(
        conf.join("jail.d/banshare.local.example"),
        conf.join("jail.d/examples.local"),
    )
    .unwrap();
    let text = dump(&conf);
    assert!(
        text.contains("banshare --quiet ban <ip>"),
        "the sshd jail got the banshare action: {text}"
    );
    assert!(
        !text.contains("'recidive'") && !text.contains("['add', 'banshare'"),
        "the example jails are disabled: {text}"
    );
    fs::remove_file(conf.join("jail.d/examples.local")).unwrap();

    assert!(install(&[]).status.success(), "a second install is a no-op");
    fs::write(
        conf.join("jail.d/banshare.local.example"),
        "# edited by the admin\n",
    )
    .unwrap();
    let out = install(&[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an edited file is not replaced without --force"
    );
    assert_eq!(
        fs::read_to_string(conf.join("jail.d/banshare.local.example")).unwrap(),
        "# edited by the admin\n"
    );
    assert!(install(&["--force"]).status.success());
}

/// A refused install (an edited file, no --force) writes none of the
/// files: it wrote those before the edited one, so that the admin got half
/// an upgrade (a new action beside their old filter).
#[test]
fn a_refused_install_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let conf = copy_of_etc_fail2ban(dir.path());
    fs::create_dir_all(conf.join("jail.d")).unwrap();
    fs::write(
        conf.join("jail.d/banshare.local.example"),
        "# edited by the admin\n",
    )
    .unwrap();
    let out = install_into(&conf, &[]);
    assert!(!out.status.success());
    for file in ["action.d/banshare.conf", "filter.d/banshare.conf"] {
        assert!(!conf.join(file).exists(), "{file} was written");
    }
}

/// fail2ban's effective configuration of `conf`, as `fail2ban-client -d`
/// prints it.
fn dump(conf: &Path) -> String {
    let out = Command::new("fail2ban-client")
        .arg("-c")
        .arg(conf)
        .arg("-d")
        .output()
        .expect("run fail2ban-client (Debian package fail2ban)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn install_leaves_the_admins_jails_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let conf = copy_of_etc_fail2ban(dir.path());
    let auth = dir.path().join("auth.log");
    fs::write(&auth, b"").unwrap();
    fs::write(
        conf.join("jail.local"),
        format!(
            "[sshd]\nenabled = true\nbackend = polling\nlogpath = {}\naction = %(action_mwl)s\n\n\
             [recidive]\nenabled = false\n",
            auth.display()
        ),
    )
    .unwrap();
    let before = dump(&conf);
    assert!(before.contains("sendmail-whois-lines"), "{before}");
    assert!(!before.contains("recidive"), "{before}");

    let out = install_into(&conf, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = dump(&conf);
    assert_eq!(
        before, after,
        "install changed the jails fail2ban runs, or how they run"
    );

    // A live jail file left by an earlier release is named, not removed.
    fs::write(
        conf.join("jail.d/banshare.local"),
        "[sshd]\nenabled = true\n",
    )
    .unwrap();
    let out = install_into(&conf, &[]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("jail.d/banshare.local "),
        "{err}"
    );
    assert!(conf.join("jail.d/banshare.local").exists());
}

/// A copy of the installed `/etc/fail2ban` in `dir`, without the
/// distribution's `jail.d` files: a configuration fail2ban accepts, for
/// `install` to write into.
fn copy_of_etc_fail2ban(dir: &Path) -> PathBuf {
    let conf = dir.join("fail2ban");
    let copied = Command::new("cp")
        .args(["-r", "/etc/fail2ban"])
        .arg(&conf)
        .status()
        .unwrap();
    assert!(
        copied.success(),
        "copy /etc/fail2ban (Debian package fail2ban)"
    );
    for entry in fs::read_dir(conf.join("jail.d")).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    conf
}

/// `banshare fail2ban install --dir CONF EXTRA...`.
fn install_into(conf: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(BANSHARE)
        .args(["--config", "/dev/null", "fail2ban", "install", "--dir"])
        .arg(conf)
        .args(extra)
        .output()
        .unwrap()
}
