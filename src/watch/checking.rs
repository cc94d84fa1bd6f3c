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
use std::sync::atomic::AtomicBool;
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

/// Lines of a window, with whether each needs its signature checked.
struct Segment<'k> {
    reads: Vec<Read<'k>>,
    marks: Vec<bool>,
}

/// Calls `decide` on each line of `parsed`, in order, with its signature's
/// check where `marks` asks for one (`None` elsewhere). The checks run on
/// the pool, segment by segment, ahead of the decisions. Not to be called
/// from one of the pool's own threads: the calling thread waits for the
/// segments without working, so a pool of one thread would never check
/// them (the daemon's loop has a thread of its own).
pub fn decide_checked<'k>(
    parsed: Vec<Read<'k>>,
    marks: Vec<bool>,
    decide: &mut dyn FnMut(Read<'k>, Checked),
) {
    let segments = segments(parsed, marks);
    if segments.len() == 1 && !segments[0].marks.iter().any(|m| *m) {
        // Nothing to check: no trip through the pool.
        let Segment { reads, .. } = segments.into_iter().next().unwrap();
        return reads.into_iter().for_each(|read| decide(read, None));
    }
    // After a failed batch the next are checked one by one (a forged log
    // must not cost a batch and a single check per record).
    let failed = AtomicBool::new(false);
    rayon::in_place_scope(|scope| {
        let (done, arrivals) = mpsc::channel();
        let count = segments.len();
        for (index, segment) in segments.into_iter().enumerate() {
            let done = done.clone();
            let failed = &failed;
            scope.spawn(move |_| {
                let results = check(&segment, failed);
                // The receiver waits for every segment, unless a job
                // panicked: the scope then carries the panic on.
                let _ = done.send((index, segment.reads, results));
            });
        }
        drop(done);
        let mut early = BTreeMap::new();
        for index in 0..count {
            let (reads, results) = loop {
                if let Some(arrived) = early.remove(&index) {
                    break arrived;
                }
                let Ok((at, reads, results)) = arrivals.recv() else {
                    return; // A job panicked: the scope re-raises it.
                };
                early.insert(at, (reads, results));
            };
            for (read, checked) in reads.into_iter().zip(results) {
                decide(read, checked);
            }
        }
    });
}

/// Cuts a window into segments of about equal numbers of checks, none over
/// [`SEGMENT_MAX`], and as many as a multiple of the pool's threads, so
/// that no thread is left with the last segment alone while the others
/// wait. Lines without a check go with the segment before them.
fn segments<'k>(parsed: Vec<Read<'k>>, marks: Vec<bool>) -> Vec<Segment<'k>> {
    let total = marks.iter().filter(|m| **m).count();
    let threads = rayon::current_num_threads().max(1);
    let count = total.div_ceil(SEGMENT_MAX).div_ceil(threads) * threads;
    let per_segment = total.div_ceil(count.max(1)).max(1);
    let mut segments = Vec::new();
    let mut current = Segment {
        reads: Vec::new(),
        marks: Vec::new(),
    };
    let mut in_current = 0;
    for (read, mark) in parsed.into_iter().zip(marks) {
        if mark && in_current == per_segment {
            segments.push(std::mem::replace(
                &mut current,
                Segment {
                    reads: Vec::new(),
                    marks: Vec::new(),
                },
            ));
            in_current = 0;
        }
        in_current += usize::from(mark);
        current.reads.push(read);
        current.marks.push(mark);
    }
    segments.push(current);
    segments
}

/// The checks of a segment's marked lines, each in its line's place.
fn check(segment: &Segment<'_>, failed: &AtomicBool) -> Vec<Checked> {
    let checks: Vec<SignatureCheck<'_>> = segment
        .reads
        .iter()
        .zip(&segment.marks)
        .filter(|(_, mark)| **mark)
        .filter_map(|(read, _)| match read {
            Ok((record, Ok(Screened::Pending(pending)))) => Some(SignatureCheck {
                record,
                pending: pending.clone(),
            }),
            _ => None,
        })
        .collect();
    let mut results = verify_chunk(&checks, failed).into_iter();
    segment
        .reads
        .iter()
        .zip(&segment.marks)
        .map(|(read, mark)| {
            let checkable = matches!(read, Ok((_, Ok(Screened::Pending(_)))));
            (*mark && checkable).then(|| results.next()).flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RejectReason;
    use crate::trust::{TrustPolicy, TrustedKeys, generate, public_line, sign};

    fn not_a_record() -> Read<'static> {
        Err(RejectReason::Empty)
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
    fn read<'k>(records: &[Record], policy: &'k TrustPolicy) -> Vec<Read<'k>> {
        records
            .iter()
            .map(|r| Ok((r.clone(), policy.screen(r))))
            .collect()
    }

    #[test]
    fn segments_keep_the_lines_in_order_and_share_the_checks_among_the_threads() {
        let threads = rayon::current_num_threads();
        // 5,000 checks among 7,000 lines: a multiple of the threads of
        // segments, none over SEGMENT_MAX checks.
        let marks: Vec<bool> = (0..7000).map(|i| i % 7 < 5).collect();
        let parsed = (0..7000).map(|_| not_a_record()).collect();
        let segments = segments(parsed, marks.clone());
        assert_eq!(segments.len() % threads, 0, "{} segments", segments.len());
        let counts: Vec<usize> = segments
            .iter()
            .map(|s| s.marks.iter().filter(|m| **m).count())
            .collect();
        assert!(counts.iter().all(|c| *c <= SEGMENT_MAX), "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 5000);
        let rejoined: Vec<bool> = segments.into_iter().flat_map(|s| s.marks).collect();
        assert_eq!(rejoined, marks);
    }

    #[test]
    fn a_window_without_checks_is_one_segment() {
        let segments = segments((0..10).map(|_| not_a_record()).collect(), vec![false; 10]);
        assert_eq!(segments.len(), 1);
        assert_eq!(segments[0].reads.len(), 10);
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
        decide_checked(parsed, marks, &mut |read, checked| {
            let (record, _) = read.unwrap();
            seen.push((record.fields.id.unwrap().to_string(), checked));
        });
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

    /// Review 17: lines that are not records, records not marked and a
    /// window of nothing are each decided once, in order, with no check;
    /// a window of only unmarked lines takes no trip through the pool.
    #[test]
    fn empty_unmarked_and_rejected_windows_are_decided_once_in_order() {
        let mut seen = 0;
        decide_checked(Vec::new(), Vec::new(), &mut |_, _| seen += 1);
        assert_eq!(seen, 0);
        let parsed: Vec<Read<'_>> = (0..300).map(|_| not_a_record()).collect();
        let mut checks = Vec::new();
        decide_checked(parsed, vec![false; 300], &mut |read, checked| {
            assert!(read.is_err());
            checks.push(checked);
        });
        assert_eq!(checks, vec![None; 300]);
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
            decide_checked(parsed, vec![true; 600], &mut |_, checked| {
                assert_eq!(checked, Some(Ok(Provenance::Verified)));
                decided += 1;
                if decided == 10 {
                    panic!("deciding failed");
                }
            })
        }));
        assert!(outcome.is_err());
        assert_eq!(decided, 10);
    }
}
