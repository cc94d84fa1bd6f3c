//! Issue 16: the catch-up of signed logs, of forged records, and its cost
//! per record as the log grows, each beside its baseline and floor in the
//! same run.
//!
//! - (e) signed catch-up on two logs of the same size: every record live,
//!   and a log that is mostly history (80% of bans over, 10% copies of
//!   bans in force, 10% live). Each is read by a watcher that checks the
//!   signatures (its nodes' keys trusted) and by one that does not (no
//!   keys: the same file's unsigned catch-up), next to `fail2ban-regex` on
//!   the same file and `wc -l` as the floor.
//! - (f) forged records (signed with a key the watcher does not trust for
//!   the node they claim) against unsigned ones, both refused by a
//!   watcher that requires signatures.
//! - (g) catch-up of 100,000, 1,000,000 and 5,000,000 unsigned records:
//!   instructions per record under callgrind (deterministic, so it can be
//!   measured while the machine is busy), and memory: the watcher's RSS
//!   once caught up (steady), its peak while catching up (VmHWM), and the
//!   peak of the whole run including the shutdown's save of `active.json`
//!   (`/usr/bin/time -v`).
//!
//! `cargo bench --bench watch -- signed` runs these alone (as
//! root; about 15 minutes on an idle 2-core machine, most of it
//! fail2ban-regex and callgrind); `-- forged` runs (f) alone. Smaller runs for a smoke test:
//! `BANSHARE_BENCH_RECORDS=20000` (for (e) and (f)) and
//! `BANSHARE_BENCH_SCALE=10000,100000` (for (g)). `BANSHARE_BENCH_BIN=PATH`
//! runs another build of `banshare` as the watcher (a before-and-after
//! comparison on the same logs). Wall-clock times are
//! only worth recording from a quiet machine; the instruction counts are
//! the same on a busy one.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banshare::record::{self, Record};
use banshare::trust;
use ed25519_dalek::SigningKey;
use rayon::prelude::*;

use super::support::fail2ban::write_newbans_filter;
use super::{RECORD_NODES, RECORD_SPAN_SECS, Watcher, mb, memory_of, progress, wait_peak};

/// The watcher's binary: this build's, or `BANSHARE_BENCH_BIN`.
pub fn banshare() -> String {
    std::env::var("BANSHARE_BENCH_BIN").unwrap_or_else(|_| super::support::BANSHARE.into())
}

/// Records in (e) and (f)'s logs, unless `BANSHARE_BENCH_RECORDS` says.
const RECORDS: usize = 1_000_000;
/// (g)'s log sizes, unless `BANSHARE_BENCH_SCALE` says.
const SCALE: [usize; 3] = [100_000, 1_000_000, 5_000_000];

pub fn run() -> String {
    let records = env_list("BANSHARE_BENCH_RECORDS").map_or(RECORDS, |l| l[0]);
    let scale = env_list("BANSHARE_BENCH_SCALE").unwrap_or(SCALE.to_vec());
    let work = tempfile::tempdir().unwrap();
    let keys = Keys::new(
        work.path(),
        nodes_for(records.max(*scale.iter().max().unwrap_or(&0))),
    );
    let mut out = signed(work.path(), &keys, records);
    out += "\n";
    out += &forged(work.path(), &keys, records);
    out += "\n";
    out += &scaling(work.path(), &keys, &scale);
    out
}

/// (f) alone: `cargo bench --bench watch -- forged`.
pub fn run_forged() -> String {
    let records = env_list("BANSHARE_BENCH_RECORDS").map_or(RECORDS, |l| l[0]);
    let work = tempfile::tempdir().unwrap();
    let keys = Keys::new(work.path(), nodes_for(records));
    forged(work.path(), &keys, records)
}

fn env_list(name: &str) -> Option<Vec<usize>> {
    let text = std::env::var(name).ok()?;
    let list: Vec<usize> = text
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    (!list.is_empty()).then_some(list)
}

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

/// Nodes the records of `n` come from: 100, or more for logs of more than
/// 2,000,000 records, so that none sends more than 400 bans a minute (the
/// breaker trips above 600; see `write_records`).
fn nodes_for(n: usize) -> usize {
    RECORD_NODES.max(n.div_ceil(20_000))
}

/// One key per node (`n0`, `n1`, ...), the trusted keys file, and the
/// configurations of a watcher that checks signatures and of one that
/// does not.
struct Keys {
    nodes: Vec<SigningKey>,
    forger: SigningKey,
    checking: PathBuf,
    not_checking: PathBuf,
}

impl Keys {
    fn new(dir: &Path, nodes: usize) -> Keys {
        let nodes: Vec<SigningKey> = (0..nodes).map(|_| trust::generate().unwrap()).collect();
        let lines: String = nodes
            .iter()
            .enumerate()
            .map(|(i, k)| format!("n{i} {}\n", trust::public_line(k)))
            .collect();
        let trusted = dir.join("trusted_keys");
        fs::write(&trusted, lines).unwrap();
        let checking = dir.join("checking.toml");
        fs::write(
            &checking,
            format!("[trust]\nkeys = {:?}\n", trusted.display().to_string()),
        )
        .unwrap();
        let not_checking = dir.join("not-checking.toml");
        fs::write(&not_checking, "").unwrap();
        Keys {
            nodes,
            forger: trust::generate().unwrap(),
            checking,
            not_checking,
        }
    }
}

/// What each record of a log is.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// Every record a live ban of its own address.
    AllLive,
    /// 80% bans over long ago, then live bans each followed by a copy of
    /// itself (10% and 10%): a log read again after the state was lost.
    MostlyHistory,
}

/// How the records are signed.
#[derive(Clone, Copy, PartialEq)]
enum Signing {
    ByTheirNode,
    /// With a key not trusted for the node they claim.
    Forged,
    Unsigned,
}

/// Writes `n` records laid out and signed as asked, in time order, from
/// [`nodes_for`] nodes in turn (as `write_records` does, within the
/// breaker's rate); returns the file's size. Signing is spread over all
/// cores.
fn write_log(path: &Path, n: usize, layout: Layout, signing: Signing, keys: &Keys) -> u64 {
    let now = chrono::Utc::now();
    let history = match layout {
        Layout::AllLive => 0,
        Layout::MostlyHistory => n * 8 / 10,
    };
    let line = |i: usize| -> String {
        // The live part: each even record, and its copy after it.
        let (ts, bantime, source) = if i < history {
            let start = now - chrono::Duration::hours(3);
            let step = 3_600_000.0 / history as f64;
            (start + ms(i as f64 * step), 600, i)
        } else {
            let j = i - history;
            let source = match layout {
                Layout::MostlyHistory => history + j / 2 * 2,
                Layout::AllLive => i,
            };
            let live = (n - history) as f64;
            let start = now - chrono::Duration::seconds(RECORD_SPAN_SECS);
            let step = RECORD_SPAN_SECS as f64 * 1000.0 / live;
            (start + ms((source - history) as f64 * step), 3600, source)
        };
        let header = ts.with_timezone(&chrono::Local).format("%b %d %H:%M:%S");
        let node = source % nodes_for(n);
        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + source as u32);
        let text = format!(
            "<13>{header} banshare[1]: HOST {addr} PORT 22 jail=sshd node=n{node} ts={} bantime={bantime} id={:024x}",
            ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            source + 1
        );
        let key = match signing {
            Signing::Unsigned => return text,
            Signing::ByTheirNode => &keys.nodes[node],
            Signing::Forged => &keys.forger,
        };
        let mut record: Record = record::parse(text.as_bytes()).unwrap();
        trust::sign(&mut record, key).unwrap();
        record.to_string()
    };
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    for chunk in (0..n).collect::<Vec<_>>().chunks(100_000) {
        let lines: Vec<String> = chunk.par_iter().map(|&i| line(i)).collect();
        for l in lines {
            writeln!(w, "{l}").unwrap();
        }
    }
    w.flush().unwrap();
    fs::metadata(path).unwrap().len()
}

fn ms(millis: f64) -> chrono::Duration {
    chrono::Duration::milliseconds(millis as i64)
}

// ---------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------

/// One watcher's catch-up of a log.
struct Run {
    elapsed: Duration,
    /// User and system CPU time until caught up.
    cpu: Duration,
    /// VmHWM and VmRSS once caught up, kB.
    hwm: u64,
    rss: u64,
    status: serde_json::Value,
}

/// `banshare watch --backend log` with `config` from start until its
/// cursor is at the end of `log`, then SIGTERM.
fn catch_up(config: &Path, log: &Path, dir: &Path) -> Run {
    let size = fs::metadata(log).unwrap().len();
    let mut watcher = Watcher::spawn_with(None, "log", log, dir, "bench", config);
    let elapsed = watcher.wait_offset(size, Duration::from_secs(3600));
    let cpu = cpu_of(watcher.pid());
    let (hwm, rss) = memory_of(watcher.pid());
    let (_, ok, _) = watcher.stop();
    assert!(ok, "the watcher failed on SIGTERM");
    Run {
        elapsed,
        cpu,
        hwm,
        rss,
        status: watcher.status(),
    }
}

/// User and system CPU time of `pid` so far.
fn cpu_of(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(fields.iter().sum::<u64>() as f64 / ticks)
}

/// `fail2ban-regex LOG newbans.conf`, given at most `deadline`: seconds,
/// peak RSS (kB), and its summary line. Panics when it fails.
pub(crate) fn fail2ban_regex(
    log: &Path,
    dir: &Path,
    deadline: Duration,
) -> (Duration, u64, String) {
    let filter = write_newbans_filter(dir);
    let report = dir.join("fail2ban-regex.out");
    let t = Instant::now();
    let child = Command::new("fail2ban-regex")
        .arg(log)
        .arg(&filter)
        .stdin(Stdio::null())
        .stdout(File::create(&report).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (ok, rss) = wait_peak(child, deadline, Duration::from_millis(5));
    let elapsed = t.elapsed();
    let text = fs::read_to_string(&report).unwrap_or_default();
    let lines = text
        .lines()
        .find(|l| l.starts_with("Lines: "))
        .unwrap_or("")
        .to_owned();
    assert!(ok, "fail2ban-regex failed: {lines:?}");
    (elapsed, rss, lines)
}

/// `wc -l LOG`: the floor, reading the file once.
fn wc_l(log: &Path) -> Duration {
    let t = Instant::now();
    let out = Command::new("wc").arg("-l").arg(log).output().unwrap();
    assert!(out.status.success());
    t.elapsed()
}

fn count(status: &serde_json::Value, group: &str, key: &str) -> u64 {
    status[group][key].as_u64().unwrap_or(0)
}

fn row(what: &str, n: usize, run: &Run) -> String {
    let s = &run.status;
    format!(
        "| {what} | {n} | {:.2} | {:.2} | {:.2} | {:.0} | {} / {} | {} | {} | {} |\n",
        run.elapsed.as_secs_f64(),
        run.cpu.as_secs_f64(),
        run.cpu.as_secs_f64() * 1e6 / n as f64,
        n as f64 / run.elapsed.as_secs_f64(),
        mb(run.hwm),
        mb(run.rss),
        s["applied"].as_u64().unwrap_or(0),
        ["Expired", "AlreadyBanned", "BanSuperseded"]
            .iter()
            .map(|k| count(s, "skipped", k))
            .sum::<u64>(),
        s["rejected"]
            .as_object()
            .map_or(0, |r| r.values().filter_map(|v| v.as_u64()).sum::<u64>()),
    )
}

const RUN_HEADER: &str = "| system | records | seconds | CPU s | CPU µs per record | records/s | RSS MB: peak / caught up | applied | skipped (over, copies) | refused |\n\
                          |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

// ---------------------------------------------------------------------------
// (e) signed catch-up
// ---------------------------------------------------------------------------

fn signed(work: &Path, keys: &Keys, n: usize) -> String {
    let mut t = format!("### (e) Catch-up of {n} signed records\n\n");
    for (layout, name) in [
        (Layout::AllLive, "every record live"),
        (
            Layout::MostlyHistory,
            "80% over, 10% copies of bans in force, 10% live",
        ),
    ] {
        let dir = work.join(format!("e-{}", layout as u8));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("newbans.log");
        progress(&format!("(e) writing {n} signed records: {name}"));
        let size = write_log(&log, n, layout, Signing::ByTheirNode, keys);
        progress("(e) banshare watch, signatures checked");
        let checked = catch_up(&keys.checking, &log, &dir.join("checked"));
        progress("(e) banshare watch, signatures not checked (no keys)");
        let unchecked = catch_up(&keys.not_checking, &log, &dir.join("unchecked"));
        progress("(e) baseline: fail2ban-regex");
        let (f2b, f2b_rss, f2b_lines) = fail2ban_regex(&log, &dir, Duration::from_secs(1800));
        let wc = wc_l(&log);
        t += &format!(
            "Log: {name}, {} MB. fail2ban-regex: {f2b_lines}.\n\n",
            size / 1_000_000
        );
        t += RUN_HEADER;
        t += &row("banshare watch, signatures checked", n, &checked);
        t += &row(
            "banshare watch, the same file unchecked (no trusted keys)",
            n,
            &unchecked,
        );
        t += &format!(
            "| baseline: fail2ban-regex (newbans filter) | {n} | {:.2} | - | - | {:.0} | {} | - | - | - |\n",
            f2b.as_secs_f64(),
            n as f64 / f2b.as_secs_f64(),
            mb(f2b_rss)
        );
        t += &format!(
            "| floor: wc -l | {n} | {:.3} | - | - | {:.0} | - | - | - | - |\n\n",
            wc.as_secs_f64(),
            n as f64 / wc.as_secs_f64()
        );
        t += &format!(
            "Checked against fail2ban-regex: {:.1}x faster; against the unchecked catch-up: {:.2}x its time.\n\n",
            f2b.as_secs_f64() / checked.elapsed.as_secs_f64(),
            checked.elapsed.as_secs_f64() / unchecked.elapsed.as_secs_f64()
        );
        fs::remove_file(&log).unwrap();
    }
    t
}

// ---------------------------------------------------------------------------
// (f) forged records
// ---------------------------------------------------------------------------

fn forged(work: &Path, keys: &Keys, n: usize) -> String {
    let mut t = format!(
        "### (f) {n} forged records against {n} unsigned ones, signatures required\n\n{RUN_HEADER}"
    );
    for (signing, name) in [
        (
            Signing::Forged,
            "forged: every record live, signed with a key not trusted for its node",
        ),
        (
            Signing::Unsigned,
            "unsigned: the same records without `sig`",
        ),
    ] {
        let dir = work.join(format!("f-{}", signing as u8));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("newbans.log");
        progress(&format!("(f) writing {n} records: {name}"));
        write_log(&log, n, Layout::AllLive, signing, keys);
        let run = catch_up(&keys.checking, &log, &dir.join("w"));
        assert_eq!(run.status["applied"].as_u64(), Some(0), "{}", run.status);
        t += &row(name, n, &run);
        fs::remove_file(&log).unwrap();
    }
    t
}

// ---------------------------------------------------------------------------
// (g) cost per record as the log grows
// ---------------------------------------------------------------------------

fn scaling(work: &Path, keys: &Keys, sizes: &[usize]) -> String {
    let mut t = String::from(
        "### (g) Catch-up cost per record as the log grows (unsigned records, all live)\n\n\
         | records | instructions (callgrind) | per record, less the empty log's | steady RSS MB (caught up) | peak RSS MB while catching up (VmHWM) | peak MB, whole run incl. saving active.json (time -v) | peak / steady |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let dir = work.join("g");
    fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.log");
    fs::write(&empty, b"").unwrap();
    progress("(g) callgrind on an empty log");
    let base = callgrind(&empty, &dir.join("empty"));
    t += &format!("| 0 | {base} | - | - | - | - | - |\n");
    for &n in sizes {
        let log = dir.join("newbans.log");
        progress(&format!("(g) writing {n} records"));
        write_log(&log, n, Layout::AllLive, Signing::Unsigned, keys);
        progress(&format!("(g) {n} records: callgrind"));
        let instructions = callgrind(&log, &dir.join(format!("cg-{n}")));
        progress(&format!("(g) {n} records: memory"));
        let (steady, hwm, peak) = timed(&log, &dir.join(format!("time-{n}")));
        t += &format!(
            "| {n} | {instructions} | {:.0} | {} | {} | {} | {:.2} |\n",
            instructions.saturating_sub(base) as f64 / n as f64,
            mb(steady),
            mb(hwm),
            mb(peak),
            peak as f64 / steady.max(1) as f64
        );
        fs::remove_file(&log).unwrap();
    }
    t
}

/// The watcher's arguments for a catch-up of `log` in `dir`.
fn watch_args(log: &Path, dir: &Path) -> Vec<String> {
    fs::create_dir_all(dir).unwrap();
    [
        banshare().as_str(),
        "--config",
        "/dev/null",
        "watch",
        "--backend",
        "log",
        "--follow",
        "poll",
        "--node",
        "bench",
        "--log",
    ]
    .into_iter()
    .map(String::from)
    .chain([
        log.display().to_string(),
        "--state-dir".into(),
        dir.join("state").display().to_string(),
        "--spool-dir".into(),
        dir.join("spool").display().to_string(),
    ])
    .collect()
}

/// Waits until the cursor saved in `dir` reaches the end of `log`.
fn wait_caught_up(log: &Path, dir: &Path) {
    let size = fs::metadata(log).unwrap().len();
    let cursor = dir.join("state/cursor.json");
    let offset = || {
        let data = fs::read(&cursor).ok()?;
        let value: serde_json::Value = serde_json::from_slice(&data).ok()?;
        value["position"]["seq"].as_u64()
    };
    let done = super::support::wait_until(Duration::from_secs(7200), || {
        size == 0 && cursor.exists() || offset().is_some_and(|o| o >= size)
    });
    assert!(done, "no catch-up in {}", dir.display());
}

/// Instructions of a whole watcher run (start, catch-up of `log`,
/// SIGTERM and its save), under callgrind.
fn callgrind(log: &Path, dir: &Path) -> u64 {
    let out = dir.join("callgrind.out");
    let args = watch_args(log, dir);
    let mut child = Command::new("valgrind")
        .args(["--tool=callgrind", "--quiet"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("valgrind.err")).unwrap())
        .spawn()
        .expect("valgrind (Debian package valgrind)");
    // An empty log: caught up once the first status is written.
    if fs::metadata(log).unwrap().len() == 0 {
        let status = dir.join("state/status.json");
        assert!(super::support::wait_until(Duration::from_secs(300), || {
            status.exists()
        }));
    } else {
        wait_caught_up(log, dir);
    }
    // SAFETY: kill(2) on our own, not yet reaped, child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(child.wait().unwrap().success(), "see {}", dir.display());
    let text = fs::read_to_string(&out).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("summary: ").or(l.strip_prefix("totals: ")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("callgrind's totals")
}

/// A catch-up under `/usr/bin/time -v`: the watcher's VmRSS and VmHWM once
/// caught up, and time's maximum RSS of the whole run, kB.
fn timed(log: &Path, dir: &Path) -> (u64, u64, u64) {
    let report = dir.join("time.txt");
    let args = watch_args(log, dir);
    let mut time = Command::new("/usr/bin/time")
        .arg("-v")
        .arg("-o")
        .arg(&report)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("/usr/bin/time (Debian package time)");
    wait_caught_up(log, dir);
    let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", time.id())).unwrap();
    let watcher: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let (hwm, rss) = memory_of(watcher);
    // SAFETY: kill(2) on the watcher, time's child, which time reaps.
    unsafe { libc::kill(watcher as libc::pid_t, libc::SIGTERM) };
    assert!(time.wait().unwrap().success());
    let text = fs::read_to_string(&report).unwrap();
    let peak = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (rss, hwm, peak)
}
