use std::fs;
use std::io::Write as _;
use std::time::Duration;

use super::*;
use crate::transport::feed::Position;

/// The checkpoint after record `seq` of a ZeroMQ feed, with a rate window
/// so that the breaker's state is saved with it.
fn after(seq: u64) -> WatchCheckpoint {
    WatchCheckpoint {
        position: Position {
            kind: "zmq".into(),
            log: "zmq+tcp://192.0.2.1:5678".into(),
            seq,
            at: serde_json::json!({ "epoch": "00112233aabbccdd" }),
        },
        breaker: Some(
            serde_json::from_value(serde_json::json!({
                "windows": [{ "node": "web1", "times": (0..seq as i64).collect::<Vec<_>>() }]
            }))
            .unwrap(),
        ),
        last_seen: Default::default(),
    }
}

/// A coalescing saver whose durable save never falls due by itself.
fn coalescing(dir: &std::path::Path) -> (CursorSaver, Option<WatchCheckpoint>) {
    let (mut saver, saved) = CursorSaver::open(StateDir::open(dir).unwrap(), Saving::Coalesced)
        .expect("open the state directory");
    saver.durable_every = Duration::from_secs(3600);
    (saver, saved)
}

/// What a watcher restarted on `dir` resumes from.
fn restarted(dir: &std::path::Path) -> Option<WatchCheckpoint> {
    CursorSaver::open(StateDir::open(dir).unwrap(), Saving::EveryBatch)
        .unwrap()
        .1
}

fn cursor_json(dir: &std::path::Path) -> Option<WatchCheckpoint> {
    StateDir::open(dir).unwrap().load_checkpoint().unwrap()
}

#[test]
fn coalesced_saves_go_to_the_journal_and_a_kill_resumes_after_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut saver, saved) = coalescing(dir.path());
    assert_eq!(saved, None);
    for seq in 1..=5 {
        saver.save(after(seq)).unwrap();
    }
    // Not durable yet: cursor.json was never written.
    assert_eq!(cursor_json(dir.path()), None);
    assert!(saver.due().is_some());
    // A SIGKILL: the saver is gone without a word. The restart resumes
    // after the last applied batch, neither before (a replay) nor after.
    drop(saver);
    assert_eq!(restarted(dir.path()), Some(after(5)));
    // ... and folded it into cursor.json, the journal gone.
    assert_eq!(cursor_json(dir.path()), Some(after(5)));
    assert!(!dir.path().join(JOURNAL).exists());
}

#[test]
fn the_durable_save_is_made_when_due_and_empties_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut saver, _) = coalescing(dir.path());
    saver.save(after(1)).unwrap();
    saver.save(after(2)).unwrap();
    saver.sync(false).unwrap();
    assert_eq!(cursor_json(dir.path()), None, "not due yet");
    saver.durable_every = Duration::ZERO;
    saver.sync(false).unwrap();
    assert_eq!(cursor_json(dir.path()), Some(after(2)));
    assert_eq!(fs::metadata(dir.path().join(JOURNAL)).unwrap().len(), 0);
    assert_eq!(saver.due(), None, "nothing left to make durable");
    // Due again: the next save goes to cursor.json at once.
    saver.save(after(3)).unwrap();
    assert_eq!(cursor_json(dir.path()), Some(after(3)));
    assert_eq!(saver.due(), None);
}

#[test]
fn a_cut_or_foreign_journal_line_falls_back_to_the_line_before_or_cursor_json() {
    let dir = tempfile::tempdir().unwrap();
    let (mut saver, _) = coalescing(dir.path());
    saver.save(after(1)).unwrap();
    saver.sync(true).unwrap();
    saver.save(after(2)).unwrap();
    saver.save(after(3)).unwrap();
    drop(saver);
    let mut journal = fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join(JOURNAL))
        .unwrap();
    // A kill in the middle of a write leaves a line without its end, and
    // a crash of the host may leave zeros: both are behind, never ahead.
    let cut = versioned_json_line(&after(4)).unwrap();
    journal.write_all(b"\0\0\0\n").unwrap();
    journal.write_all(&cut[..cut.len() / 2]).unwrap();
    drop(journal);
    assert_eq!(restarted(dir.path()), Some(after(3)));

    // Nothing good in the journal: cursor.json.
    fs::write(dir.path().join(JOURNAL), b"{\"version\":3}\nnot json\n").unwrap();
    assert_eq!(restarted(dir.path()), Some(after(3)));
    assert!(!dir.path().join(JOURNAL).exists());
}

#[test]
fn every_batch_saving_writes_cursor_json_each_time_and_no_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut saver, _) =
        CursorSaver::open(StateDir::open(dir.path()).unwrap(), Saving::EveryBatch).unwrap();
    for seq in 1..=3 {
        saver.save(after(seq)).unwrap();
        assert_eq!(cursor_json(dir.path()), Some(after(seq)));
        assert_eq!(saver.due(), None);
    }
    assert!(!dir.path().join(JOURNAL).exists());
}

#[test]
fn a_long_journal_is_folded_into_cursor_json_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut saver, _) = coalescing(dir.path());
    let line = versioned_json_line(&after(100)).unwrap().len() as u64 + 1;
    let saves = JOURNAL_MAX / line + 2;
    for _ in 0..saves {
        saver.save(after(100)).unwrap();
        assert!(fs::metadata(dir.path().join(JOURNAL)).unwrap().len() <= JOURNAL_MAX);
    }
    assert_eq!(cursor_json(dir.path()), Some(after(100)));
}

#[test]
fn a_failed_durable_save_keeps_the_journaled_checkpoint_for_the_next_try() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (mut saver, _) = coalescing(&state);
    saver.save(after(1)).unwrap();
    // cursor.json cannot be replaced: a directory stands in its way.
    fs::create_dir(state.join("cursor.json")).unwrap();
    assert!(saver.sync(true).is_err());
    assert!(saver.due().is_some(), "still to be made durable");
    fs::remove_dir(state.join("cursor.json")).unwrap();
    // Until it is tried again the watcher holds, and is not woken in a spin.
    assert!(saver.sync(false).is_err(), "holds until the next try");
    assert!(saver.due().unwrap() > std::time::Instant::now());
    saver.sync(true).unwrap();
    assert!(saver.sync(false).is_ok());
    assert_eq!(cursor_json(&state), Some(after(1)));
}
