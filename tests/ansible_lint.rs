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
    let dir = std::env::temp_dir().join(format!("banshare-ansible-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("play.yml");
    std::fs::write(&path, play).unwrap();
    let out = Command::new("ansible-playbook")
        .args(["--check", "-i", "localhost,"])
        .arg(&path)
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
