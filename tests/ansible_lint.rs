//! The Ansible rollout (`ansible/`) against Debian's `ansible` and
//! `ansible-lint` packages: the playbook parses, passes ansible-lint's
//! production profile with no rule skipped, and its roles' argument specs
//! refuse a bad variable before any task runs. Fails, never skips, without
//! those packages (`.ci/install-deps` installs them).
//!
//! The converge of the playbook on real test hosts is
//! tests/ansible_converge.rs (ansible/README.md, "Testing the rollout").

use std::path::Path;
use std::process::{Command, Output};

const ANSIBLE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ansible");

/// Runs `program` in ansible/ (its ansible.cfg finds the roles), with no
/// colours so that messages can be matched.
fn run_in_ansible_dir(program: &str, args: &[&str]) -> Output {
    assert!(
        Path::new(ANSIBLE_DIR).join("site.yml").is_file(),
        "{ANSIBLE_DIR}/site.yml is missing"
    );
    Command::new(program)
        .args(args)
        .current_dir(ANSIBLE_DIR)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("NO_COLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} ({e}): install Debian's ansible and ansible-lint \
                 packages (.ci/install-deps)"
            )
        })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn playbook_passes_the_syntax_check() {
    let out = run_in_ansible_dir("ansible-playbook", &["--syntax-check", "site.yml"]);
    assert!(
        out.status.success(),
        "ansible-playbook --syntax-check site.yml failed:\n{}",
        text(&out)
    );
}

#[test]
fn playbook_and_roles_pass_ansible_lint_production_profile() {
    // No rule is skipped: ansible/.ansible-lint must not grow a skip_list
    // without the README listing why.
    assert!(
        !Path::new(ANSIBLE_DIR).join(".ansible-lint").exists(),
        "ansible/.ansible-lint appeared: list each skipped rule and its reason in \
         ansible/README.md, then update this test"
    );
    let out = run_in_ansible_dir(
        "ansible-lint",
        &[
            "--profile",
            "production",
            "--nocolor",
            "--strict",
            "--offline",
        ],
    );
    let output = text(&out);
    assert!(
        out.status.success(),
        "ansible-lint --profile production failed:\n{output}"
    );
    assert!(
        output.contains("Passed with production profile"),
        "ansible-lint did not say it passed the production profile:\n{output}"
    );
}

/// A play that gives the node role a transport it does not know. The
/// argument spec check is the role's first task, so nothing runs on the
/// local host (and check mode, and the role's own asserts after it, would
/// stop it anyway).
const BAD_VARIABLE_PLAY: &str = "\
- name: A node with a bad variable
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: banshare_node
      vars:
        banshare_node_access: nfs
";

#[test]
fn node_role_refuses_a_bad_variable_by_name() {
    let dir = std::env::temp_dir().join(format!("banshare-ansible-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let play = dir.join("bad.yml");
    std::fs::write(&play, BAD_VARIABLE_PLAY).unwrap();
    let roles = format!("{ANSIBLE_DIR}/roles");
    let out = Command::new("ansible-playbook")
        .args(["--check", "-i", "localhost,"])
        .arg(&play)
        .current_dir(&dir)
        .env("ANSIBLE_ROLES_PATH", &roles)
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("run ansible-playbook (Debian package ansible)");
    let _ = std::fs::remove_dir_all(&dir);
    let output = text(&out);
    assert!(
        !out.status.success(),
        "the bad variable was accepted:\n{output}"
    );
    assert!(
        output
            .contains("value of banshare_node_access must be one of: sshfs, sftp, nats, got: nfs"),
        "the refusal does not name the variable and its choices:\n{output}"
    );
    assert!(
        output.contains("ok=0") && output.contains("changed=0"),
        "a task ran before the refusal:\n{output}"
    );
}

/// Runs `play` (a playbook's text) with `ansible-playbook --check` on the
/// local host, with the roles of ansible/; returns its output and whether
/// it succeeded.
fn run_local_play(name: &str, play: &str) -> (bool, String) {
    run_play(name, play, &["--check", "-i", "localhost,"], None)
}

/// Runs `play` with `ansible-playbook` on the local host, for real, with
/// [`LOCAL_INVENTORY`]; returns its output and whether it succeeded.
fn run_local_play_for_real(name: &str, play: &str) -> (bool, String) {
    run_play(name, play, &["-i", "hosts.yml"], Some(LOCAL_INVENTORY))
}

/// `ansible-playbook ARGS play.yml` in a folder of its own holding `play`
/// (and `inventory` as hosts.yml), with the roles of ansible/.
fn run_play(name: &str, play: &str, args: &[&str], inventory: Option<&str>) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("banshare-ansible-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(inventory) = inventory {
        std::fs::write(dir.join("hosts.yml"), inventory).unwrap();
    }
    std::fs::write(dir.join("play.yml"), play).unwrap();
    let out = Command::new("ansible-playbook")
        .args(args)
        .arg("play.yml")
        .current_dir(&dir)
        .env("ANSIBLE_ROLES_PATH", format!("{ANSIBLE_DIR}/roles"))
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("run ansible-playbook (Debian package ansible)");
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.success(), text(&out))
}

/// A node's `banshare_node_ssh_from` goes into the file server's
/// authorized_keys as from="...": a list, or a value with a quote, would
/// break that line and lock the node out. The keys entry point (the
/// first to run on a node) refuses it before any change.
#[test]
fn node_role_refuses_an_ssh_from_that_would_break_authorized_keys() {
    for bad in ["['192.0.2.1', '192.0.2.2']", "'192.0.2.1\" ,command=\"x'"] {
        let play = format!(
            "- name: A node with a bad ssh_from\n  hosts: localhost\n  connection: local\n  \
             gather_facts: false\n  tasks:\n    - name: Keys\n      ansible.builtin.include_role:\n        \
             name: banshare_node\n        tasks_from: keys\n      vars:\n        \
             banshare_node_ssh_from: {bad}\n"
        );
        let (ok, output) = run_local_play("ssh-from", &play);
        assert!(!ok, "banshare_node_ssh_from {bad} was accepted:\n{output}");
        assert!(
            output.contains("banshare_node_ssh_from") && output.contains("changed=0"),
            "the refusal of {bad} does not name banshare_node_ssh_from, or came after a change:\n{output}"
        );
    }
}

/// An unquoted `0775` is the number 509 in YAML: the file server role
/// refuses it (and any mode that is not quoted octal) before any change.
#[test]
fn fileserver_role_refuses_a_mode_yaml_reads_as_a_number() {
    let play = "- name: A file server with an unquoted mode\n  hosts: localhost\n  connection: local\n  \
                gather_facts: false\n  roles:\n    - role: banshare_fileserver\n      vars:\n        \
                banshare_fileserver_share_mode: 0775\n";
    let (ok, output) = run_local_play("mode", play);
    assert!(!ok, "an unquoted mode was accepted:\n{output}");
    assert!(
        output.contains("quoted octal") && output.contains("changed=0"),
        "the refusal does not say how to write the mode, or came after a change:\n{output}"
    );
}

/// The example inventory names the .deb packaging/build-deb makes
/// (cargo-deb's banshare_<version>-1_<arch>.deb), not a file that never
/// exists.
#[test]
fn example_inventory_points_at_the_built_deb() {
    let out = run_in_ansible_dir(
        "ansible",
        &[
            "web1.example.org",
            "-i",
            "inventory/example/hosts.yml",
            "-m",
            "ansible.builtin.debug",
            "-a",
            "var=banshare_package_deb",
        ],
    );
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    let built = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/target/debian"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("banshare_") && name.ends_with(".deb")
        });
    if built {
        assert!(
            output.contains("/target/debian/banshare_") && output.contains(".deb\""),
            "the example inventory does not name the built .deb:\n{output}"
        );
    } else {
        assert!(
            output.contains("run packaging/build-deb"),
            "with no .deb built, the example inventory does not say how to make one:\n{output}"
        );
    }
}

/// Handlers notified before a task failed still run (force_handlers): a
/// changed file whose restart or reload was lost is never applied later,
/// since the next run finds the file unchanged.
#[test]
fn every_play_forces_its_handlers() {
    let cfg = std::fs::read_to_string(format!("{ANSIBLE_DIR}/ansible.cfg")).unwrap();
    assert!(
        cfg.lines()
            .any(|l| l.replace(' ', "") == "force_handlers=True"),
        "ansible.cfg does not set force_handlers = True:\n{cfg}"
    );
    let site = std::fs::read_to_string(format!("{ANSIBLE_DIR}/site.yml")).unwrap();
    let plays = site.matches("\n- name: ").count() + usize::from(site.starts_with("- name: "));
    let forced = site.matches("\n  force_handlers: true\n").count();
    assert_eq!(
        forced, plays,
        "not every play of site.yml sets force_handlers: true:\n{site}"
    );
}

/// review14b: an upgraded .deb restarts the daemons that run (the package's
/// postinst restarts none). banshare_package's handler "Restart the running
/// banshare daemons" is service_facts, which never reports a change, and a
/// handler notifies another only when it changed: "Restart each running
/// banshare daemon" never runs, and the watchers keep the old binary.
#[test]
fn an_upgraded_package_restarts_the_running_daemons() {
    let play = format!(
        "- name: The package changed\n  hosts: localhost\n  connection: local\n  \
         gather_facts: false\n  vars:\n    banshare_package_units: []\n  tasks:\n    \
         - name: A new .deb installed\n      ansible.builtin.debug:\n        msg: installed\n      \
         changed_when: true\n      notify: Restart the running banshare daemons\n  handlers:\n    \
         - name: The package role's handlers\n      ansible.builtin.import_tasks: \
         {ANSIBLE_DIR}/roles/banshare_package/handlers/main.yml\n"
    );
    let (ok, output) = run_local_play("upgrade", &play);
    assert!(ok, "{output}");
    assert!(
        output.contains("RUNNING HANDLER [Restart each running banshare daemon]"),
        "after a package change, the handler that restarts the running daemons never ran:\n{output}"
    );
}

/// review14b: the node role's filter decides restart or reload from the
/// template's diff. When Ansible gives no text to compare (the file on
/// the node larger than max_diff_size, binary, or unreadable: `dst_larger`,
/// `dst_binary`, or no diff at all) a changed configuration must count as
/// a restart, not as a reload that keeps a restart-only setting unapplied.
#[test]
fn restart_filter_restarts_when_the_diff_cannot_tell() {
    let filters = format!("{ANSIBLE_DIR}/roles/banshare_node/filter_plugins");
    let script = "import sys, banshare_config as b\n\
                  after = '[watch]\\nbackend = \"log\"\\n'\n\
                  cases = [\n\
                  {'changed': True, 'diff': [{'dst_larger': 104448, 'after': after}]},\n\
                  {'changed': True, 'diff': [{'dst_binary': 1, 'after': after}]},\n\
                  {'changed': True, 'diff': {}},\n\
                  ]\n\
                  print([b.banshare_restart_needed(c) for c in cases])\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .env("PYTHONPATH", &filters)
        .output()
        .expect("run python3");
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert_eq!(
        output.trim(),
        "[True, True, True]",
        "a changed banshare.toml whose diff has no before/after text is taken as \
         reload-only (no restart)"
    );
}

/// review14b: docs/deploy.md's by-hand sshd block ("/etc/ssh/sshd_config
/// (or a file in /etc/ssh/sshd_config.d/)") must pass `sshd -t` in a
/// Debian 12 sshd setup: the drop-in folder included first, and the main
/// file's own `Subsystem sftp /usr/lib/openssh/sftp-server` after it.
#[test]
fn deploy_docs_sshd_block_passes_sshd_t_on_debian() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deploy.md")).unwrap();
    let after = docs
        .split_once("`/etc/ssh/sshd_config` (or a file in")
        .expect("the sshd block's introduction in docs/deploy.md")
        .1;
    let block = after
        .split_once("```\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the sshd block")
        .0;
    let dir = std::env::temp_dir().join(format!("banshare-sshd-docs-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sshd_config.d")).unwrap();
    let key = dir.join("host_key");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .expect("run ssh-keygen");
    assert!(keygen.status.success(), "{}", text(&keygen));
    std::fs::write(dir.join("sshd_config.d/banshare.conf"), block).unwrap();
    // Debian 12's /etc/ssh/sshd_config: the Include on top, its own sftp
    // Subsystem further down.
    let main = dir.join("sshd_config");
    std::fs::write(
        &main,
        format!(
            "Include {}/sshd_config.d/*.conf\nHostKey {}\nSubsystem sftp /usr/lib/openssh/sftp-server\n",
            dir.display(),
            key.display()
        ),
    )
    .unwrap();
    let out = Command::new("/usr/sbin/sshd")
        .arg("-t")
        .arg("-f")
        .arg(&main)
        .output()
        .expect("run /usr/sbin/sshd (Debian's openssh-server)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "sshd -t refuses docs/deploy.md's block as a drop-in:\n{}\n{block}",
        text(&out)
    );
}

/// review14b M1: a malformed `banshare_node_extra_trusted_keys` line
/// would make the whole trusted keys file one the watcher refuses (on
/// SIGHUP it keeps its old trust, the run still green). The node role
/// refuses it, naming the variable, before any change.
#[test]
fn node_role_refuses_a_malformed_extra_trusted_key() {
    let play = "- name: A node with a malformed extra trusted key\n  hosts: localhost\n  \
                connection: local\n  gather_facts: false\n  roles:\n    - role: banshare_node\n      \
                vars:\n        banshare_node_extra_trusted_keys: ['rotated ed25519 not-a-key']\n";
    let (ok, output) = run_local_play("extra-key", play);
    assert!(!ok, "a malformed extra trusted key was accepted:\n{output}");
    assert!(
        output.contains("banshare_node_extra_trusted_keys")
            && output.contains("rotated ed25519 not-a-key")
            && output.contains("changed=0"),
        "the refusal does not name the variable and its bad line, or came after a change:\n{output}"
    );
}

/// review14b M5: sshd reads authorized_keys only at login, so the file
/// server role ends the account's sessions when a key line went (a node
/// removed, a key revoked or narrowed), and only then: a node joining
/// must not drop every node's session.
#[test]
fn fileserver_role_ends_sessions_only_when_a_key_goes() {
    let filters = format!("{ANSIBLE_DIR}/roles/banshare_fileserver/filter_plugins");
    let script = "import banshare_authorized_keys as b\n\
                  old = '# managed\\nrestrict ssh-ed25519 AAA1 banshare@node1\\nrestrict ssh-ed25519 AAA2 banshare@node2\\n'\n\
                  cases = [\n\
                  {'changed': True, 'diff': [{'before': old, 'after': old + 'restrict ssh-ed25519 AAA3 banshare@node3\\n'}]},\n\
                  {'changed': True, 'diff': [{'before': old, 'after': '# managed\\nrestrict ssh-ed25519 AAA1 banshare@node1\\n'}]},\n\
                  {'changed': True, 'diff': [{'before': old, 'after': old.replace('restrict ssh', 'restrict,from=\"192.0.2.2\" ssh', 1)}]},\n\
                  {'changed': True, 'diff': [{'before': '', 'after': old}]},\n\
                  {'changed': True, 'diff': {}},\n\
                  {'changed': False},\n\
                  ]\n\
                  print([b.banshare_keys_dropped(c) for c in cases])\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .env("PYTHONPATH", &filters)
        .output()
        .expect("run python3");
    let output = text(&out);
    assert!(
        out.status.success(),
        "the file server role has no filter telling a removed key:\n{output}"
    );
    assert_eq!(
        output.trim(),
        "[False, True, True, False, True, False]",
        "which authorized_keys rewrites end the account's sessions (added, removed, narrowed, \
         first, no diff text, unchanged)"
    );
}

/// review14b L5: the example inventory takes the .deb packaging/build-deb
/// made only when it is the one in target/debian: with several, a
/// text sort would pick 0.9.0 over 0.10.0, so the value names them and
/// asks for one instead.
#[test]
fn example_inventory_refuses_to_guess_among_several_debs() {
    let dir = std::env::temp_dir().join(format!("banshare-ansible-debs-{}", std::process::id()));
    let debs = dir.join("target/debian");
    std::fs::create_dir_all(&debs).unwrap();
    std::fs::create_dir_all(dir.join("ansible")).unwrap();
    for version in ["0.9.0", "0.10.0"] {
        std::fs::write(debs.join(format!("banshare_{version}-1_amd64.deb")), "").unwrap();
    }
    let playbook_dir = dir.join("ansible");
    let out = run_in_ansible_dir(
        "ansible",
        &[
            "web1.example.org",
            "-i",
            "inventory/example/hosts.yml",
            "--playbook-dir",
            playbook_dir.to_str().unwrap(),
            "-m",
            "ansible.builtin.debug",
            "-a",
            "var=banshare_package_deb",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert!(
        !output.contains("banshare_0.9.0-1_amd64.deb\"") && output.contains("several banshare_"),
        "with 0.9.0 and 0.10.0 built, the example inventory picked one instead of asking:\n{output}"
    );
}

/// Runs `play` with `ansible-playbook --check` and `inventory` (a YAML
/// inventory's text) on the local host, with the roles of ansible/ and
/// `extra` as `--extra-vars` (JSON, or empty); returns whether it
/// succeeded and its output.
fn run_play_with_inventory(name: &str, inventory: &str, play: &str, extra: &str) -> (bool, String) {
    let mut args = vec!["--check", "-i", "hosts.yml"];
    if !extra.is_empty() {
        args.extend(["--extra-vars", extra]);
    }
    run_play(name, play, &args, Some(inventory))
}

/// The `fatal:`/`failed:` lines of a run's output.
fn failure_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.starts_with("fatal: ") || l.starts_with("failed: "))
        .collect()
}

const LOCAL_INVENTORY: &str = "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n";

/// review14c: ssh takes the FIRST value it is given for an option, and
/// sshfs hands the fstab options to ssh in their order. The role puts
/// `banshare_node_sshfs_options` before its own `UserKnownHostsFile=` and
/// `StrictHostKeyChecking=yes`, so a `StrictHostKeyChecking=no` there (as
/// in the seed playbook's fstab line, which an administrator migrating
/// from it pastes) is the one in force: the pinned host key is not
/// checked, silently. Either the role refuses such a list by name, before
/// any change, or the options it writes keep host key checking on.
#[test]
fn node_role_keeps_host_key_checking_whatever_the_sshfs_options() {
    let options = r#"["reconnect", "allow_other", "StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"]"#;
    let play = "- name: A node whose sshfs options turn host key checking off\n  hosts: localhost\n  \
                gather_facts: false\n  roles:\n    - role: banshare_node\n";
    let (ok, output) = run_play_with_inventory(
        "sshfs-options",
        LOCAL_INVENTORY,
        play,
        &format!(r#"{{"banshare_node_sshfs_options": {options}}}"#),
    );
    let refused = !ok
        && output.contains("changed=0")
        && failure_lines(&output)
            .iter()
            .any(|l| l.contains("banshare_node_sshfs_options"));
    if refused {
        return;
    }
    // Not refused: what the role writes to fstab must still check the key.
    let play = format!(
        "- name: The sshfs options the node role writes to fstab\n  hosts: localhost\n  \
         gather_facts: false\n  vars_files:\n    - {ANSIBLE_DIR}/roles/banshare_node/defaults/main.yml\n    \
         - {ANSIBLE_DIR}/roles/banshare_node/vars/main.yml\n  tasks:\n    - name: Print them\n      \
         ansible.builtin.debug:\n        msg: \"OPTIONS={{{{ banshare_node_sshfs_all_options | join(',') }}}}\"\n"
    );
    let (ok, rendered) = run_play_with_inventory(
        "sshfs-options-rendered",
        LOCAL_INVENTORY,
        &play,
        &format!(
            r#"{{"banshare_node_endpoint": {{"port": 22}}, "banshare_node_sshfs_options": {options}}}"#
        ),
    );
    assert!(ok, "{rendered}");
    let line = rendered
        .lines()
        .find_map(|l| {
            l.split_once("OPTIONS=")
                .map(|(_, o)| o.trim_end_matches('"'))
        })
        .unwrap_or_else(|| panic!("no OPTIONS= line:\n{rendered}"));
    // sshfs passes ssh's options (CamelCase) to ssh, in order; the rest
    // (reconnect, allow_other, _netdev) are its own or FUSE's.
    let mut ssh = Command::new("ssh");
    ssh.arg("-G");
    for option in line
        .split(',')
        .filter(|o| o.starts_with(|c: char| c.is_ascii_uppercase()))
    {
        ssh.arg(format!("-o{option}"));
    }
    let effective = ssh.arg("files.invalid").output().expect("run ssh -G");
    let effective = text(&effective);
    assert!(
        effective.contains("\nstricthostkeychecking true\n")
            && effective.contains("\nuserknownhostsfile /etc/banshare/known_hosts\n"),
        "banshare_node_sshfs_options {options} was accepted, and the fstab options it gives \
         ({line}) turn ssh's host key checking off (ssh takes the first value):\n{}",
        effective
            .lines()
            .filter(
                |l| l.starts_with("stricthostkeychecking") || l.starts_with("userknownhostsfile")
            )
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// review14c: the file server role and the node role both write
/// /etc/banshare/banshare.toml (banshare_fileserver_config and
/// banshare_node_config have one default), with different contents. A
/// host in both groups (the file server banning too: docs/deploy.md's
/// "local path" row) gets each in turn: never `changed=0`, the watcher
/// restarted on every run, and the compaction timer reading the node's
/// configuration. Nothing refuses it. The first task to run on a node (the
/// keys entry point, play 1) must refuse it, naming the file server's
/// group, before any change.
#[test]
fn a_host_both_file_server_and_node_is_refused_before_any_change() {
    let inventory = "all:\n  children:\n    banshare_fileserver:\n      hosts:\n        both:\n          \
                     ansible_connection: local\n    banshare_nodes:\n      hosts:\n        both:\n";
    let play = "- name: A host that is both the file server and a node\n  hosts: banshare_nodes\n  \
                gather_facts: false\n  tasks:\n    - name: The node role's first entry point\n      \
                ansible.builtin.include_role:\n        name: banshare_node\n        tasks_from: keys\n";
    let (ok, output) = run_play_with_inventory("both-groups", inventory, play, "");
    assert!(
        !ok && output.contains("changed=0")
            && failure_lines(&output)
                .iter()
                .any(|l| l.contains("banshare_fileserver")),
        "a host in both banshare_fileserver and banshare_nodes was not refused by name before \
         any change (both roles write /etc/banshare/banshare.toml):\n{output}"
    );
}

/// review14c: with `banshare_package_url`, every host downloads the .deb
/// and installs it as root, over plain HTTP if the URL says so, with no
/// checksum (the role has no variable for one): whoever is on the path
/// gets root on every node and the file server. A plain-HTTP URL with no
/// checksum to check must be refused by name before anything is fetched.
#[test]
fn package_role_refuses_an_unauthenticated_package_url() {
    let play = "- name: A package from a plain-HTTP URL with no checksum\n  hosts: localhost\n  \
                gather_facts: false\n  roles:\n    - role: banshare_package\n      vars:\n        \
                banshare_package_url: http://127.0.0.1:9/banshare_0.2.0-1_amd64.deb\n";
    let (ok, output) = run_play_with_inventory("package-url", LOCAL_INVENTORY, play, "");
    assert!(
        !ok && !output.contains("Failure downloading")
            && failure_lines(&output)
                .iter()
                .any(|l| l.contains("banshare_package_url")),
        "a plain-HTTP banshare_package_url with no checksum was fetched (to be installed as \
         root) instead of refused by name:\n{output}"
    );
}

/// review14c: the file server role ends a removed node's sessions with
/// `pkill --euid banshare --exact sshd`, which matches the post-login
/// process of OpenSSH up to 9.7 (Debian 12: `sshd`). From OpenSSH 9.8 on
/// (Debian 13, the stable release since August 2025) that process is
/// `sshd-session`: the command matches nothing, exits 1, which the task
/// takes for "no session open", and the removed node keeps its write
/// access to the log while the run reports success. The task's command,
/// with `pgrep` for `pkill` (the same matching), must find a process of
/// the account under either name.
#[test]
fn fileserver_role_ends_sessions_of_sshd_session_too() {
    let tasks = format!("{ANSIBLE_DIR}/roles/banshare_fileserver/tasks/sshd.yml");
    let script = "import json, sys, yaml\n\
                  tasks = yaml.safe_load(open(sys.argv[1]))\n\
                  task = [t for t in tasks if t['name'].startswith(\"End the account's open sessions\")][0]\n\
                  print(json.dumps(task['ansible.builtin.command']['argv']))\n";
    let out = Command::new("python3")
        .args(["-c", script, &tasks])
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{}", text(&out));
    let argv: Vec<String> = serde_json::from_slice(&out.stdout).expect("the task's argv");
    assert_eq!(argv[0], "pkill", "the task no longer runs pkill: {argv:?}");
    let argv: Vec<String> = argv[1..]
        .iter()
        .map(|a| a.replace("{{ banshare_fileserver_user }}", "nobody"))
        .collect();

    // One process of the account under each name, as sshd runs them.
    let dir = tempfile::Builder::new()
        .prefix("banshare-sshd-names-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut sessions = Vec::new();
    for name in ["sshd", "sshd-session"] {
        let path = dir.path().join(name);
        std::fs::copy("/bin/sleep", &path).unwrap();
        let child = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(&path)
            .arg("300")
            .spawn()
            .expect("run setpriv");
        sessions.push((name, child));
    }
    // Each has exec'd its own name once /proc says so.
    for (name, child) in &sessions {
        let comm = format!("/proc/{}/comm", child.id());
        let named = (0..100).any(|_| {
            let now = std::fs::read_to_string(&comm).unwrap_or_default();
            now.trim() == *name || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                false
            }
        });
        assert!(named, "the test's {name} process did not start");
    }
    let found = Command::new("pgrep")
        .args(&argv)
        .output()
        .expect("run pgrep");
    let found = String::from_utf8_lossy(&found.stdout).into_owned();
    let matched: Vec<(&str, bool)> = sessions
        .iter()
        .map(|(name, child)| {
            (
                *name,
                found
                    .lines()
                    .any(|pid| pid.trim() == child.id().to_string()),
            )
        })
        .collect();
    for (_, child) in &mut sessions {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(
        matched,
        [("sshd", true), ("sshd-session", true)],
        "`pkill {}` misses the account's post-login sshd process under one of its names \
         (OpenSSH >= 9.8, Debian 13: sshd-session)",
        argv.join(" ")
    );
}

/// The sshfs options the node role writes to fstab with `extra` as
/// `--extra-vars` (JSON), as one comma-separated string.
fn rendered_sshfs_options(name: &str, extra: &str) -> String {
    let play = format!(
        "- name: The sshfs options the node role writes to fstab\n  hosts: localhost\n  \
         gather_facts: false\n  vars_files:\n    - {ANSIBLE_DIR}/roles/banshare_node/defaults/main.yml\n    \
         - {ANSIBLE_DIR}/roles/banshare_node/vars/main.yml\n  tasks:\n    - name: Print them\n      \
         ansible.builtin.debug:\n        msg: \"OPTIONS={{{{ banshare_node_sshfs_all_options | join(',') }}}}\"\n"
    );
    let (ok, rendered) = run_play_with_inventory(name, LOCAL_INVENTORY, &play, extra);
    assert!(ok, "{rendered}");
    rendered
        .lines()
        .find_map(|l| {
            l.split_once("OPTIONS=")
                .map(|(_, o)| o.trim_end_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no OPTIONS= line:\n{rendered}"))
}

/// review14c M1: an administrator overriding `banshare_node_sshfs_options`
/// to add or drop one option must not lose what the role relies on:
/// `reconnect` (a removed node's sessions are ended, the others log in
/// again), attribute caching off (another host's append is otherwise
/// invisible for about 20 s) and `allow_other` (the watcher runs as its
/// own user); and the role's host key options come before the list's, so
/// that ssh (which keeps the first value) uses them.
#[test]
fn node_role_keeps_its_own_sshfs_options_when_the_list_is_overridden() {
    let line = rendered_sshfs_options(
        "sshfs-overridden",
        r#"{"banshare_node_endpoint": {"port": 22}, "banshare_node_sshfs_options": ["ServerAliveInterval=9"]}"#,
    );
    let options: Vec<&str> = line.split(',').collect();
    for required in [
        "reconnect",
        "dir_cache=no",
        "attr_timeout=0",
        "entry_timeout=0",
        "allow_other",
        "ServerAliveInterval=9",
    ] {
        assert!(
            options.contains(&required),
            "banshare_node_sshfs_options [ServerAliveInterval=9] gives fstab options without \
             {required}: {line}"
        );
    }
    let first_of_the_list = options
        .iter()
        .position(|o| *o == "ServerAliveInterval=9")
        .unwrap();
    for forced in [
        "IdentityFile=",
        "UserKnownHostsFile=",
        "StrictHostKeyChecking=yes",
    ] {
        let at = options.iter().position(|o| o.starts_with(forced));
        assert!(
            at.is_some_and(|at| at < first_of_the_list),
            "the role's {forced} is not before banshare_node_sshfs_options: {line}"
        );
    }
}

/// review14c M1: an sshfs option that would undo one the role sets (host
/// key checking, the key, the port, the ssh command, caching back on) is
/// refused by name, before any change, whatever its case.
#[test]
fn node_role_refuses_sshfs_options_undoing_its_own() {
    for bad in [
        "stricthostkeychecking=accept-new",
        "UserKnownHostsFile /dev/null",
        "GlobalKnownHostsFile=/tmp/k",
        "ssh_command=ssh -oStrictHostKeyChecking=no",
        "attr_timeout=20",
        "Port=2222",
    ] {
        let play = "- name: A node whose sshfs options undo the role's\n  hosts: localhost\n  \
                    gather_facts: false\n  roles:\n    - role: banshare_node\n";
        let (ok, output) = run_play_with_inventory(
            "sshfs-undo",
            LOCAL_INVENTORY,
            play,
            &format!(r#"{{"banshare_node_sshfs_options": ["reconnect", "{bad}"]}}"#),
        );
        assert!(
            !ok && output.contains("changed=0")
                && failure_lines(&output)
                    .iter()
                    .any(|l| l.contains("banshare_node_sshfs_options") && l.contains(bad)),
            "banshare_node_sshfs_options with {bad} was not refused by name before any change:\n{output}"
        );
    }
}

/// review14c L3: an IPv6 address would give a malformed sftp:// URL and
/// sshfs source (no brackets). The file server role refuses it by name,
/// before any change, and says what to give instead.
#[test]
fn fileserver_role_refuses_an_ipv6_address() {
    let play = "- name: A file server reached by an IPv6 address\n  hosts: localhost\n  \
                gather_facts: false\n  roles:\n    - role: banshare_fileserver\n      vars:\n        \
                banshare_fileserver_address: \"2001:db8::1\"\n";
    let (ok, output) = run_play_with_inventory("ipv6", LOCAL_INVENTORY, play, "");
    assert!(
        !ok && output.contains("changed=0")
            && failure_lines(&output)
                .iter()
                .any(|l| l.contains("banshare_fileserver_address") && l.contains("2001:db8::1")),
        "an IPv6 banshare_fileserver_address was not refused by name before any change:\n{output}"
    );
}

/// review14c M3: the SHA-256 the downloaded .deb is checked against must
/// be 64 hex digits: anything else is refused by name, before anything is
/// fetched.
#[test]
fn package_role_checks_the_package_url_sha256() {
    let play = |sha: &str| {
        format!(
            "- name: A package from a URL\n  hosts: localhost\n  gather_facts: false\n  roles:\n    \
             - role: banshare_package\n      vars:\n        \
             banshare_package_url: http://127.0.0.1:9/banshare_0.2.0-1_amd64.deb\n        \
             banshare_package_sha256: \"{sha}\"\n        \
             banshare_package_cache_dir: /tmp/banshare-lint-package-{}\n",
            std::process::id()
        )
    };
    let (ok, output) =
        run_play_with_inventory("package-sha-bad", LOCAL_INVENTORY, &play("abc"), "");
    assert!(
        !ok && output.contains("changed=0")
            && !output.contains("Failure downloading")
            && failure_lines(&output)
                .iter()
                .any(|l| l.contains("banshare_package_sha256")),
        "a malformed banshare_package_sha256 was not refused by name:\n{output}"
    );
}

/// The administrator's configuration `banshare_node` writes on the node of
/// `banshare_node_nats_init`, rendered with `extra` as `--extra-vars`
/// (JSON); the role's defaults and variables as on a node.
fn rendered_nats_admin_config(name: &str, extra: &str) -> String {
    rendered_template(name, "banshare_node", "nats-admin.toml.j2", extra)
}

/// Role `role`'s template `template`, rendered with `extra` as
/// `--extra-vars` (JSON) and the role's defaults and variables.
fn rendered_template(name: &str, role: &str, template: &str, extra: &str) -> String {
    use base64::Engine as _;
    let role = format!("{ANSIBLE_DIR}/roles/{role}");
    let play = format!(
        "- name: Render {template}\n  hosts: localhost\n  \
         gather_facts: false\n  vars_files:\n    - {role}/defaults/main.yml\n    \
         - {role}/vars/main.yml\n  tasks:\n    - name: Print it\n      \
         ansible.builtin.debug:\n        msg: \"CONFIG={{{{ lookup('ansible.builtin.template', \
         '{role}/templates/{template}') | b64encode }}}}\"\n"
    );
    let (ok, output) = run_play_with_inventory(name, LOCAL_INVENTORY, &play, extra);
    assert!(ok, "{output}");
    let encoded = output
        .lines()
        .find_map(|l| {
            l.split_once("CONFIG=")
                .map(|(_, c)| c.trim_end_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no CONFIG= line:\n{output}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// review18 H1: the stream's compaction (the packaged timer on the node of
/// `banshare_node_nats_init`) reads the administrator's configuration, not
/// banshare.toml: without the cluster's `max_bantime` there it compacts by
/// the default (a week), and deletes a ban of a longer bantime still in
/// force under `banshare_node_max_bantime`: a node that joins, or catches
/// up from the start, never applies it.
#[test]
fn nats_admin_config_compacts_by_the_clusters_max_bantime_and_trusted_keys() {
    let banshare = env!("CARGO_BIN_EXE_banshare");
    let dir = std::env::temp_dir().join(format!("banshare-nats-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = dir.join("nats-admin.nkey");
    let made = Command::new(banshare)
        .args(["nats", "keygen", "--out"])
        .arg(&seed)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let trusted = dir.join("trusted-keys");
    let signer = Command::new(banshare)
        .args(["--config", "/dev/null", "keygen", "--node", "node1"])
        .arg("--out")
        .arg(dir.join("node.key"))
        .output()
        .unwrap();
    assert!(signer.status.success(), "{}", text(&signer));
    std::fs::write(&trusted, &signer.stdout).unwrap();
    let extra = serde_json::json!({
        "banshare_node_id": "node1",
        "banshare_node_log": "nats://198.51.100.1/BANS",
        "banshare_node_nats_admin_nkey": seed,
        "banshare_node_max_bantime": "30d",
        "banshare_node_trusted_keys": trusted,
    });
    let config = rendered_nats_admin_config("nats-admin-max-bantime", &extra.to_string());
    let path = dir.join("nats-admin.toml");
    std::fs::write(&path, &config).unwrap();
    // The effective configuration, as `compact` reads it (exit 2: no
    // backend, which compaction does not need).
    let out = Command::new(banshare)
        .arg("--config")
        .arg(&path)
        .args(["config", "check"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let effective = text(&out);
    assert!(
        effective.contains("max_bantime = \"30days\""),
        "banshare_node_max_bantime: 30d, but the administrator's configuration the stream's \
         compaction reads has another max_bantime:\n{config}\n---\n{effective}"
    );
    // review18: nor the nodes' trusted keys, so it took every signature on
    // trust: a forged unban erased the ban it names from the stream.
    let keys = format!("keys = {:?}", trusted.display().to_string());
    assert!(
        effective.contains(&keys),
        "the administrator's configuration has not the nodes' trusted keys ({keys}):\n\
         {config}\n---\n{effective}"
    );
}

/// review18 M2: banshare_nats makes the operator's TLS key readable by the
/// nats group, but a folder on the way closed to the nats user (Debian's
/// /etc/ssl/private, root:ssl-cert 0710) still keeps nats-server from
/// reading it: the role went on, nats-server failed to start, and the wait
/// for its port timed out without saying why. The role now refuses,
/// naming the file. Needs Debian's nats-server package (its nats user).
#[test]
fn nats_role_refuses_a_tls_key_nats_server_cannot_read() {
    use std::os::unix::fs::PermissionsExt;
    let nats_gid = std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("nats:")
                .map(|r| r.split(':').nth(1).unwrap().to_owned())
        })
        .expect("a nats group: install Debian's nats-server package (.ci/install-deps)");
    let top = tempfile::tempdir().unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let closed = top.path().join("private");
    std::fs::create_dir(&closed).unwrap();
    // As the role leaves them, so that it changes nothing (no restart).
    let cert = closed.join("server.pem");
    let key = closed.join("server.key");
    for (path, mode) in [(&cert, 0o644), (&key, 0o640)] {
        std::fs::write(path, "x\n").unwrap();
        let chgrp = Command::new("chgrp")
            .arg(&nats_gid)
            .arg(path)
            .output()
            .unwrap();
        assert!(chgrp.status.success(), "{}", text(&chgrp));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let play = format!(
        "- name: The NATS server's TLS files\n  hosts: localhost\n  gather_facts: false\n  \
         tasks:\n    - name: Run the role's TLS tasks\n      ansible.builtin.include_role:\n        \
         name: banshare_nats\n        tasks_from: tls\n      vars:\n        \
         banshare_nats_tls_cert: {}\n        banshare_nats_tls_key: {}\n",
        cert.display(),
        key.display()
    );
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o710)).unwrap();
    let (ok, output) = run_local_play_for_real("nats-tls-closed", &play);
    assert!(
        !ok && output.contains("cannot read") && output.contains(&key.display().to_string()),
        "a key in a folder closed to nats (0710 root:root) was not refused by name:\n{output}"
    );
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, output) = run_local_play_for_real("nats-tls-open", &play);
    assert!(ok, "{output}");
}

/// review18 L3: one PEM file with both the certificate and the key (which
/// nats-server accepts as both `cert_file` and `key_file`) was made 0644
/// as the certificate, then 0640 as the key, on every run: the key
/// world-readable in between, the run never changed=0, nats-server
/// restarted each time. Refused before any change.
#[test]
fn nats_role_refuses_one_file_as_certificate_and_key() {
    let play = "- name: One file as the NATS server's certificate and key\n  hosts: localhost\n  \
                connection: local\n  gather_facts: false\n  roles:\n    - role: banshare_nats\n      \
                banshare_nats_tls_cert: /etc/nats/both.pem\n      \
                banshare_nats_tls_key: /etc/nats/both.pem\n";
    let (ok, output) = run_local_play("nats-tls-one-file", play);
    assert!(
        !ok && output.contains("banshare_nats_tls_key a file of its own"),
        "one file as both the certificate and the key was not refused by name:\n{output}"
    );
    assert!(
        output.contains("changed=0"),
        "a task changed something first:\n{output}"
    );
}

/// The configuration `banshare_nats` writes, rendered with `extra` as
/// `--extra-vars` (JSON); the role's defaults and variables as on a server.
fn rendered_nats_server_config(name: &str, extra: &str) -> String {
    rendered_template(name, "banshare_nats", "nats-server.conf.j2", extra)
}

/// review19 H2: the servers' route port took any server that reached it
/// (no route authorization): one of an attacker's, routed in, declared
/// banshare's account with a user of its own and published into the
/// stream. With routes, the role refuses to run without a route password
/// (or with a short one), by name, before any change; with one, every
/// route and the cluster's authorization carry it, and nats-server takes
/// the configuration.
#[test]
fn nats_role_requires_a_route_password_and_writes_it_into_the_routes() {
    let routes = r#"["nats-route://192.0.2.32:6222", "nats-route://192.0.2.33:6222"]"#;
    for (case, password) in [("none", None), ("short", Some("0123456789abcdef"))] {
        let mut play = format!(
            "- name: NATS routes, route password {case}\n  hosts: localhost\n  \
             connection: local\n  gather_facts: false\n  roles:\n    - role: banshare_nats\n      \
             banshare_nats_routes: {routes}\n"
        );
        if let Some(password) = password {
            play += &format!("      banshare_nats_route_password: \"{password}\"\n");
        }
        let (ok, output) = run_local_play(&format!("nats-route-password-{case}"), &play);
        assert!(
            !ok && failure_lines(&output)
                .iter()
                .any(|l| l.contains("banshare_nats_route_password")),
            "routes with route password {case} were not refused by the variable's name:\n{output}"
        );
        assert!(
            output.contains("changed=0"),
            "a task changed something first:\n{output}"
        );
    }

    let password = "3f9c2a7e1b8d4c6a0e5f7b9d2c4a6e8f0b1d3c5e7a9f2b4d";
    let extra = serde_json::json!({
        "banshare_nats_routes": ["nats-route://192.0.2.32:6222", "nats-route://192.0.2.33:6222"],
        "banshare_nats_route_password": password,
    });
    let config = rendered_nats_server_config("nats-route-password", &extra.to_string());
    for expected in [
        format!("password: \"{password}\""),
        format!("nats-route://banshare-route:{password}@192.0.2.32:6222"),
        format!("nats-route://banshare-route:{password}@192.0.2.33:6222"),
    ] {
        assert!(
            config.contains(&expected),
            "the rendered configuration lacks {expected:?}:\n{config}"
        );
    }
    assert!(
        !config.contains("\"nats-route://192.0.2"),
        "a route without the password:\n{config}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nats-server.conf");
    std::fs::write(&path, &config).unwrap();
    let checked = Command::new("/usr/sbin/nats-server")
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run /usr/sbin/nats-server (Debian package nats-server)");
    assert!(
        checked.status.success(),
        "nats-server -t refused the rendered configuration:\n{}\n{config}",
        text(&checked)
    );
}
