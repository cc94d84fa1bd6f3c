//! The `banshare` binary: parse the command line, run one command, map the
//! outcome to a documented exit status (see `banshare --help`).

mod cli;

use std::io::ErrorKind as IoKind;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use cli::args::Cli;
use cli::failure::Failure;

fn main() -> ExitCode {
    let (cli, settings) = match cli::front::FULL_BINARY {
        Some(full) => match cli::front::runs_itself() {
            Some((cli, settings)) => (cli, Some(settings)),
            None => return cli::front::exec_full(full),
        },
        None => match Cli::try_parse() {
            Ok(cli) => (cli, None),
            Err(e) => return usage_error(e),
        },
    };
    cli::logging::install(cli.global.quiet, cli.global.verbose);
    let result = match settings {
        Some(settings) => cli::commands::run_with(cli, settings),
        None => cli::commands::run(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Output(e)) => output_failed(&e),
        Err(Failure::NotRunning(message)) => {
            eprintln!("banshare: {message}");
            ExitCode::from(3)
        }
        Err(Failure::Unhealthy(code, message)) => {
            eprintln!("banshare: {message}");
            ExitCode::from(code)
        }
        Err(failure) => {
            eprintln!("banshare: error: {}", failure.message());
            ExitCode::from(match failure {
                Failure::Usage(_) => 2,
                _ => 1,
            })
        }
    }
}

/// Standard output failed. A reader that went away (`banshare status |
/// head -1`) ends the command quietly, by SIGPIPE, as it ends any Unix
/// tool; any other failure (a full disk) is one error line and status 1.
fn output_failed(e: &std::io::Error) -> ExitCode {
    if e.kind() == IoKind::BrokenPipe {
        // SAFETY: restores the default action of SIGPIPE (Rust ignores it)
        // and raises it: the process ends here, killed by the signal.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
        return ExitCode::from(128 + libc::SIGPIPE as u8);
    }
    eprintln!("banshare: error: cannot write to standard output: {e}");
    ExitCode::FAILURE
}

/// Help and version go to stdout with status 0. A real usage error is one
/// line on stderr and status 2, so that fail2ban's log shows it whole.
fn usage_error(e: clap::Error) -> ExitCode {
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return match e.print() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => output_failed(&e),
        };
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(2);
    }
    eprintln!(
        "banshare: error: {} (see `banshare --help`)",
        first_paragraph(&e.render().to_string())
    );
    ExitCode::from(2)
}

/// clap's message up to its first blank line, on one line: for a missing
/// argument that is the heading and the arguments it lists below it.
fn first_paragraph(rendered: &str) -> String {
    let text: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    match text.join(" ") {
        t if t.is_empty() => "bad arguments".into(),
        t => t.trim_start_matches("error: ").to_owned(),
    }
}
