//! `banshare doctor`: runs the library's checks ([`banshare::doctor`]) on
//! the configuration with the flags over it, prints one line per finding
//! (and a fix under each warning and problem), and exits by the worst.

use std::path::PathBuf;

use anyhow::anyhow;
use banshare::doctor::{self, Finding, Level};
use serde::Serialize;

use super::args::DoctorArgs;
use super::failure::{Failure, Result, write_stdout};
use super::setup::{apply_watch_args, config_path, load_settings};

/// Exit status when there are problems.
const PROBLEMS: u8 = 1;
/// Exit status when there are warnings but no problem.
const WARNINGS: u8 = 4;

#[derive(Serialize)]
struct Report<'a> {
    /// The worst status: ok, warning or problem.
    status: Level,
    checks: &'a [Finding],
}

pub fn doctor(args: DoctorArgs, config: &Option<PathBuf>) -> Result<()> {
    let origin = config_path(config);
    // A file that does not load stops every other check: they all read it.
    let findings = match load_settings(config)
        .and_then(|mut s| apply_watch_args(&mut s, &args.watch).map(|()| s))
    {
        Ok(settings) => doctor::examine(&settings, &origin),
        Err(e) => vec![Finding::problem(
            "config",
            format!("{} (nothing else was checked)", e.message()),
            format!(
                "correct {}; `banshare config check` says the same",
                origin.display()
            ),
        )],
    };
    let worst = doctor::worst(&findings);
    let text = match args.json {
        true => {
            let report = Report {
                status: worst,
                checks: &findings,
            };
            serde_json::to_string_pretty(&report).map_err(|e| anyhow!(e))? + "\n"
        }
        false => findings.iter().map(line).collect(),
    };
    write_stdout(&text)?;
    let count = |level| findings.iter().filter(|f| f.level == level).count();
    match worst {
        Level::Ok => Ok(()),
        Level::Warning => Err(Failure::Unhealthy(
            WARNINGS,
            format!("{} warning(s)", count(Level::Warning)),
        )),
        Level::Problem => Err(Failure::Unhealthy(
            PROBLEMS,
            format!(
                "{} problem(s), {} warning(s)",
                count(Level::Problem),
                count(Level::Warning)
            ),
        )),
    }
}

/// `ok      log: ...`, and `        fix: ...` under it.
fn line(f: &Finding) -> String {
    let mut text = format!("{:<8}{}: {}\n", f.level.as_str(), f.check, f.detail);
    if let Some(fix) = &f.fix {
        text.push_str(&format!("{:<8}fix: {fix}\n", ""));
    }
    text
}
