//! The Debian package and what it ships: the .deb (packaging/build-deb)
//! installed with `dpkg -i` into a clean Debian root made by debootstrap,
//! then removed and purged; the man pages and completions generated from
//! the command line; `--version`; the default configuration; the systemd
//! drop-in; `fail2ban install` from the packaged copies.
//!
//! The root test needs root, debootstrap and dpkg, and the .deb built
//! first (`packaging/build-deb`, as .ci/run does): it fails, never skips,
//! without them.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::BANSHARE;
use support::cluster::require_root;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// The commit this test (and so the binary under test) was built from.
const COMMIT: &str = env!("BANSHARE_COMMIT");

fn banshare(args: &[&str]) -> Output {
    Command::new(BANSHARE).args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn version_names_the_commit_and_the_features() {
    let out = banshare(&["--version"]);
    assert_ok(&out, "banshare --version");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(MANIFEST)
        .output()
        .expect("git");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    let mut features = Vec::new();
    if cfg!(feature = "sftp") {
        features.push("sftp");
    }
    if cfg!(feature = "zmq") {
        features.push("zmq");
    }
    if cfg!(feature = "nats") {
        features.insert(0, "nats");
    }
    let features = match features.is_empty() {
        true => "none".to_owned(),
        false => features.join(","),
    };
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "banshare {} (commit {head}, features: {features})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn man_pages_and_completions_come_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    let completions = dir.path().join("completions");
    assert_ok(
        &banshare(&["generate", "man", man.to_str().unwrap()]),
        "generate man",
    );
    assert_ok(
        &banshare(&["generate", "completions", completions.to_str().unwrap()]),
        "generate completions",
    );
    // A page for the command and one for each command, rendered by man.
    for page in [
        "banshare.1",
        "banshare-watch.1",
        "banshare-systemd-dropin.1",
    ] {
        let out = Command::new("man")
            .arg("-l")
            .arg(man.join(page))
            .env("MANPAGER", "cat")
            .output()
            .expect("man (Debian package man-db)");
        assert_ok(&out, &format!("man -l {page}"));
        assert!(stdout(&out).contains("NAME"), "{page}: {}", stdout(&out));
    }
    let main = fs::read_to_string(man.join("banshare.1")).unwrap();
    assert!(main.contains("EXIT STATUS"), "{main}");
    assert!(
        !man.join("banshare-generate.1").exists(),
        "the hidden command got a page"
    );
    let bash = completions.join("banshare.bash");
    assert!(
        fs::read_to_string(&bash)
            .unwrap()
            .contains("systemd-dropin")
    );
    assert_ok(
        &Command::new("bash").arg("-n").arg(&bash).output().unwrap(),
        "bash -n banshare.bash",
    );
    for file in ["_banshare", "banshare.fish"] {
        let text = fs::read_to_string(completions.join(file)).unwrap();
        assert!(text.contains("keygen"), "{file}");
    }
}

/// The packaged configuration as shipped (all commented) parses, and is
/// refused only for what the daemons refuse it (no log, no backend: exit
/// 2, naming them, as `watch` refuses it); with every example setting in
/// it uncommented it is accepted: what it shows is what `config check`
/// (and so the daemons) accept.
#[test]
fn default_configuration_is_accepted_with_every_example_uncommented() {
    let shipped = Path::new(MANIFEST).join("packaging/banshare.toml");
    let out = banshare(&["config", "check", "-c", shipped.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "config check on the shipped file: {out:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("watch (needs [common] log and [watch] backend)"),
        "{err}"
    );
    assert!(stdout(&out).contains("[watch]"), "{}", stdout(&out));

    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path();
    let text = fs::read_to_string(&shipped).unwrap();
    let mut uncommented = 0;
    let enabled: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(setting) if setting.starts_with(|c: char| c.is_ascii_lowercase()) => {
                uncommented += 1;
                setting.to_owned()
            }
            _ => line.to_owned(),
        })
        .map(|line| line.replace("/etc/banshare/", &format!("{}/", etc.display())))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(uncommented > 30, "only {uncommented} example settings");
    // The files the examples name, made as the docs say.
    let key = etc.join("node.key");
    let out = banshare(&["keygen", "--out", key.to_str().unwrap(), "--node", "web1"]);
    assert_ok(&out, "keygen");
    fs::write(etc.join("trusted-keys"), &out.stdout).unwrap();
    fs::write(etc.join("id_ed25519"), "").unwrap();
    fs::write(etc.join("known_hosts"), "").unwrap();
    for secret in ["nats.creds", "nats-ca.pem"] {
        fs::write(etc.join(secret), "").unwrap();
        fs::set_permissions(etc.join(secret), fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = etc.join("banshare.toml");
    fs::write(&config, enabled).unwrap();
    let out = banshare(&["config", "check", "-c", config.to_str().unwrap()]);
    assert_ok(&out, "config check with every example uncommented");
    assert!(
        stdout(&out).contains("log = \"/mnt/banshare/newbans.log\""),
        "{}",
        stdout(&out)
    );
}

/// Writes `config` and runs `systemd-dropin` with it, into `units`.
fn dropin(dir: &Path, config: &str, extra: &[&str]) -> String {
    let file = dir.join("banshare.toml");
    fs::write(&file, config).unwrap();
    let units = dir.join("units");
    let fail2ban = dir.join("fail2ban");
    let mut args = vec!["-c", file.to_str().unwrap(), "systemd-dropin"];
    args.extend(extra);
    args.extend(["--dir", units.to_str().unwrap()]);
    args.extend(["--fail2ban-dir", fail2ban.to_str().unwrap()]);
    assert_ok(&banshare(&args), "systemd-dropin");
    let unit = extra[1];
    fs::read_to_string(units.join(format!("banshare-{unit}.service.d/banshare-dropin.conf")))
        .unwrap()
}

#[test]
fn systemd_dropin_ties_a_unit_to_the_share_of_the_configured_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[common]\nlog = \"/mnt/share/newbans.log\"\nspool_dir = \"/srv/spool\"\n\
                  [watch]\nbackend = \"nftables\"\n";
    let text = dropin(dir.path(), config, &["--unit", "watch"]);
    for line in [
        "RequiresMountsFor=/mnt/share\n",
        "ReadWritePaths=/mnt/share\n",
        "ReadWritePaths=/srv/spool\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    // The default state folder is the packaged unit's already.
    assert!(!text.contains("/var/lib/banshare"), "{text}");
    assert!(!text.contains("User=root"), "{text}");
    assert!(!text.contains("fail2ban.service"), "{text}");

    // fail2ban's socket is root's: that backend runs the watcher as root,
    // and after fail2ban, whose socket it needs (review 13, L7: at boot it
    // met a missing socket until fail2ban was up).
    let config = config.replace("nftables", "fail2ban");
    let text = dropin(dir.path(), &config, &["--unit", "watch"]);
    assert!(text.contains("User=root\n"), "{text}");
    assert!(text.contains("\nAfter=fail2ban.service\n"), "{text}");
    let text = dropin(
        dir.path(),
        &config,
        &["--unit", "monitor", "--user", "banshare"],
    );
    assert!(!text.contains("User=root"), "{text}");

    // fail2ban runs its banshare action as root, so what it spools is
    // root's: the units that deliver the spool run as root beside it.
    let action = dir.path().join("fail2ban/action.d/banshare.conf");
    fs::create_dir_all(action.parent().unwrap()).unwrap();
    fs::write(&action, "").unwrap();
    let config = config.replace("fail2ban", "nftables");
    for unit in ["watch", "monitor"] {
        let text = dropin(dir.path(), &config, &["--unit", unit]);
        assert!(text.contains("User=root\n"), "{unit}: {text}");
    }
    let text = dropin(dir.path(), &config, &["--unit", "publisher"]);
    assert!(!text.contains("User=root"), "{text}");
    fs::remove_file(&action).unwrap();

    // A metrics file outside the packaged state folder: its folder is
    // writable, and optional ("-") since node_exporter may come later.
    let with_metrics = format!(
        "{}metrics_file = \"/var/lib/prometheus/node-exporter/banshare.prom\"\n",
        config.replace("fail2ban", "nftables")
    );
    let text = dropin(dir.path(), &with_metrics, &["--unit", "watch"]);
    assert!(
        text.contains("ReadWritePaths=-/var/lib/prometheus/node-exporter\n"),
        "{text}"
    );

    // A log over SFTP, or a NATS stream, has no mount to wait for.
    for log in [
        "sftp://banshare@files.example.org/share/newbans.log",
        "nats://nats1.example.org,nats2.example.org,nats3.example.org/BANS",
    ] {
        let config = format!("[common]\nlog = \"{log}\"\n");
        let text = dropin(dir.path(), &config, &["--unit", "watch"]);
        assert!(!text.contains("RequiresMountsFor"), "{log}: {text}");
        assert!(!text.contains("ReadWritePaths"), "{log}: {text}");
        assert!(text.contains("reached over the network"), "{log}: {text}");
    }
}

#[test]
fn fail2ban_install_takes_the_packaged_copies() {
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("packaged");
    let conf = dir.path().join("fail2ban");
    fs::create_dir_all(&conf).unwrap();
    for name in [
        "action.d/banshare.conf",
        "filter.d/banshare.conf",
        "jail.d/banshare.local.example",
    ] {
        let path = from.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, format!("# packaged {name}\n")).unwrap();
    }
    let out = banshare(&[
        "--config",
        "/dev/null",
        "fail2ban",
        "install",
        "--dir",
        conf.to_str().unwrap(),
        "--from",
        from.to_str().unwrap(),
    ]);
    assert_ok(&out, "fail2ban install --from");
    assert_eq!(
        fs::read_to_string(conf.join("action.d/banshare.conf")).unwrap(),
        "# packaged action.d/banshare.conf\n"
    );
    // The built-in action calls the binary where the package installs it.
    let action =
        fs::read_to_string(Path::new(MANIFEST).join("fail2ban/action.d/banshare.conf")).unwrap();
    assert!(
        action.contains("\nbanshare = /usr/bin/banshare\n"),
        "{action}"
    );
}

/// A copy of the cached clean Debian root, with /proc mounted; unmounted
/// and removed when dropped, whatever happened.
struct DebianRoot {
    dir: PathBuf,
    proc_mounted: bool,
}

impl DebianRoot {
    /// Copies the cache (made by .ci/debroot if missing): the cache stays
    /// clean for the next run.
    fn new() -> DebianRoot {
        let target = Path::new(MANIFEST).join("target");
        let cache = target.join("debroot-bookworm");
        let made = Command::new(Path::new(MANIFEST).join(".ci/debroot"))
            .arg(&cache)
            .output()
            .expect("run .ci/debroot");
        assert_ok(&made, ".ci/debroot (needs debootstrap)");
        let dir = target.join(format!("package-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut root = DebianRoot {
            dir,
            proc_mounted: false,
        };
        let copy = Command::new("cp")
            .arg("-a")
            .arg(&cache)
            .arg(&root.dir)
            .output()
            .unwrap();
        assert_ok(&copy, "cp -a of the cached root");
        let mount = Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(root.dir.join("proc"))
            .output()
            .unwrap();
        assert_ok(&mount, "mount proc");
        root.proc_mounted = true;
        root
    }

    /// Runs `script` with sh inside the root.
    fn sh(&self, script: &str) -> Output {
        Command::new("chroot")
            .arg(&self.dir)
            .args(["/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .output()
            .unwrap()
    }

    fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert_ok(&out, script);
        stdout(&out)
    }

    fn exists(&self, path: &str) -> bool {
        self.dir.join(path.trim_start_matches('/')).exists()
    }
}

impl Drop for DebianRoot {
    fn drop(&mut self) {
        if self.proc_mounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.join("proc"))
                .status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The newest .deb from packaging/build-deb.
fn built_deb() -> PathBuf {
    let dir = Path::new(MANIFEST).join("target/debian");
    let newest = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("banshare_"))
                && p.extension().is_some_and(|e| e == "deb")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    newest.unwrap_or_else(|| {
        panic!(
            "no banshare_*.deb in {}: build it first with packaging/build-deb",
            dir.display()
        )
    })
}

/// The shared libraries a binary asks the loader for (ELF `NEEDED`).
fn needed_libraries(binary: &Path) -> Vec<String> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output()
        .expect("readelf (binutils)");
    assert_ok(&out, "readelf -d");
    stdout(&out)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split_once('[')?.1.trim_end_matches(']').to_owned()))
        .collect()
}

/// fail2ban starts `/usr/bin/banshare ban` once per ban: the loader must
/// not map libzmq (with libstdc++, libsodium, Kerberos...) or libssh2's
/// OpenSSL and zlib for it, which a ban to a log path never uses. The full
/// binary, which the front hands every other command, keeps them, from the
/// system (Debian's security updates reach them).
#[test]
fn deb_front_binary_loads_no_transport_library() {
    let deb = built_deb();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(dir.path())
        .output()
        .expect("dpkg-deb");
    assert_ok(&out, "dpkg-deb -x");
    let front = needed_libraries(&dir.path().join("usr/bin/banshare"));
    for heavy in [
        "libzmq",
        "libssl",
        "libcrypto",
        "libz.",
        "libssh2",
        "libstdc++",
    ] {
        assert!(
            !front.iter().any(|l| l.starts_with(heavy)),
            "/usr/bin/banshare loads {heavy}: {front:?}"
        );
    }
    let full = needed_libraries(&dir.path().join("usr/lib/banshare/banshare"));
    for transport in ["libzmq", "libssl", "libcrypto"] {
        assert!(
            full.iter().any(|l| l.starts_with(transport)),
            "/usr/lib/banshare/banshare lacks {transport}: {full:?}"
        );
    }
}

const UNITS: &str = "banshare-watch.service banshare-monitor.service \
                     banshare-publisher.service banshare-compact.service banshare-compact.timer";

#[test]
fn deb_installs_into_a_clean_debian_root_and_purge_names_what_it_leaves() {
    require_root();
    for tool in ["debootstrap", "dpkg", "chroot"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "{tool} is missing (.ci/install-deps)"
        );
    }
    let deb = built_deb();
    let root = DebianRoot::new();
    fs::copy(&deb, root.dir.join("tmp/banshare.deb")).unwrap();
    root.sh_ok("dpkg -i /tmp/banshare.deb");

    // The binary of this very commit (not a stale .deb), and its pages.
    let version = root.sh_ok("banshare --version");
    assert!(
        version.contains(&format!("commit {COMMIT}")),
        "the .deb holds another build ({version}): rebuild it with packaging/build-deb"
    );
    let man = root.sh_ok("man banshare");
    // man justifies lines: compare with single spaces.
    let words = man.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("NAME banshare - Share fail2ban bans"),
        "{man}"
    );
    root.sh_ok("man banshare-watch | grep -q 'Follow the shared log'");
    // The NATS transport is in the package's full binary (the front hands
    // `nats` to it), and its pages are there.
    root.sh_ok("man banshare-nats-init | grep -q 'JetStream stream'");
    let nkey = root.sh_ok("banshare nats keygen --out /etc/banshare/nats.nkey");
    assert!(nkey.starts_with('U'), "nats keygen printed {nkey:?}");
    root.sh_ok("test -f /usr/share/bash-completion/completions/banshare");

    // What the maintainer scripts make, and what works right after install.
    root.sh_ok("getent passwd banshare | grep -q ':/var/lib/banshare:/usr/sbin/nologin$'");
    assert_eq!(
        root.sh_ok("stat -c %U:%G /var/lib/banshare").trim(),
        "banshare:banshare"
    );
    // The conffile as shipped sets no log and no backend: refused, as
    // `watch` refuses it, naming them.
    root.sh_ok(
        "banshare config check >/dev/null 2>/tmp/check.err; test $? -eq 2 && \
         grep -q 'watch (needs \\[common\\] log and \\[watch\\] backend)' /tmp/check.err",
    );
    // The front appends to a log path itself; what it does not know
    // (curve-keygen comes with the ZeroMQ transport) the full binary runs.
    root.sh_ok(
        ": > /tmp/newbans.log && \
         banshare ban 192.0.2.7 --node n1 --log /tmp/newbans.log --spool-dir /tmp/spool && \
         grep -q 'HOST 192.0.2.7 ' /tmp/newbans.log",
    );
    root.sh_ok("banshare curve-keygen --help | grep -qi curve");
    root.sh_ok("banshare keygen --out /etc/banshare/node.key");
    root.sh_ok(
        "mkdir -p /etc/fail2ban && banshare fail2ban install && \
         cmp /etc/fail2ban/action.d/banshare.conf /usr/share/banshare/fail2ban/action.d/banshare.conf && \
         grep -qx 'banshare = /usr/bin/banshare' /etc/fail2ban/action.d/banshare.conf",
    );

    // The units pass systemd's own check, with the drop-in for a mounted
    // share written from the (edited) configuration.
    root.sh_ok(
        "sed -i 's|^#log = .*|log = \"/mnt/share/newbans.log\"|' /etc/banshare/banshare.toml && \
         banshare systemd-dropin --unit watch",
    );
    // With fail2ban's action installed above, as root (still bounded).
    root.sh_ok(
        "grep -qx RequiresMountsFor=/mnt/share \
         /etc/systemd/system/banshare-watch.service.d/banshare-dropin.conf && \
         grep -qx User=root /etc/systemd/system/banshare-watch.service.d/banshare-dropin.conf",
    );
    root.sh_ok(&format!("systemd-analyze verify {UNITS}"));
    // A node on a NATS stream: no mount to wait for, and the units still
    // pass the check (the drop-in replaced, the config put back after).
    root.sh_ok(
        "cp /etc/banshare/banshare.toml /tmp/share.toml && \
         sed -i 's|^log = .*|log = \"nats://198.51.100.1,198.51.100.2,198.51.100.3/BANS\"|; \
                 s|^#credentials_file = .*|nkey_seed_file = \"/etc/banshare/nats.nkey\"|' \
             /etc/banshare/banshare.toml && \
         grep -qx 'nkey_seed_file = \"/etc/banshare/nats.nkey\"' /etc/banshare/banshare.toml && \
         banshare systemd-dropin --unit watch && \
         ! grep -q RequiresMountsFor /etc/systemd/system/banshare-watch.service.d/banshare-dropin.conf",
    );
    root.sh_ok(&format!("systemd-analyze verify {UNITS}"));
    root.sh_ok(
        "cp /tmp/share.toml /etc/banshare/banshare.toml && banshare systemd-dropin --unit watch",
    );

    // Installed again (an upgrade's maintainer scripts run alike): the
    // edited configuration stays, the user is not made twice.
    root.sh_ok("dpkg -i /tmp/banshare.deb");
    root.sh_ok("grep -qx 'log = \"/mnt/share/newbans.log\"' /etc/banshare/banshare.toml");

    // What the daemons would have made: spooled records, a cursor.
    root.sh_ok(
        "mkdir -p /var/lib/banshare/spool /var/lib/banshare/watch && \
         echo record > /var/lib/banshare/spool/batch-1 && echo '{}' > /var/lib/banshare/watch/cursor",
    );
    let made_here = [
        "/etc/banshare/nats.nkey",
        "/etc/banshare/node.key",
        "/etc/banshare/node.key.pub",
        "/var/lib/banshare/spool/batch-1",
        "/var/lib/banshare/watch/cursor",
    ];

    // remove: the program goes, everything made or edited here stays.
    root.sh_ok("dpkg -r banshare");
    for gone in [
        "/usr/bin/banshare",
        "/usr/lib/systemd/system/banshare-watch.service",
    ] {
        assert!(!root.exists(gone), "remove left {gone}");
    }
    for kept in made_here.iter().chain(&[
        "/etc/banshare/banshare.toml",
        "/etc/systemd/system/banshare-watch.service.d/banshare-dropin.conf",
    ]) {
        assert!(root.exists(kept), "remove deleted {kept}");
    }

    // purge: what the package made goes; what it leaves, it names.
    let purge = root.sh_ok("dpkg -P banshare");
    for gone in [
        "/etc/banshare/banshare.toml",
        "/etc/systemd/system/banshare-watch.service.d",
        "/usr/share/banshare",
        "/usr/share/man/man1/banshare.1.gz",
    ] {
        assert!(!root.exists(gone), "purge left {gone}");
    }
    for kept in made_here {
        assert!(root.exists(kept), "purge deleted {kept}");
    }
    for named in [
        "purge left /etc/banshare/node.key (a private key)",
        "purge left /etc/banshare/nats.nkey (a private key)",
        "purge left /var/lib/banshare/spool (the spool: 1 file(s) of records not yet delivered)",
        "purge left /var/lib/banshare/watch",
        // Copied by `banshare fail2ban install` above: fail2ban's to keep,
        // but named, since its action now calls a missing binary.
        "purge left /etc/fail2ban/action.d/banshare.conf",
        "purge left /etc/fail2ban/filter.d/banshare.conf",
    ] {
        assert!(
            purge.contains(named),
            "{named:?} not said by purge:\n{purge}"
        );
    }
}

/// A network namespace of its own; deleted when dropped.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("bspkg{}", std::process::id());
        // One left by an earlier run with this pid, if any.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert_ok(&out, "ip netns add");
        Netns(name)
    }

    fn exec(&self) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.0]);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// What banshare-watch.service grants, tried for real: a watcher that is
/// not root, with CAP_NET_ADMIN as its only (ambient) capability and no
/// new privileges, bans through nftables (nft inherits the capability).
#[test]
fn watcher_bans_through_nftables_with_only_cap_net_admin() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("newbans.log");
    fs::write(&log, "").unwrap();
    let out = banshare(&[
        "--config",
        "/dev/null",
        "ban",
        "192.0.2.7",
        "--jail",
        "sshd",
        "--node",
        "web2",
        "--log",
        log.to_str().unwrap(),
        "--spool-dir",
        dir.path().join("spool-web2").to_str().unwrap(),
    ]);
    assert_ok(&out, "ban");
    // The unit's user owns its state; "nobody" stands in for banshare.
    let state = dir.path().join("state");
    let spool = dir.path().join("spool");
    for folder in [&state, &spool] {
        fs::create_dir(folder).unwrap();
    }
    let out = Command::new("chown")
        .arg("-R")
        .arg("nobody:nogroup")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_ok(&out, "chown");

    let ns = Netns::new();
    let mut watcher = support::Daemon(
        ns.exec()
            .args([
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--inh-caps=-all,+net_admin",
                "--ambient-caps=+net_admin",
                "--bounding-set=-all,+net_admin",
                "--no-new-privs",
                BANSHARE,
                "--config",
                "/dev/null",
                "watch",
                "--backend",
                "nftables",
                "--node",
                "web1",
                "--log",
            ])
            .arg(&log)
            .arg("--state-dir")
            .arg(&state)
            .arg("--spool-dir")
            .arg(&spool)
            .spawn()
            .unwrap(),
    );
    let banned = support::wait_until(std::time::Duration::from_secs(30), || {
        let out = ns
            .exec()
            .args(["nft", "list", "table", "inet", "banshare"])
            .output()
            .unwrap();
        stdout(&out).contains("192.0.2.7")
    });
    assert!(
        watcher.0.try_wait().unwrap().is_none(),
        "the watcher exited: it could not run with CAP_NET_ADMIN only"
    );
    assert!(banned, "192.0.2.7 never reached the nftables set");
}
