//! Checking a window's signatures on the pool's threads while the loop's
//! thread decides the records already checked.
//!
//! A catch-up of signed records is mostly signature checks (about 7 µs of
//! CPU each, against 2 µs for the rest of a record). The daemon marks which
//! records of a window need a check (see `Daemon::read_window`), and
//! [`decide_checked`] cuts the window into segments of about one batch
//! equation's worth of checks each. Each segment is moved to a job on the
//! pool, which checks it and sends it back; the loop's thread takes the
//! segments back in log order and decides each line, so that deciding,
//! which must be in order and on one thread, overlaps the checks of the
//! segments after it, and every core checks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use crate::record::{self, Record};
use crate::trust::{CHUNK, Provenance, Screened, SignatureCheck, Untrusted, verify_chunk};

/// A line read: its record and what screening its signature found, or
/// why it is not a record.
pub type Read<'k> = Result<(Record, Result<Screened<'k>, Untrusted>), record::RejectReason>;

/// A signature check's outcome, for a line that had one.
pub type Checked = Option<Result<Provenance, Untrusted>>;

/// The most checks in a segment: one batch equation. Smaller ones leave
/// less for one thread to finish at the end of a window; larger ones cost
/// less per signature (see [`CHUNK`]).
const SEGMENT_MAX: usize = CHUNK;

/// A window's lines in order: each line read, `None` for a line that is
/// no record to decide (a compaction marker).
pub type Window<'k> = Vec<Option<Read<'k>>>;

/// Calls `decide` on each line of `window`, in order, with its signature's
/// check where `marks` asks for one (`None` elsewhere). The checks run on
/// the pool, segment by segment, ahead of the decisions. `failed` says
/// that the last batch equation failed, and is left saying so if the last
/// one here did: the next are then checked one by one until a chunk comes
/// out clean (a forged log must not cost a batch equation and a single
/// check per record), and the caller carries it to the next window; a
/// window with nothing to check clears it. Not to be called
/// from one of the pool's own threads: the calling thread waits for the
/// segments without working, so a pool of one thread would never check
/// them (the daemon's loop has a thread of its own).
///
/// The segments are borrowed from `window`, not copied out of it: a
/// window of 10,000 records is some megabytes, and a forged log, all of
/// it to check, must not hold more memory than an unsigned one.
pub fn decide_checked<'k>(
    mut window: Window<'k>,
    marks: Vec<bool>,
    failed: &AtomicBool,
    decide: &mut dyn FnMut(Read<'k>, Checked),
) {
    if !marks.contains(&true) {
        // Nothing to check: no trip through the pool, and no more reason
        // to check one by one (nor to read little at a time, which the
        // caller does while `failed` holds): forged records are no longer
        // what the log is made of.
        failed.store(false, Ordering::Relaxed);
        return window
            .into_iter()
            .flatten()
            .for_each(|read| decide(read, None));
    }
    let lengths = segment_lengths(&marks);
    rayon::in_place_scope(|scope| {
        let (done, arrivals) = mpsc::channel();
        let mut rest: &mut [Option<Read<'k>>] = &mut window;
        let mut rest_marks: &[bool] = &marks;
        for (index, &length) in lengths.iter().enumerate() {
            let (lines, tail) = std::mem::take(&mut rest).split_at_mut(length);
            let (lines_marks, tail_marks) = rest_marks.split_at(length);
            (rest, rest_marks) = (tail, tail_marks);
            let done = done.clone();
            scope.spawn(move |_| {
                let results = check(lines, lines_marks, failed);
                // The receiver waits for every segment, unless a job
                // panicked: the scope then carries the panic on.
                let _ = done.send((index, lines, results));
            });
        }
        drop(done);
        let mut early = BTreeMap::new();
        for index in 0..lengths.len() {
            let (lines, results) = loop {
                if let Some(arrived) = early.remove(&index) {
                    break arrived;
                }
                let Ok((at, lines, results)) = arrivals.recv() else {
                    return; // A job panicked: the scope re-raises it.
                };
                early.insert(at, (lines, results));
            };
            for (line, checked) in lines.iter_mut().zip(results) {
                if let Some(read) = line.take() {
                    decide(read, checked);
                }
            }
        }
    });
}

/// The lengths of a window's segments, of about equal numbers of checks,
/// none over [`SEGMENT_MAX`], and as many as a multiple of the pool's
/// threads, so that no thread is left with the last segment alone while
/// the others wait. Lines without a check go with the segment before them.
fn segment_lengths(marks: &[bool]) -> Vec<usize> {
    let total = marks.iter().filter(|m| **m).count();
    let threads = rayon::current_num_threads().max(1);
    let count = total.div_ceil(SEGMENT_MAX).div_ceil(threads) * threads;
    let per_segment = total.div_ceil(count.max(1)).max(1);
    let mut lengths = Vec::with_capacity(count);
    let (mut length, mut in_current) = (0, 0);
    for &mark in marks {
        if mark && in_current == per_segment {
            lengths.push(std::mem::take(&mut length));
            in_current = 0;
        }
        in_current += usize::from(mark);
        length += 1;
    }
    lengths.push(length);
    lengths
}

/// The checks of a segment's marked lines, each in its line's place.
fn check(lines: &[Option<Read<'_>>], marks: &[bool], failed: &AtomicBool) -> Vec<Checked> {
    let checks: Vec<SignatureCheck<'_>> = lines
        .iter()
        .zip(marks)
        .filter_map(|(line, mark)| to_check(line, *mark))
        .collect();
    let mut results = verify_chunk(&checks, failed).into_iter();
    lines
        .iter()
        .zip(marks)
        .map(|(line, mark)| to_check(line, *mark).and_then(|_| results.next()))
        .collect()
}

/// The signature check a line asks for: marked, and a record with a
/// signature still to check.
fn to_check<'a, 'k>(line: &'a Option<Read<'k>>, mark: bool) -> Option<SignatureCheck<'a>>
where
    'k: 'a,
{
    match (mark, line) {
        (true, Some(Ok((record, Ok(Screened::Pending(pending)))))) => Some(SignatureCheck {
            record,
            pending: pending.clone(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RejectReason;
    use crate::trust::{TrustPolicy, TrustedKeys, generate, public_line, sign};

    fn not_a_record() -> Option<Read<'static>> {
        Some(Err(RejectReason::Empty))
    }

    /// A policy that trusts `key` for node `web1` and requires signatures.
    fn trusting(key: &ed25519_dalek::SigningKey) -> TrustPolicy {
        TrustPolicy {
            keys: TrustedKeys::parse(&format!("web1 {}\n", public_line(key)), "test").unwrap(),
            require_signed: true,
            allow_unsigned_logger: false,
            operators: Vec::new(),
        }
    }

    /// `n` bans from `web1` with ids `0..n`, each signed by what `signer`
    /// picks for its number.
    fn signed_bans<'a>(
        n: usize,
        signer: impl Fn(usize) -> &'a ed25519_dalek::SigningKey,
    ) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let mut r = record::parse(
                    format!(
                        "<13>Nov 21 18:00:00 banshare[1]: HOST 10.0.{}.{} PORT 22 jail=sshd node=web1 \
                         ts=2026-11-21T18:00:00Z bantime=600 id={i:016x}",
                        i / 256,
                        i % 256
                    )
                    .as_bytes(),
                )
                .unwrap();
                sign(&mut r, signer(i)).unwrap();
                r
            })
            .collect()
    }

    /// The lines `records` read and screened by `policy`.
    fn read<'k>(records: &[Record], policy: &'k TrustPolicy) -> Window<'k> {
        records
            .iter()
            .map(|r| Some(Ok((r.clone(), policy.screen(r)))))
            .collect()
    }

    #[test]
    fn segments_keep_the_lines_in_order_and_share_the_checks_among_the_threads() {
        let threads = rayon::current_num_threads();
        // 5,000 checks among 7,000 lines: a multiple of the threads of
        // segments, none over SEGMENT_MAX checks.
        let marks: Vec<bool> = (0..7000).map(|i| i % 7 < 5).collect();
        let lengths = segment_lengths(&marks);
        assert_eq!(lengths.len() % threads, 0, "{} segments", lengths.len());
        assert_eq!(lengths.iter().sum::<usize>(), 7000);
        let mut at = 0;
        let counts: Vec<usize> = lengths
            .iter()
            .map(|length| {
                at += length;
                marks[at - length..at].iter().filter(|m| **m).count()
            })
            .collect();
        assert!(counts.iter().all(|c| *c <= SEGMENT_MAX), "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 5000);
    }

    #[test]
    fn a_window_without_checks_is_one_segment() {
        assert_eq!(segment_lengths(&[false; 10]), vec![10]);
    }

    /// Every line is decided once, in order, with its own check: the
    /// marked lines signed by their node hold, a marked forgery fails, and
    /// the lines not marked get no check.
    #[test]
    fn each_line_is_decided_in_order_with_its_own_check() {
        let key = generate().unwrap();
        let forger = generate().unwrap();
        let policy = trusting(&key);
        let n = 5000;
        let records = signed_bans(n, |i| if i == 3001 { &forger } else { &key });
        let parsed = read(&records, &policy);
        let marks: Vec<bool> = (0..n).map(|i| i % 5 != 0).collect();
        let mut seen = Vec::new();
        decide_checked(
            parsed,
            marks,
            &AtomicBool::new(false),
            &mut |read, checked| {
                let (record, _) = read.unwrap();
                seen.push((record.fields.id.unwrap().to_string(), checked));
            },
        );
        assert_eq!(seen.len(), n);
        for (i, (id, checked)) in seen.iter().enumerate() {
            assert_eq!(*id, format!("{i:016x}"));
            let expected = match (i % 5 != 0, i == 3001) {
                (false, _) => None,
                (true, false) => Some(Ok(Provenance::Verified)),
                (true, true) => Some(Err(Untrusted::BadSignature)),
            };
            assert_eq!(*checked, expected, "line {i}");
        }
    }

    /// A window of forged records leaves the failed equation for the next
    /// window to know (which checks one by one), and a clean window, or
    /// one with nothing to check, clears it; every record gets its own
    /// answer either way.
    #[test]
    fn a_failed_equation_is_carried_to_the_next_window_until_a_clean_one() {
        let key = generate().unwrap();
        let forger = generate().unwrap();
        let policy = trusting(&key);
        let failed = AtomicBool::new(false);
        for (signer, expected, failed_after) in [
            (&forger, Err(Untrusted::BadSignature), true),
            (&key, Ok(Provenance::Verified), false),
        ] {
            let records = signed_bans(3000, |_| signer);
            let mut answers = Vec::new();
            decide_checked(
                read(&records, &policy),
                vec![true; 3000],
                &failed,
                &mut |_, c| answers.push(c),
            );
            assert_eq!(answers, vec![Some(expected); 3000]);
            assert_eq!(failed.load(Ordering::Relaxed), failed_after);
        }
        // A window with nothing to check clears it too (review 21: the
        // caller reads little at a time while it holds).
        failed.store(true, Ordering::Relaxed);
        let unmarked = read(&signed_bans(10, |_| &forger), &policy);
        decide_checked(unmarked, vec![false; 10], &failed, &mut |_, c| {
            assert_eq!(c, None)
        });
        assert!(!failed.load(Ordering::Relaxed));
    }

    /// Review 17: lines that are not records, records not marked and a
    /// window of nothing are each decided once, in order, with no check;
    /// a window of only unmarked lines takes no trip through the pool.
    #[test]
    fn empty_unmarked_and_rejected_windows_are_decided_once_in_order() {
        let mut seen = 0;
        decide_checked(
            Vec::new(),
            Vec::new(),
            &AtomicBool::new(false),
            &mut |_, _| seen += 1,
        );
        assert_eq!(seen, 0);
        let mut parsed: Window<'_> = (0..300).map(|_| not_a_record()).collect();
        // A compaction marker is no line to decide.
        parsed[7] = None;
        let mut checks = Vec::new();
        decide_checked(
            parsed,
            vec![false; 300],
            &AtomicBool::new(false),
            &mut |read, checked| {
                assert!(read.is_err());
                checks.push(checked);
            },
        );
        assert_eq!(checks, vec![None; 299]);
    }

    /// Review 17: a panic while deciding ends the window with that panic
    /// (the jobs still checking finish and their sends fail quietly), and
    /// does not hang the loop.
    #[test]
    fn a_panic_while_deciding_is_carried_on_without_hanging() {
        let key = generate().unwrap();
        let policy = trusting(&key);
        let records = signed_bans(600, |_| &key);
        let parsed = read(&records, &policy);
        let mut decided = 0;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decide_checked(
                parsed,
                vec![true; 600],
                &AtomicBool::new(false),
                &mut |_, checked| {
                    assert_eq!(checked, Some(Ok(Provenance::Verified)));
                    decided += 1;
                    if decided == 10 {
                        panic!("deciding failed");
                    }
                },
            )
        }));
        assert!(outcome.is_err());
        assert_eq!(decided, 10);
    }
}
