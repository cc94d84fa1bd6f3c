//! The follower on a real folder: the tricky cases one by one. The model
//! test (`tests/follow_model.rs`) mixes them at random.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::*;
use crate::record::MAX_LINE_LEN;

struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let dir = Dir {
            tmp: tempfile::tempdir().unwrap(),
        };
        File::create(dir.log()).unwrap();
        dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn log(&self) -> PathBuf {
        self.path("newbans.log")
    }

    fn append(&self, text: &str) {
        let mut f = OpenOptions::new().append(true).open(self.log()).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Writes a new file and renames it over `name`, as compaction does.
    fn replace(&self, name: &str, text: &str) {
        let tmp = self.path("new.tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(tmp, self.path(name)).unwrap();
    }

    fn rotate(&self, to: &str) {
        fs::rename(self.log(), self.path(to)).unwrap();
        File::create(self.log()).unwrap();
    }

    fn follower(&self, resume: Option<Cursor>) -> Follower<LocalFs> {
        Follower::new(LocalFs, self.log(), resume)
    }
}

fn text(line: &Line) -> String {
    match line {
        Line::Complete { bytes, .. } => String::from_utf8_lossy(bytes).into_owned(),
        Line::TooLong { len, .. } => format!("<{len} bytes>"),
    }
}

fn read<F: LogFs>(f: &mut Follower<F>) -> Vec<String> {
    f.read_lines(1000).unwrap().iter().map(text).collect()
}

#[test]
fn a_partial_line_waits_for_its_newline() {
    let dir = Dir::new();
    let mut f = dir.follower(None);
    dir.append("one\ntw");
    assert_eq!(read(&mut f), ["one"]);
    assert_eq!(
        f.cursor().unwrap().offset,
        4,
        "the partial line is not in the cursor"
    );
    assert!(f.state().caught_up);
    assert_eq!(read(&mut f), Vec::<String>::new());
    dir.append("o\n");
    assert_eq!(read(&mut f), ["two"]);
    assert_eq!(f.cursor().unwrap().offset, 8);
}

#[test]
fn an_over_long_line_is_one_marker() {
    let dir = Dir::new();
    let mut f = dir.follower(None);
    let limit = "x".repeat(MAX_LINE_LEN);
    dir.append(&format!("{limit}\n{limit}y\n"));
    dir.append(&"z".repeat(1 << 20));
    assert_eq!(
        read(&mut f),
        [limit.clone(), format!("<{} bytes>", MAX_LINE_LEN + 1)]
    );
    dir.append("\nnext\n");
    assert_eq!(
        read(&mut f),
        [format!("<{} bytes>", 1 << 20), "next".into()]
    );
}

#[test]
fn each_line_carries_the_cursor_after_it() {
    let dir = Dir::new();
    dir.append("a\nbb\nccc\n");
    let mut f = dir.follower(None);
    let lines = f.read_lines(2).unwrap();
    assert_eq!(lines.iter().map(text).collect::<Vec<_>>(), ["a", "bb"]);
    assert_eq!(lines[0].cursor().offset, 2);
    // Resuming after the first line gives the second again.
    let mut again = dir.follower(Some(*lines[0].cursor()));
    assert_eq!(read(&mut again), ["bb", "ccc"]);
    assert_eq!(read(&mut f), ["ccc"]);
}

#[test]
fn truncation_starts_again_at_zero() {
    let dir = Dir::new();
    let mut f = dir.follower(None);
    dir.append("a\nb\npart");
    assert_eq!(read(&mut f), ["a", "b"]);
    fs::write(dir.log(), "c\n").unwrap();
    assert_eq!(
        read(&mut f),
        ["c"],
        "the partial line went with the truncation"
    );
    assert_eq!(f.take_events(), [FollowEvent::Truncated { offset: 4 }]);
}

#[test]
fn truncation_then_growth_past_the_offset_is_still_truncation() {
    let dir = Dir::new();
    let mut f = dir.follower(None);
    dir.append("a\nb\n");
    assert_eq!(read(&mut f), ["a", "b"]);
    fs::write(dir.log(), "cc\ndd\nee\n").unwrap();
    assert_eq!(read(&mut f), ["cc", "dd", "ee"]);
}

#[test]
fn rotation_drains_the_old_file_first() {
    let dir = Dir::new();
    let mut f = dir.follower(None);
    dir.append("1\n");
    assert_eq!(read(&mut f), ["1"]);
    dir.append("2\n3");
    dir.rotate("newbans.log.1");
    dir.append("4\n");
    assert_eq!(read(&mut f), ["2", "4"], "3 was never finished");
    let path = dir.log().with_extension("log.1");
    assert_eq!(f.take_events(), [FollowEvent::Renamed { path }]);
    dir.append("5\n");
    assert_eq!(read(&mut f), ["5"]);
}

#[test]
fn compaction_drains_then_reads_the_new_file_from_zero() {
    let dir = Dir::new();
    let mut f = dir.follower(None);
    dir.append("1\n2\n");
    assert_eq!(read(&mut f), ["1", "2"]);
    dir.append("3\n");
    dir.replace("newbans.log", "2\n3\n4\n");
    assert_eq!(
        read(&mut f),
        ["3", "2", "3", "4"],
        "copies are dropped later, by the watcher's policy"
    );
}

#[test]
fn draining_survives_a_full_batch() {
    let dir = Dir::new();
    let mut f = dir.follower(None);
    dir.append("1\n");
    assert_eq!(read(&mut f), ["1"]);
    dir.append("2\n3\n");
    dir.rotate("newbans.log.1");
    dir.append("4\n");
    let first: Vec<_> = f.read_lines(1).unwrap().iter().map(text).collect();
    assert_eq!(first, ["2"]);
    assert!(f.state().draining.is_some());
    // A restart here resumes in the rotated file.
    let cursor = f.cursor().unwrap();
    assert_eq!(read(&mut f), ["3", "4"]);
    assert_eq!(read(&mut dir.follower(Some(cursor))), ["3", "4"]);
}

#[test]
fn delete_and_recreate() {
    let dir = Dir::new();
    let mut f = dir.follower(None);
    dir.append("1\n");
    assert_eq!(read(&mut f), ["1"]);
    dir.append("2\n");
    fs::remove_file(dir.log()).unwrap();
    assert_eq!(
        read(&mut f),
        ["2"],
        "lines written before the deletion still count"
    );
    assert!(!f.state().present);
    let err = f.read_lines(10).unwrap_err();
    assert!(err.is_missing(), "{err}");
    assert!(err.to_string().contains("newbans.log"), "{err}");
    let cursor = f.cursor();
    assert_eq!(cursor.unwrap().offset, 4, "the cursor is kept");
    File::create(dir.log()).unwrap();
    dir.append("3\n");
    assert_eq!(read(&mut f), ["3"]);
    assert!(f.state().present);
}

#[test]
fn a_missing_log_is_an_error_until_it_appears() {
    let dir = Dir::new();
    fs::remove_file(dir.log()).unwrap();
    let mut f = dir.follower(None);
    assert!(f.read_lines(10).unwrap_err().is_missing());
    assert_eq!(f.cursor(), None);
    File::create(dir.log()).unwrap();
    dir.append("1\n");
    assert_eq!(read(&mut f), ["1"]);
}

#[test]
fn a_fifo_at_the_path_is_an_error_not_a_hang() {
    let dir = Dir::new();
    fs::remove_file(dir.log()).unwrap();
    let c = std::ffi::CString::new(dir.log().into_os_string().into_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let err = dir.follower(None).read_lines(10).unwrap_err();
    assert!(matches!(err, FollowError::Io { .. }), "{err}");
}

#[test]
fn resume_at_a_matching_cursor() {
    let dir = Dir::new();
    let mut f = dir.follower(None);
    dir.append("1\n2\n");
    assert_eq!(read(&mut f), ["1", "2"]);
    let cursor = f.cursor();
    drop(f);
    dir.append("3\n");
    let mut f = dir.follower(cursor);
    assert_eq!(read(&mut f), ["3"]);
    assert_eq!(f.take_events(), [FollowEvent::Resumed { offset: 4 }]);
}

#[test]
fn resume_with_a_cursor_that_matches_nothing_starts_at_zero() {
    let dir = Dir::new();
    dir.append("1\n2\n");
    let mut f = dir.follower(None);
    assert_eq!(read(&mut f), ["1", "2"]);
    let cursor = f.cursor().unwrap();
    dir.replace("newbans.log", "3\n");
    let mut f = dir.follower(Some(cursor));
    assert_eq!(read(&mut f), ["3"]);
    assert_eq!(f.take_events(), [FollowEvent::CursorLost { cursor }]);
}

#[test]
fn resume_drains_a_rotated_file_found_by_fingerprint() {
    let dir = Dir::new();
    let mut f = dir.follower(None);
    dir.append("1\n");
    assert_eq!(read(&mut f), ["1"]);
    let cursor = f.cursor();
    drop(f);
    dir.append("2\n");
    fs::write(dir.path("newbans.log.lock"), "banshare-lock\n").unwrap();
    fs::write(dir.path("newbans.log.1"), "older\n").unwrap();
    dir.rotate("newbans.log-20261121");
    dir.append("3\n");
    let mut f = dir.follower(cursor);
    assert_eq!(read(&mut f), ["2", "3"]);
    let rotated = dir.path("newbans.log-20261121");
    assert_eq!(
        f.take_events(),
        [FollowEvent::ResumedRotated {
            path: rotated,
            offset: 2
        }]
    );
}

#[test]
fn resume_from_an_empty_file_finds_it_rotated_by_inode() {
    let dir = Dir::new();
    let mut f = dir.follower(None);
    assert_eq!(read(&mut f), Vec::<String>::new());
    let cursor = f.cursor().unwrap();
    assert_eq!(cursor.fingerprint, Fingerprint::EMPTY);
    dir.append("1\n");
    dir.rotate("newbans.log.1");
    dir.append("2\n");
    assert_eq!(read(&mut dir.follower(Some(cursor))), ["1", "2"]);
}

#[test]
fn resume_in_a_file_cut_short_after_the_fingerprint_starts_at_zero() {
    let dir = Dir::new();
    let lines: String = (0..200).map(|i| format!("line {i:05}\n")).collect();
    dir.append(&lines);
    let mut f = dir.follower(None);
    assert_eq!(read(&mut f).len(), 200);
    let cursor = f.cursor().unwrap();
    assert_eq!(cursor.fingerprint.len, FINGERPRINT_MAX);
    drop(f);
    File::options()
        .write(true)
        .open(dir.log())
        .unwrap()
        .set_len(1100)
        .unwrap();
    let mut f = dir.follower(Some(cursor));
    assert_eq!(read(&mut f).len(), 1100 / 11);
    assert_eq!(f.take_events(), [FollowEvent::Truncated { offset: 2200 }]);
}

#[test]
fn a_rotated_file_shorter_than_the_cursor_is_not_resumed_in() {
    let dir = Dir::new();
    let lines: String = (0..200).map(|i| format!("line {i:05}\n")).collect();
    dir.append(&lines);
    let mut f = dir.follower(None);
    assert_eq!(read(&mut f).len(), 200);
    let cursor = f.cursor().unwrap();
    drop(f);
    dir.rotate("newbans.log.1");
    let rotated = File::options()
        .write(true)
        .open(dir.path("newbans.log.1"))
        .unwrap();
    rotated.set_len(1100).unwrap();
    dir.append("new\n");
    let mut f = dir.follower(Some(cursor));
    assert_eq!(read(&mut f), ["new"]);
    assert_eq!(f.take_events(), [FollowEvent::CursorLost { cursor }]);
}

#[test]
fn the_fingerprint_grows_with_a_short_file() {
    let dir = Dir::new();
    let mut f = dir.follower(None);
    dir.append("a\n");
    assert_eq!(read(&mut f), ["a"]);
    let short = f.cursor().unwrap();
    assert_eq!(short.fingerprint, Fingerprint::of(b"a\n"));
    dir.append(&"b".repeat(2000));
    dir.append("\n");
    read(&mut f);
    let long = f.cursor().unwrap();
    assert_eq!(long.fingerprint.len, FINGERPRINT_MAX);
    assert_eq!(
        long.fingerprint,
        Fingerprint::of(&fs::read(dir.log()).unwrap()[..1024])
    );
    // The short fingerprint still matches the grown file: only its bytes are compared.
    dir.append("c\n");
    let mut f = dir.follower(Some(short));
    assert_eq!(read(&mut f).len(), 2);
    assert_eq!(f.take_events(), [FollowEvent::Resumed { offset: 2 }]);
}

#[test]
fn a_short_fingerprint_still_tells_a_new_file_apart() {
    let dir = Dir::new();
    let mut f = Follower::new(TestFs::no_ids(), dir.log(), None);
    dir.append("a\n");
    assert_eq!(read(&mut f), ["a"]);
    dir.replace("newbans.log", "b\n");
    assert_eq!(read(&mut f), ["b"]);
}

#[test]
fn a_hostile_cursor_is_harmless() {
    let dir = Dir::new();
    dir.append("1\n");
    let cursor = Cursor {
        dev: u64::MAX,
        ino: u64::MAX,
        fingerprint: Fingerprint {
            len: u64::MAX,
            hash: 0,
        },
        offset: u64::MAX,
    };
    let mut f = dir.follower(Some(cursor));
    assert_eq!(read(&mut f), ["1"]);
    let empty = Cursor {
        fingerprint: Fingerprint::EMPTY,
        ..cursor
    };
    assert_eq!(
        read(&mut dir.follower(Some(empty))),
        ["1"],
        "too far: truncated"
    );
}

#[test]
fn the_fingerprint_hash_never_changes() {
    // FNV-1a 64 test vectors: persisted cursors depend on them.
    assert_eq!(Fingerprint::of(b"").hash, 0xcbf2_9ce4_8422_2325);
    assert_eq!(Fingerprint::of(b"a").hash, 0xaf63_dc4c_8601_ec8c);
    assert_eq!(Fingerprint::of(b"foobar").hash, 0x8594_4171_f739_67e8);
    let long = vec![7u8; 5000];
    assert_eq!(Fingerprint::of(&long), Fingerprint::of(&long[..1024]));
}

#[test]
fn a_cursor_round_trips_through_json_and_toml() {
    let cursor = Cursor {
        dev: 2049,
        ino: 1234,
        fingerprint: Fingerprint::of(b"<13>Nov 21 18:28:04 root[3284]: HOST 1.2.3.4 PORT 22\n"),
        offset: 53,
    };
    assert!(
        cursor.fingerprint.hash > i64::MAX as u64,
        "the case TOML cannot hold as a number"
    );
    let json = serde_json::to_string(&cursor).unwrap();
    assert!(
        json.contains(&format!("\"{:016x}\"", cursor.fingerprint.hash)),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Cursor>(&json).unwrap(), cursor);
    let toml = toml::to_string(&cursor).unwrap();
    assert_eq!(toml::from_str::<Cursor>(&toml).unwrap(), cursor);
}

// Filesystems without inode numbers, and shares that fail.

use super::test_fs::TestFs;

#[test]
fn a_share_that_goes_away_and_comes_back() {
    let dir = Dir::new();
    let fs = TestFs::default();
    let down = fs.down.clone();
    let mut f = Follower::new(fs, dir.log(), None);
    dir.append("1\n2");
    assert_eq!(read(&mut f), ["1"]);
    down.store(true, Ordering::SeqCst);
    dir.append("\n3\n");
    let err = f.read_lines(10).unwrap_err();
    assert!(matches!(err, FollowError::Unreachable { .. }), "{err}");
    assert!(!f.state().open);
    assert_eq!(f.cursor().unwrap().offset, 2);
    down.store(false, Ordering::SeqCst);
    assert_eq!(read(&mut f), ["2", "3"]);
    assert_eq!(f.take_events(), [FollowEvent::Resumed { offset: 2 }]);
}

#[test]
fn a_share_that_comes_back_with_a_rotated_log() {
    let dir = Dir::new();
    let fs = TestFs::default();
    let down = fs.down.clone();
    let mut f = Follower::new(fs, dir.log(), None);
    dir.append("1\n");
    assert_eq!(read(&mut f), ["1"]);
    down.store(true, Ordering::SeqCst);
    assert!(f.read_lines(10).is_err());
    dir.append("2\n");
    dir.rotate("newbans.log.1");
    dir.append("3\n");
    down.store(false, Ordering::SeqCst);
    assert_eq!(read(&mut f), ["2", "3"]);
}

#[test]
fn without_inode_numbers_rotation_and_truncation_are_seen() {
    let dir = Dir::new();
    let mut f = Follower::new(TestFs::no_ids(), dir.log(), None);
    dir.append("1\n");
    assert_eq!(read(&mut f), ["1"]);
    dir.append("2\n");
    dir.rotate("newbans.log.1");
    dir.append("3\n");
    assert_eq!(read(&mut f), ["2", "3"]);
    fs::write(dir.log(), "4\n5\n").unwrap();
    assert_eq!(read(&mut f), ["4", "5"]);
    let path = dir.log().with_extension("log.1");
    assert_eq!(
        f.take_events(),
        [
            FollowEvent::Renamed { path },
            FollowEvent::Truncated { offset: 2 }
        ]
    );
}

/// sshfs answers for an open file with the size of the file now at its
/// path: after a rotation, the old file looks truncated, and reads through
/// it may stop at the new file's size. Its rest is read under its new name.
#[test]
fn on_sshfs_a_rotated_file_is_finished_under_its_new_name() {
    let dir = Dir::new();
    let fs = TestFs {
        sshfs: true,
        ..TestFs::default()
    };
    let mut f = Follower::new(fs, dir.log(), None);
    dir.append("first line\n");
    assert_eq!(read(&mut f), ["first line"]);
    dir.append("unread tail\n");
    dir.rotate("newbans.log.1");
    dir.append("new\n");
    assert_eq!(read(&mut f), ["unread tail", "new"]);
    let path = dir.log().with_extension("log.1");
    assert_eq!(f.take_events(), [FollowEvent::Renamed { path }]);
}

/// A compaction on sshfs: the new log, shorter than what was read of the
/// old one, is renamed over it. The open old file then tells the new
/// file's size, which looks like a truncation; whether reads through it
/// stop there or not, the follower finishes the old file and goes on in
/// the new one, and does not read the old one again and again.
#[test]
fn on_sshfs_a_log_compacted_shorter_is_read_from_zero_once() {
    for reads_past_size in [false, true] {
        let dir = Dir::new();
        // sshfs numbers inodes by path: the new file has the old one's.
        let fs = TestFs {
            sshfs: true,
            reads_past_size,
            no_ids: true,
            ..TestFs::default()
        };
        let mut f = Follower::new(fs, dir.log(), None);
        dir.append("a long line that compaction drops\nkept\n");
        assert_eq!(read(&mut f).len(), 2);
        dir.replace("newbans.log", "# banshare-compacted nonce=1\nkept\n");
        dir.append("new\n");
        // Old lines may come again (the policy drops them); the new file's
        // must come, once, within a few reads.
        let mut got = Vec::new();
        for _ in 0..5 {
            got.extend(read(&mut f));
        }
        let new_file = ["# banshare-compacted nonce=1", "kept", "new"];
        assert!(
            got.ends_with(&new_file.map(String::from))
                && got.iter().filter(|l| *l == "new").count() == 1,
            "reads past size: {reads_past_size}: {got:?}"
        );
    }
}

/// Where the open file tells its own size (a local disk, NFS), a
/// replaced log is finished through it, not through an older copy beside
/// it that happens to start the same (`cp newbans.log newbans.log.bak`
/// before an edit or a compaction): the copy lacks what came after it.
#[test]
fn a_replaced_log_is_finished_through_the_open_file_not_an_older_copy_beside_it() {
    let dir = Dir::new();
    let mut f = Follower::new(TestFs::default(), dir.log(), None);
    dir.append("1\n");
    assert_eq!(read(&mut f), ["1"]);
    fs::copy(dir.log(), dir.path("newbans.log.bak")).unwrap();
    dir.append("2\n3\n");
    dir.replace("newbans.log", "9\n");
    assert_eq!(read(&mut f), ["2", "3", "9"]);
    assert_eq!(f.take_events(), [FollowEvent::Replaced]);
}

#[test]
fn without_inode_numbers_a_copy_put_in_place_is_seen_once_it_grows() {
    let dir = Dir::new();
    let mut f = Follower::new(TestFs::no_ids(), dir.log(), None);
    dir.append("1\n2\n");
    assert_eq!(read(&mut f), ["1", "2"]);
    // Same first bytes, a new file: only the sizes can tell.
    dir.replace("newbans.log", "1\n2\n");
    assert_eq!(read(&mut f), Vec::<String>::new());
    dir.append("3\n");
    assert_eq!(read(&mut f), ["1", "2", "3"]);
    // And a copy shorter than what we read is seen at once.
    dir.replace("newbans.log", "1\n");
    assert_eq!(read(&mut f), ["1"]);
}

#[test]
fn without_inode_numbers_a_shorter_copy_past_the_fingerprint_is_seen_at_once() {
    let dir = Dir::new();
    let lines: Vec<String> = (0..200).map(|i| format!("line {i:05}\n")).collect();
    dir.append(&lines.concat());
    let mut f = Follower::new(TestFs::no_ids(), dir.log(), None);
    assert_eq!(read(&mut f).len(), 200);
    // The first 1024 bytes are the same; only the size tells.
    dir.replace("newbans.log", &lines[..150].concat());
    assert_eq!(read(&mut f).len(), 150);
    assert_eq!(f.take_events(), [FollowEvent::Replaced]);
}

#[test]
fn without_inode_numbers_resume_finds_the_rotated_file() {
    let dir = Dir::new();
    let mut f = Follower::new(TestFs::no_ids(), dir.log(), None);
    dir.append("1\n");
    assert_eq!(read(&mut f), ["1"]);
    let cursor = f.cursor();
    assert_eq!((cursor.unwrap().dev, cursor.unwrap().ino), (0, 0));
    dir.append("2\n");
    dir.rotate("newbans.log.1");
    dir.append("3\n");
    assert_eq!(
        read(&mut Follower::new(TestFs::no_ids(), dir.log(), cursor)),
        ["2", "3"]
    );
}

#[test]
fn the_appenders_lock_files_are_not_rotated_logs() {
    use super::follower::is_rotated;
    assert!(is_rotated("newbans.log", "newbans.log.1"));
    assert!(is_rotated("newbans.log", "newbans.log-20261121"));
    assert!(!is_rotated("newbans.log", "newbans.log"));
    assert!(!is_rotated("newbans.log", "newbans.log."));
    assert!(!is_rotated("newbans.log", "newbans.log.lock"));
    assert!(!is_rotated("newbans.log", "newbans.log.lock.break"));
    assert!(!is_rotated("newbans.log", "newbans.logx"));
}

#[test]
fn unread_counts_what_is_past_the_last_line_handed_out_and_moves_nothing() {
    let dir = Dir::new();
    let mut f = dir.follower(None);
    assert_eq!(f.unread(1 << 20).unwrap(), None, "nothing open yet");
    dir.append("one\ntwo\n");
    assert_eq!(f.read_lines(1).unwrap().len(), 1);
    let behind = |lines, bytes| Some(Unread { bytes, lines });
    // "two\n" was read into the batch's chunk but not handed out.
    assert_eq!(f.unread(1 << 20).unwrap(), behind(Some(1), 4));
    dir.append("three\nfo");
    assert_eq!(f.unread(1 << 20).unwrap(), behind(Some(2), 12));
    assert_eq!(
        f.unread(3).unwrap(),
        behind(None, 12),
        "not counted past 3 bytes"
    );
    assert_eq!(read(&mut f), ["two", "three"], "nothing skipped");
    assert_eq!(
        f.unread(1 << 20).unwrap(),
        behind(Some(0), 2),
        "the partial line"
    );
    // Once rotated and drained, the old file's unfinished line is no lag.
    dir.rotate("newbans.log.1");
    dir.append("five\nsi");
    assert_eq!(read(&mut f), ["five"]);
    assert_eq!(f.unread(1 << 20).unwrap(), behind(Some(0), 2));
}

fn appended(poll: Poll) -> Vec<String> {
    match poll {
        Poll::Appended(lines) => lines.iter().map(text).collect(),
        other => panic!("expected appended lines, got {other:?}"),
    }
}

#[test]
fn a_poll_reads_appends_by_the_size_and_asks_for_the_full_look_when_the_size_cannot_tell() {
    let dir = Dir::new();
    dir.append("a\n");
    let fs = TestFs {
        sshfs: true,
        ..TestFs::default()
    };
    let mut f = Follower::new(fs, dir.log(), None);
    assert_eq!(
        f.poll(100, SizeFrom::OpenFile),
        Poll::LookFully,
        "nothing open yet"
    );
    assert_eq!(read(&mut f), ["a"]);
    assert_eq!(f.poll(100, SizeFrom::OpenFile), Poll::Unchanged);
    dir.append("b");
    assert!(
        appended(f.poll(100, SizeFrom::OpenFile)).is_empty(),
        "a partial line"
    );
    assert_eq!(
        f.poll(100, SizeFrom::OpenFile),
        Poll::Unchanged,
        "the partial line was read"
    );
    dir.append("\nc\n");
    assert_eq!(appended(f.poll(100, SizeFrom::OpenFile)), ["b", "c"]);
    assert_eq!(f.poll(100, SizeFrom::OpenFile), Poll::Unchanged);
    assert_eq!(f.cursor().unwrap().offset, 6);

    // Truncated and written past our position: its first bytes differ.
    fs::write(dir.log(), "X\nY\nZ\nW\n").unwrap();
    assert_eq!(f.poll(100, SizeFrom::OpenFile), Poll::LookFully);
    assert_eq!(read(&mut f), ["X", "Y", "Z", "W"]);

    // On sshfs the open file answers for the path: a rotation shows as
    // another size, shorter ...
    dir.rotate("newbans.log.1");
    dir.append("d\n");
    assert_eq!(
        f.poll(100, SizeFrom::OpenFile),
        Poll::LookFully,
        "the path's file is shorter"
    );
    assert_eq!(read(&mut f), ["d"]);
    // ... or longer, and then reads through the open file end short of it.
    dir.rotate("newbans.log.2");
    dir.append("e\nf\n");
    assert_eq!(
        f.poll(100, SizeFrom::OpenFile),
        Poll::LookFully,
        "the path's file is longer"
    );
    assert_eq!(read(&mut f), ["e", "f"]);
    assert_eq!(f.poll(100, SizeFrom::OpenFile), Poll::Unchanged);
}

#[test]
fn a_log_gone_from_its_path_is_left_to_the_full_look_though_the_open_file_answers() {
    let dir = Dir::new();
    dir.append("a\n");
    let mut f = Follower::new(TestFs::default(), dir.log(), None);
    assert_eq!(read(&mut f), ["a"]);
    fs::remove_file(dir.log()).unwrap();
    assert_eq!(
        f.poll(100, SizeFrom::OpenFile),
        Poll::Unchanged,
        "only the size is asked"
    );
    assert!(f.read_lines(100).is_err(), "the full look sees it gone");
    assert_eq!(f.poll(100, SizeFrom::OpenFile), Poll::LookFully);
    fs::write(dir.log(), "b\n").unwrap();
    assert_eq!(read(&mut f), ["b"]);
    assert_eq!(f.poll(100, SizeFrom::OpenFile), Poll::Unchanged);
}

#[test]
fn a_poll_from_the_path_sees_a_rotation_where_the_open_file_answers_for_itself() {
    let dir = Dir::new();
    dir.append("a\n");
    let mut f = Follower::new(LocalFs, dir.log(), None);
    assert_eq!(read(&mut f), ["a"]);
    assert_eq!(f.poll(100, SizeFrom::Path), Poll::Unchanged);
    dir.append("b\n");
    assert_eq!(appended(f.poll(100, SizeFrom::Path)), ["b"]);
    // The new file is as long as the old: only its identity tells.
    dir.rotate("newbans.log.1");
    dir.append("c\nd\n");
    assert_eq!(
        f.poll(100, SizeFrom::OpenFile),
        Poll::Unchanged,
        "fstat: the old file"
    );
    assert_eq!(f.poll(100, SizeFrom::Path), Poll::LookFully);
    assert_eq!(read(&mut f), ["c", "d"]);
    assert_eq!(f.poll(100, SizeFrom::Path), Poll::Unchanged);
}
