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
