//! Running external programs for the backends: argv only (never a shell),
//! batch input on stdin, output captured up to a bound, and a deadline
//! after which the program and everything in its process group is killed.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::BackendError;

/// The default deadline for one external call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// By default, keep at most this much of a program's stdout and stderr
/// each; the rest is read and dropped, so that a chatty program can neither
/// block on a full pipe nor fill memory.
pub const DEFAULT_OUTPUT_CAP: usize = 64 * 1024;
/// At most this much of stderr goes into an error message.
const MESSAGE_CAP: usize = 4000;
/// After the program exits, how long to wait for the ends of its output: a
/// child it left running in the background may hold the pipes open.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// How backends run external programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// Put before every command line, e.g. `["ip", "netns", "exec", "test1"]`
    /// to act inside a network namespace. Empty: run the program itself.
    pub prefix: Vec<String>,
    /// Kill a program (and its process group) that runs longer than this.
    pub timeout: Duration,
    /// Run with `LC_ALL=C`, so that error texts are the untranslated ones.
    pub c_locale: bool,
    /// Keep at most this many bytes of stdout, and of stderr.
    pub output_cap: usize,
}

impl Default for Exec {
    fn default() -> Exec {
        Exec {
            prefix: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            c_locale: true,
            output_cap: DEFAULT_OUTPUT_CAP,
        }
    }
}

/// What a program printed, each at most [`Exec::output_cap`] bytes, lossily
/// decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// How a run ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub output: Output,
}

impl Exec {
    pub fn new(prefix: Vec<String>, timeout: Duration) -> Exec {
        Exec {
            prefix,
            timeout,
            ..Exec::default()
        }
    }

    /// Runs `argv` (after the prefix), feeding it `stdin`; a non-zero exit is
    /// a [`BackendError::Failed`] carrying its stderr.
    pub fn run(&self, argv: &[String], stdin: Option<&[u8]>) -> Result<Output, BackendError> {
        let done = self.run_status(argv, stdin)?;
        if done.status.success() {
            Ok(done.output)
        } else {
            Err(failed(argv, &done.status.to_string(), &done.output))
        }
    }

    /// Runs `argv` (after the prefix) and returns how it ended, whatever its
    /// exit status. Errors only when it cannot be started or timed out.
    pub fn run_status(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<Finished, BackendError> {
        let full: Vec<&String> = self.prefix.iter().chain(argv).collect();
        let Some((program, args)) = full.split_first() else {
            return Err(BackendError::Config("empty command line".into()));
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group, so that a timeout kills whatever it started.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        if self.c_locale {
            cmd.env("LC_ALL", "C");
        }
        let mut child = cmd.spawn().map_err(|source| BackendError::Spawn {
            program: program.to_string(),
            source,
        })?;

        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A thread of its own: the program may fill its output pipes
            // before it has read all its input. A program that exits early
            // makes the write fail with EPIPE, which its exit status reports.
            let data = data.to_vec();
            thread::spawn(move || {
                let _ = pipe.write_all(&data);
            });
        }
        let stdout = read_capped(child.stdout.take(), self.output_cap);
        let stderr = read_capped(child.stderr.take(), self.output_cap);

        let deadline = Instant::now() + self.timeout;
        let status = wait_until(&mut child, deadline);
        let grace = Instant::now() + OUTPUT_GRACE;
        let output = Output {
            stdout: collect(stdout, grace),
            stderr: collect(stderr, grace),
        };
        match status {
            Some(status) => Ok(Finished { status, output }),
            None => Err(failed(
                argv,
                &format!(
                    "killed after the timeout of {}",
                    humantime::format_duration(self.timeout)
                ),
                &output,
            )),
        }
    }
}

/// The error for a run of `argv` that ended badly.
pub fn failed(argv: &[String], status: &str, output: &Output) -> BackendError {
    BackendError::Failed {
        program: argv.first().cloned().unwrap_or_default(),
        status: status.to_owned(),
        stderr: message_text(&output.stderr),
    }
}

/// Trimmed and bounded text for an error message.
pub fn message_text(text: &str) -> String {
    let text = text.trim();
    if text.len() <= MESSAGE_CAP {
        return text.to_owned();
    }
    let mut end = MESSAGE_CAP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} more bytes)", &text[..end], text.len() - end)
}

/// Waits for `child` until `deadline`; then kills its process group and
/// returns `None`. Polls with a short, growing pause, so that a program that
/// takes milliseconds is not made to wait much longer.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut pause = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => break,
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    // Not reaped yet, so the process group id is still ours.
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals that process group.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Reads a pipe to its end on a thread of its own, keeping the first `cap`
/// bytes.
fn read_capped<R: Read + Send + 'static>(
    pipe: Option<R>,
    cap: usize,
) -> Option<mpsc::Receiver<Vec<u8>>> {
    let mut pipe = pipe?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = cap.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(kept);
    });
    Some(rx)
}

fn collect(rx: Option<mpsc::Receiver<Vec<u8>>>, until: Instant) -> String {
    let Some(rx) = rx else { return String::new() };
    let wait = until.saturating_duration_since(Instant::now());
    match rx.recv_timeout(wait) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        // Something the program left behind still holds the pipe: give up
        // on the rest of the output, not on the result.
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn captures_output_and_feeds_stdin() {
        let exec = Exec::default();
        let out = exec
            .run(
                &argv(&["/bin/sh", "-c", "cat; echo err >&2"]),
                Some(b"hello\n"),
            )
            .unwrap();
        assert_eq!(out.stdout, "hello\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn large_stdin_and_output_do_not_deadlock() {
        let exec = Exec::default();
        let input = vec![b'x'; 1 << 20];
        let out = exec.run(&argv(&["/bin/cat"]), Some(&input)).unwrap();
        assert_eq!(out.stdout.len(), DEFAULT_OUTPUT_CAP);
    }

    #[test]
    fn non_zero_exit_is_failed_with_stderr() {
        let exec = Exec::default();
        let err = exec
            .run(&argv(&["/bin/sh", "-c", "echo nope >&2; exit 3"]), None)
            .unwrap_err();
        match err {
            BackendError::Failed {
                program,
                status,
                stderr,
            } => {
                assert_eq!(program, "/bin/sh");
                assert!(status.contains('3'), "{status}");
                assert_eq!(stderr, "nope");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_program_is_spawn_error() {
        let err = Exec::default()
            .run(&argv(&["/nonexistent/banshare-test"]), None)
            .unwrap_err();
        assert!(matches!(err, BackendError::Spawn { .. }), "{err:?}");
    }

    #[test]
    fn timeout_kills_the_process_group() {
        let exec = Exec::new(Vec::new(), Duration::from_millis(300));
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let start = Instant::now();
        let err = exec
            .run(&argv(&["/bin/sh", "-c", &script]), None)
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(err.to_string().contains("timeout"), "{err}");
        // The grandchild (sleep) was killed with its group.
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // SAFETY: signal 0 only checks that the process exists.
            let alive = unsafe { libc::kill(pid, 0) } == 0
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true);
            if !alive {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sleep {pid} survived the timeout"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn prefix_goes_first() {
        let exec = Exec::new(argv(&["/usr/bin/env"]), DEFAULT_TIMEOUT);
        let out = exec.run(&argv(&["echo", "a b", "$(id)"]), None).unwrap();
        assert_eq!(out.stdout, "a b $(id)\n");
    }
}
