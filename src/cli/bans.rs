//! `banshare bans`: the active bans a watcher saved, listed and filtered
//! (see [`banshare::watch::listing`]).

use std::fmt::Write as _;

use anyhow::Context;
use banshare::config::Settings;
use banshare::state::StateDir;
use banshare::watch::listing::{BanFilter, Listing};
use banshare::watch::state::WatcherFiles;
use chrono::{DateTime, SecondsFormat, Utc};

use super::args::BansArgs;
use super::failure::{Failure, Result, write_stdout};

/// Prints the bans in force that pass the filters. Reads `active.json`
/// only, without the state directory's lock, and creates nothing.
pub fn bans(args: BansArgs, settings: Settings) -> Result<()> {
    let dir = args.state_dir.unwrap_or(settings.watch.state_dir);
    if !dir.is_dir() {
        return Err(Failure::NotRunning(format!(
            "no watcher has run with state directory {} yet",
            dir.display()
        )));
    }
    let state = StateDir::open(&dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let saved_at = std::fs::metadata(state.file("active.json"))
        .and_then(|m| m.modified())
        .ok()
        .map(DateTime::<Utc>::from);
    let saved = state
        .load_active()
        .with_context(|| format!("cannot read the active bans in {}", dir.display()))?;
    let filter = BanFilter {
        addr: args.addr,
        net: args.net,
        node: args.node,
        jail: args.jail,
    };
    let listing = Listing::new(saved, saved_at, &filter, Utc::now());
    let text = match args.json {
        true => serde_json::to_string_pretty(&listing).context("cannot write JSON")? + "\n",
        false => table(&listing),
    };
    write_stdout(&text)
}

/// The listing as aligned columns under a heading.
fn table(listing: &Listing) -> String {
    let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let rows: Vec<[String; 5]> = listing
        .bans
        .iter()
        .map(|b| {
            [
                b.address.clone(),
                b.jail.clone().unwrap_or_else(|| "-".into()),
                b.node.clone().unwrap_or_else(|| "-".into()),
                time(&b.since),
                b.until.as_ref().map_or_else(|| "never".into(), time),
            ]
        })
        .collect();
    let heading = ["ADDRESS", "JAIL", "NODE", "SINCE", "UNTIL"].map(String::from);
    let mut widths = heading.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&heading).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            match i {
                4 => line.push_str(cell),
                _ => {
                    let _ = write!(line, "{cell:width$}  ");
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
