//! The command backend: runs the administrator's own program for bans and
//! unbans, from argv templates. No shell is involved: each template element
//! becomes exactly one argument, with placeholders replaced by the record's
//! values, which the record parser has already checked (addresses, port
//! specs, jail names: no spaces, quotes, `;` or `$` can occur in them, and
//! they would be harmless anyway).
//!
//! ```toml
//! [command]
//! ban   = ["/usr/local/sbin/ban",   "--jail={jail}", "{bantime}", "{ips}"]
//! unban = ["/usr/local/sbin/unban", "--jail={jail}", "{ips}"]
//! ```
//!
//! | placeholder | value |
//! |---|---|
//! | `{ip}` | the address or network (`192.0.2.7`, `2001:db8::/48`), one process per record |
//! | `{ips}` | must be a whole element: one argument per address, one process per group |
//! | `{port}` | the port spec as the record gives it (`22`, `80,443`, `0:65535`, `ssh`) |
//! | `{jail}` | the record's jail; empty when the record has none |
//! | `{bantime}` | seconds remaining (rounded up), or `permanent`; ban template only |
//! | `{{`, `}}` | a literal `{`, `}` |
//!
//! The program must be an absolute path. A template has `{ip}` or `{ips}`,
//! not both, and no other placeholders than these.
//!
//! **Batch templates** (`{ips}`) run one process per group of actions whose
//! other arguments come out the same (same operation, and the same port,
//! jail and bantime where the template uses them), with at most [`CHUNK`]
//! addresses each: 2,500 bans alike take 3 processes. **Per-record
//! templates** (`{ip}`) run one process per action, so a storm of 10,000
//! bans spawns 10,000 processes, one after another: use `{ips}`.
//!
//! Whatever the grouping, the actions for one address run in the batch's
//! order. A failing process does not stop the others; `apply` reports the
//! failures afterwards. Each process has the backend's timeout.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::exec::{Exec, message_text};
use super::{Action, Backend, BackendError, short, timeout_secs};
use crate::record::Target;

/// The most addresses per process of a batch template.
pub const CHUNK: usize = 1000;

/// Settings for [`CommandBackend`]: the two templates, both required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ban: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unban: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    Ip,
    Port,
    Jail,
    Bantime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value(Placeholder),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg {
    Pieces(Vec<Piece>),
    /// `{ips}`: one argument per address.
    Ips,
}

/// A checked argv template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    program: String,
    args: Vec<Arg>,
    batch: bool,
}

impl Template {
    /// Checks and parses `argv`; `what` names it in errors.
    pub fn parse(
        what: &str,
        argv: &[String],
        allow_bantime: bool,
    ) -> Result<Template, BackendError> {
        let bad =
            |msg: String| BackendError::Config(format!("command backend: {what} template: {msg}"));
        let (program, rest) = argv.split_first().ok_or_else(|| bad("is empty".into()))?;
        if !program.starts_with('/') || program.contains('{') || program.contains('}') {
            return Err(bad(format!(
                "the program {:?} must be an absolute path, without placeholders",
                short(program)
            )));
        }
        let mut args = Vec::with_capacity(rest.len());
        let (mut ip, mut ips) = (false, 0);
        for arg in rest {
            if arg == "{ips}" {
                ips += 1;
                args.push(Arg::Ips);
                continue;
            }
            let pieces =
                parse_arg(arg).map_err(|m| bad(format!("argument {:?}: {m}", short(arg))))?;
            for piece in &pieces {
                match piece {
                    Piece::Value(Placeholder::Ip) => ip = true,
                    Piece::Value(Placeholder::Bantime) if !allow_bantime => {
                        return Err(bad("{bantime} is only for the ban template".into()));
                    }
                    _ => {}
                }
            }
            args.push(Arg::Pieces(pieces));
        }
        match (ip, ips) {
            (true, 0) | (false, 1) => {}
            (true, _) => {
                return Err(bad(
                    "use {ip} (one process per record) or {ips} (batches), not both".into(),
                ));
            }
            (false, 0) => return Err(bad("needs {ip} or {ips}".into())),
            (false, _) => return Err(bad("{ips} may appear only once".into())),
        }
        Ok(Template {
            program: program.clone(),
            args,
            batch: ips == 1,
        })
    }

    /// Whether this is a batch (`{ips}`) template.
    pub fn is_batch(&self) -> bool {
        self.batch
    }

    /// The argv for `values`, with `None` where `{ips}` goes.
    fn render(&self, values: &Values) -> Vec<Option<String>> {
        let mut out = vec![Some(self.program.clone())];
        for arg in &self.args {
            out.push(match arg {
                Arg::Ips => None,
                Arg::Pieces(pieces) => Some(
                    pieces
                        .iter()
                        .map(|p| match p {
                            Piece::Text(t) => t.as_str(),
                            Piece::Value(Placeholder::Ip) => &values.ip,
                            Piece::Value(Placeholder::Port) => &values.port,
                            Piece::Value(Placeholder::Jail) => &values.jail,
                            Piece::Value(Placeholder::Bantime) => &values.bantime,
                        })
                        .collect(),
                ),
            });
        }
        out
    }
}

/// One argument: text with `{name}` placeholders, `{{` and `}}` escapes.
fn parse_arg(arg: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '}' => return Err("a lone '}' (write '}}' for a literal one)".into()),
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) if name.len() < 16 => name.push(c),
                        _ => return Err("an unclosed '{' (write '{{' for a literal one)".into()),
                    }
                }
                let placeholder = match name.as_str() {
                    "ip" => Placeholder::Ip,
                    "port" => Placeholder::Port,
                    "jail" => Placeholder::Jail,
                    "bantime" => Placeholder::Bantime,
                    "ips" => return Err("{ips} must be a whole argument".into()),
                    other => {
                        return Err(format!(
                            "unknown placeholder {{{other}}} (known: ip, ips, port, jail, bantime)"
                        ));
                    }
                };
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Value(placeholder));
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// An action's values, as text.
struct Values {
    ip: String,
    port: String,
    jail: String,
    bantime: String,
}

impl Values {
    fn of(action: &Action) -> Values {
        let (target, ports, jail, bantime) = match action {
            Action::Ban(b) => (
                b.target,
                &b.ports,
                &b.jail,
                b.remaining
                    .map_or_else(|| "permanent".to_owned(), |r| timeout_secs(r).to_string()),
            ),
            Action::Unban(u) => (u.target, &u.ports, &u.jail, String::new()),
        };
        Values {
            ip: target.to_string(),
            port: ports.to_string(),
            jail: jail.as_ref().map(|j| j.to_string()).unwrap_or_default(),
            bantime,
        }
    }
}

pub struct CommandBackend {
    ban: Template,
    unban: Template,
    exec: Exec,
}

/// A batch template's pending process: its argv with a hole for `{ips}`.
struct Group {
    argv: Vec<Option<String>>,
    ips: Vec<String>,
}

impl Group {
    fn argv(self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.argv.len() + self.ips.len());
        let mut ips = Some(self.ips);
        for arg in self.argv {
            match arg {
                Some(a) => out.push(a),
                None => out.extend(ips.take().unwrap_or_default()),
            }
        }
        out
    }
}

impl CommandBackend {
    pub fn new(settings: &CommandSettings, exec: Exec) -> Result<CommandBackend, BackendError> {
        let (Some(ban), Some(unban)) = (&settings.ban, &settings.unban) else {
            return Err(BackendError::Config(
                "command backend: set both the ban and the unban template".into(),
            ));
        };
        Ok(CommandBackend {
            ban: Template::parse("ban", ban, true)?,
            unban: Template::parse("unban", unban, false)?,
            exec: Exec {
                c_locale: false,
                ..exec
            },
        })
    }

    /// The processes to run for a batch, in order.
    ///
    /// Batch templates collect addresses into groups by their rendered
    /// argv. Before an action joins a group, if its address is already
    /// waiting in a different group, every waiting group is emitted first,
    /// so that the actions for one address keep their order.
    pub fn plan(&self, batch: &[Action]) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut by_argv: HashMap<Vec<Option<String>>, usize> = HashMap::new();
        let mut waiting: HashMap<Target, usize> = HashMap::new();

        fn flush(
            out: &mut Vec<Vec<String>>,
            groups: &mut Vec<Group>,
            by_argv: &mut HashMap<Vec<Option<String>>, usize>,
            waiting: &mut HashMap<Target, usize>,
        ) {
            out.extend(
                groups
                    .drain(..)
                    .filter(|g| !g.ips.is_empty())
                    .map(Group::argv),
            );
            by_argv.clear();
            waiting.clear();
        }

        for action in batch {
            let template = match action {
                Action::Ban(_) => &self.ban,
                Action::Unban(_) => &self.unban,
            };
            let values = Values::of(action);
            let argv = template.render(&values);
            let target = action.target();
            let group = by_argv.get(&argv).copied();
            if let Some(&at) = waiting.get(&target) {
                if Some(at) == group {
                    // The same process would get the same address again.
                    continue;
                }
                flush(&mut out, &mut groups, &mut by_argv, &mut waiting);
            }
            if !template.batch {
                out.push(argv.into_iter().map(Option::unwrap_or_default).collect());
                continue;
            }
            let at = match by_argv.get(&argv) {
                Some(&at) => at,
                None => {
                    groups.push(Group {
                        argv: argv.clone(),
                        ips: Vec::new(),
                    });
                    by_argv.insert(argv, groups.len() - 1);
                    groups.len() - 1
                }
            };
            groups[at].ips.push(values.ip);
            waiting.insert(target, at);
            if groups[at].ips.len() == CHUNK {
                // Full: run it now, and start afresh for this argv. Its
                // addresses wait nowhere else, so the order holds.
                let full = Group {
                    argv: groups[at].argv.clone(),
                    ips: std::mem::take(&mut groups[at].ips),
                };
                out.push(full.argv());
                waiting.retain(|_, g| *g != at);
            }
        }
        flush(&mut out, &mut groups, &mut by_argv, &mut waiting);
        out
    }
}

impl Backend for CommandBackend {
    fn name(&self) -> &'static str {
        "command"
    }

    fn setup(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    fn apply(&mut self, batch: &[Action]) -> Result<(), BackendError> {
        let plan = self.plan(batch);
        let mut errors = Vec::new();
        for argv in &plan {
            if let Err(e) = self.exec.run(argv, None) {
                errors.push(e.to_string());
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        // The first few failures say enough.
        Err(BackendError::Failed {
            program: plan[0][0].clone(),
            status: format!("{} of {} processes failed", errors.len(), plan.len()),
            stderr: message_text(&errors[..errors.len().min(5)].join("; ")),
        })
    }

    fn cleanup(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Ban;
    use super::super::testing::{ban, unban, with_jail_port};
    use super::*;
    use std::time::Duration;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn backend(ban: &[&str], unban: &[&str]) -> CommandBackend {
        CommandBackend::new(
            &CommandSettings {
                ban: Some(argv(ban)),
                unban: Some(argv(unban)),
            },
            Exec::default(),
        )
        .unwrap()
    }

    #[test]
    fn template_checks() {
        let check = |t: &[&str]| Template::parse("ban", &argv(t), true);
        assert!(check(&["/bin/b", "{ips}"]).unwrap().is_batch());
        assert!(
            !check(&["/bin/b", "--ip={ip}", "{port}", "{jail}", "{bantime}"])
                .unwrap()
                .is_batch()
        );
        assert!(check(&["/bin/b", "{{literal}}", "{ips}"]).is_ok());
        for bad in [
            &[][..],
            &["b", "{ips}"],
            &["/bin/{jail}", "{ips}"],
            &["/bin/b"],
            &["/bin/b", "{jail}"],
            &["/bin/b", "{ip}", "{ips}"],
            &["/bin/b", "{ips}", "{ips}"],
            &["/bin/b", "x{ips}"],
            &["/bin/b", "{ip}", "{host}"],
            &["/bin/b", "{ip", "x"],
            &["/bin/b", "{ip}}"],
            &["/bin/b", "{IP}"],
        ] {
            assert!(
                matches!(check(bad), Err(BackendError::Config(_))),
                "{bad:?}"
            );
        }
        assert!(Template::parse("unban", &argv(&["/bin/u", "{bantime}", "{ips}"]), false).is_err());
    }

    #[test]
    fn per_record_argv() {
        let b = backend(
            &[
                "/bin/ban",
                "--ip={ip}",
                "{port}",
                "{jail}",
                "{bantime}",
                "{{x}}",
                "$(id);",
            ],
            &["/bin/unban", "{ip}", "{jail}"],
        );
        let batch = [
            with_jail_port(ban("192.0.2.7", None), "sshd", "22"),
            Action::Ban(Ban {
                remaining: Some(Duration::from_millis(1_799_500)),
                ..match ban("2001:db8::/48", None) {
                    Action::Ban(b) => b,
                    _ => unreachable!(),
                }
            }),
            unban("192.0.2.7"),
        ];
        assert_eq!(
            b.plan(&batch),
            vec![
                argv(&[
                    "/bin/ban",
                    "--ip=192.0.2.7",
                    "22",
                    "sshd",
                    "permanent",
                    "{x}",
                    "$(id);"
                ]),
                argv(&[
                    "/bin/ban",
                    "--ip=2001:db8::/48",
                    "0:65535",
                    "",
                    "1800",
                    "{x}",
                    "$(id);"
                ]),
                argv(&["/bin/unban", "192.0.2.7", ""]),
            ]
        );
    }

    #[test]
    fn batch_groups_by_rendered_argv() {
        let b = backend(
            &["/bin/ban", "-j", "{jail}", "{ips}", "--"],
            &["/bin/unban", "{ips}"],
        );
        let batch = [
            with_jail_port(ban("192.0.2.1", Some(10)), "sshd", "22"),
            with_jail_port(ban("192.0.2.2", Some(20)), "nginx", "80"),
            with_jail_port(ban("192.0.2.3", Some(30)), "sshd", "2222"),
            unban("192.0.2.9"),
            unban("192.0.2.8"),
        ];
        assert_eq!(
            b.plan(&batch),
            vec![
                argv(&["/bin/ban", "-j", "sshd", "192.0.2.1", "192.0.2.3", "--"]),
                argv(&["/bin/ban", "-j", "nginx", "192.0.2.2", "--"]),
                argv(&["/bin/unban", "192.0.2.9", "192.0.2.8"]),
            ]
        );
    }

    #[test]
    fn order_per_address_holds() {
        let b = backend(&["/bin/ban", "{ips}"], &["/bin/unban", "{ips}"]);
        let batch = [
            ban("192.0.2.1", Some(10)),
            ban("192.0.2.2", Some(10)),
            unban("192.0.2.1"),
            unban("192.0.2.3"),
            ban("192.0.2.1", Some(10)),
            ban("192.0.2.1", Some(10)),
        ];
        assert_eq!(
            b.plan(&batch),
            vec![
                argv(&["/bin/ban", "192.0.2.1", "192.0.2.2"]),
                argv(&["/bin/unban", "192.0.2.1", "192.0.2.3"]),
                argv(&["/bin/ban", "192.0.2.1"]),
            ]
        );
    }

    #[test]
    fn chunks() {
        let b = backend(&["/bin/ban", "{ips}"], &["/bin/unban", "{ips}"]);
        let batch: Vec<Action> = (0..2500)
            .map(|i| ban(&format!("10.0.{}.{}", i / 250, i % 250), Some(60)))
            .collect();
        let sizes: Vec<usize> = b.plan(&batch).iter().map(|a| a.len() - 1).collect();
        assert_eq!(sizes, vec![1000, 1000, 500]);
        // Mixed with per-record unbans, still in order per address.
        let b = backend(&["/bin/ban", "{ips}"], &["/bin/unban", "{ip}"]);
        let plan = b.plan(&[
            ban("192.0.2.1", None),
            unban("192.0.2.2"),
            unban("192.0.2.1"),
        ]);
        assert_eq!(
            plan,
            vec![
                argv(&["/bin/unban", "192.0.2.2"]),
                argv(&["/bin/ban", "192.0.2.1"]),
                argv(&["/bin/unban", "192.0.2.1"]),
            ]
        );
    }

    #[test]
    fn needs_both_templates() {
        let err = CommandBackend::new(
            &CommandSettings {
                ban: Some(argv(&["/bin/b", "{ips}"])),
                unban: None,
            },
            Exec::default(),
        );
        assert!(matches!(err, Err(BackendError::Config(_))));
    }
}
