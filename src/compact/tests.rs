use super::*;
use crate::transport::lock::LocalLockFs;

fn rules() -> RetentionRules {
    RetentionRules::new(Duration::from_secs(7 * 24 * 3600), Duration::from_secs(600))
}

fn job(log: &Path, dry_run: bool) -> CompactJob {
    CompactJob {
        log: log.to_owned(),
        rules: rules(),
        local_lock: None,
        owner: Owner {
            node: "compactor".into(),
            pid: 1,
        },
        timings: LockTimings::default(),
        dry_run,
    }
}

fn now() -> DateTime<Utc> {
    "2026-11-21T18:00:00Z".parse().unwrap()
}

fn ban(addr: &str, ts: &str, bantime: u32, id: u32) -> String {
    format!(
        "<13>Nov 21 17:00:00 banshare[1]: HOST {addr} PORT 22 node=a ts={ts} bantime={bantime} id={id:016}\n"
    )
}

#[test]
fn keeps_the_bans_in_force_byte_for_byte_behind_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("newbans.log");
    let live = ban("192.0.2.2", "2026-11-21T17:55:00Z", 600, 2);
    let text = [
        ban("192.0.2.1", "2026-11-21T17:00:00Z", 600, 1),
        live.clone(),
        "garbage\n".into(),
        live.clone(),
        // An unfinished line: a writer is still at it, or died.
        "<13>Nov 21 17:59:59 banshare[1]: HOST 192.0".into(),
    ]
    .concat();
    fs::write(&log, &text).unwrap();
    let mut seen = Vec::new();
    let dry = compact(
        &LocalStore,
        &mut LocalLockFs,
        &job(&log, true),
        now(),
        &mut |l, f| seen.push((String::from_utf8_lossy(l).into_owned(), f)),
    )
    .unwrap();
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        text,
        "a dry run writes nothing"
    );
    assert_eq!((dry.kept(), dry.dropped()), (1, 3));
    assert_eq!(seen.len(), 4);
    let done = compact(
        &LocalStore,
        &mut LocalLockFs,
        &job(&log, false),
        now(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!((done.kept(), done.dropped()), (1, 3));
    let after = fs::read_to_string(&log).unwrap();
    let (marker, rest) = after.split_once('\n').unwrap();
    assert!(record::is_compaction_marker(marker.as_bytes()), "{marker}");
    assert_eq!(
        rest,
        format!("{live}<13>Nov 21 17:59:59 banshare[1]: HOST 192.0")
    );
    assert_eq!(done.bytes_after, after.len() as u64);
    // Nothing left behind: no copy, no lock.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["newbans.log"]);
    // Compacting again drops the old marker and keeps the same records.
    compact(
        &LocalStore,
        &mut LocalLockFs,
        &job(&log, false),
        now(),
        &mut |_, _| {},
    )
    .unwrap();
    let again = fs::read_to_string(&log).unwrap();
    assert_ne!(again.split_once('\n').unwrap().0, marker, "a new nonce");
    assert_eq!(again.split_once('\n').unwrap().1, rest);
}

/// A store that appends a record to the log each time the compactor
/// reads it, as a live writer would, and checks the lock is held only at
/// the end.
struct Busy {
    reads: std::cell::Cell<u32>,
}

impl LogStore for Busy {
    fn read_from(&self, path: &Path, offset: u64) -> io::Result<Vec<u8>> {
        let n = self.reads.get();
        self.reads.set(n + 1);
        let lock = CrossHostLock::path_for(path);
        if !lock.exists() {
            let line = ban("192.0.2.9", "2026-11-21T17:59:00Z", 600, 100 + n);
            OpenOptions::new()
                .append(true)
                .open(path)?
                .write_all(line.as_bytes())?;
        }
        LocalStore.read_from(path, offset)
    }
    fn head(&self, path: &Path, len: u64) -> io::Result<Vec<u8>> {
        LocalStore.head(path, len)
    }
    fn create(&self, path: &Path, data: &[u8], like: &Path) -> io::Result<()> {
        LocalStore.create(path, data, like)
    }
    fn append_synced(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        LocalStore.append_synced(path, data)
    }
    fn replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        assert!(
            CrossHostLock::path_for(to).exists(),
            "renamed under the lock"
        );
        LocalStore.replace(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        LocalStore.remove(path)
    }
}

#[test]
fn what_writers_append_meanwhile_is_copied_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("newbans.log");
    fs::write(&log, ban("192.0.2.1", "2026-11-21T17:00:00Z", 600, 1)).unwrap();
    let store = Busy {
        reads: Default::default(),
    };
    let done = compact(
        &store,
        &mut LocalLockFs,
        &job(&log, false),
        now(),
        &mut |_, _| {},
    )
    .unwrap();
    let after = fs::read_to_string(&log).unwrap();
    let appended = store.reads.get() - 1;
    assert!(appended >= 1);
    for n in 0..appended {
        assert!(
            after.contains(&format!("id={:016}", 100 + n)),
            "{n}: {after}"
        );
    }
    assert!(!after.contains("192.0.2.1 "), "{after}");
    assert!(done.tail_bytes > 0);
}

#[test]
fn a_log_replaced_meanwhile_is_left_alone() {
    struct Rotating;
    impl LogStore for Rotating {
        fn read_from(&self, path: &Path, offset: u64) -> io::Result<Vec<u8>> {
            let data = LocalStore.read_from(path, offset)?;
            // Rotated away right after the first read.
            fs::write(path, "<13>Nov 21 17:59:00 x[1]: HOST 192.0.2.5 PORT 22\n")?;
            Ok(data)
        }
        fn head(&self, path: &Path, len: u64) -> io::Result<Vec<u8>> {
            LocalStore.head(path, len)
        }
        fn create(&self, path: &Path, data: &[u8], like: &Path) -> io::Result<()> {
            LocalStore.create(path, data, like)
        }
        fn append_synced(&self, path: &Path, data: &[u8]) -> io::Result<()> {
            LocalStore.append_synced(path, data)
        }
        fn replace(&self, _: &Path, _: &Path) -> io::Result<()> {
            panic!("must not replace a log it did not copy")
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            LocalStore.remove(path)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("newbans.log");
    fs::write(&log, ban("192.0.2.1", "2026-11-21T17:55:00Z", 600, 1)).unwrap();
    let e = compact(
        &Rotating,
        &mut LocalLockFs,
        &job(&log, false),
        now(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(e, CompactError::Replaced(_)), "{e}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no copy left");
}

use crate::follow::test_fs;
use crate::follow::{Follower, Line};

/// Where files have no inode numbers (SFTP), a watcher restarted after a
/// compaction knows its log by the first bytes its cursor holds. A
/// compacted log that kept the first records, and is longer than what was
/// read (writers appended meanwhile), would pass for the same file, read
/// on at the old offset: the records shifted below it are missed. The
/// marker line makes the first bytes new.
#[test]
fn a_follower_without_inode_numbers_reads_the_compacted_log_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("newbans.log");
    let record = |i: u32| {
        ban(
            &format!("192.0.2.{}", 100 + i),
            "2026-11-21T17:59:00Z",
            3600,
            i,
        )
    };
    // 12 records (past the 1024 bytes of the fingerprint); the 10th is a
    // copy of the 9th, which compaction drops.
    let mut text: String = (1..=9).map(record).collect();
    text.push_str(&record(9));
    text.extend((11..=12).map(record));
    fs::write(&log, &text).unwrap();
    let mut follower = Follower::new(test_fs::TestFs::no_ids(), log.clone(), None);
    let lines = |f: &mut Follower<test_fs::TestFs>| -> Vec<String> {
        f.read_lines(1000)
            .unwrap()
            .iter()
            .filter_map(|l| match l {
                Line::Complete { bytes, .. } => Some(String::from_utf8_lossy(bytes).into_owned()),
                Line::TooLong { .. } => None,
            })
            .collect()
    };
    assert_eq!(lines(&mut follower).len(), 12);
    let late: String = (13..=15).map(record).collect();
    OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(late.as_bytes())
        .unwrap();
    let cursor = follower.cursor();
    drop(follower);
    compact(
        &LocalStore,
        &mut LocalLockFs,
        &job(&log, false),
        now(),
        &mut |_, _| {},
    )
    .unwrap();
    let mut follower = Follower::new(test_fs::TestFs::no_ids(), log.clone(), cursor);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(lines(&mut follower));
    }
    for i in 13..=15 {
        let id = format!("id={i:016}");
        assert!(
            seen.iter().any(|l| l.contains(&id)),
            "record {i}, appended before the compaction, was missed; read {seen:#?}"
        );
    }
}

/// A compaction killed midway (the host rebooted) leaves its copy; the
/// next run removes such copies once they are old enough that no running
/// compaction, on any host, can still be writing them.
#[test]
fn partial_copies_of_earlier_runs_are_removed_once_stale() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("newbans.log");
    fs::write(&log, ban("192.0.2.2", "2026-11-21T17:55:00Z", 600, 2)).unwrap();
    let old = dir.path().join(".newbans.log.compact-12345");
    let fresh = dir.path().join(".newbans.log.compact-12346");
    let other = dir.path().join(".newbans.log.compact-notapid");
    for path in [&old, &fresh, &other] {
        fs::write(path, "partial").unwrap();
    }
    let hours_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    for path in [&old, &other] {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(hours_ago)
            .unwrap();
    }
    compact(
        &LocalStore,
        &mut LocalLockFs,
        &job(&log, false),
        now(),
        &mut |_, _| {},
    )
    .unwrap();
    assert!(!old.exists(), "a stale copy is removed");
    assert!(fresh.exists(), "one that may be another run's stays");
    assert!(other.exists(), "only names compaction gives");
}
