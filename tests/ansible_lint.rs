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
        output.contains("value of banshare_node_access must be one of: sshfs, sftp, got: nfs"),
        "the refusal does not name the variable and its choices:\n{output}"
    );
    assert!(
        output.contains("ok=0") && output.contains("changed=0"),
        "a task ran before the refusal:\n{output}"
    );
}
