//! The run's overall answer, and the reasons when it cannot give one.

use super::engine::Tally;

/// Overall verdict of a run (or of a replayed trace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overall {
    /// At least one counted write, all ordered, nothing lost.
    Ordered,
    /// At least one violation.
    Violation,
    /// No trustworthy answer; `Summary::reasons` says why.
    Inconclusive,
}

impl Overall {
    pub fn name(self) -> &'static str {
        match self {
            Overall::Ordered => "ordered",
            Overall::Violation => "violation",
            Overall::Inconclusive => "inconclusive",
        }
    }
}

/// Everything a report's last line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub tally: Tally,
    /// Direct writes the kernel saw that passed the kernel-side filters.
    pub direct_writes: u64,
    /// Records the kernel could not send (ring buffer full), all CPUs.
    pub lost_records: u64,
    /// Why the answer is weaker than it looks (missing probes, losses, ...).
    pub reasons: Vec<String>,
    pub overall: Overall,
}

/// How a reason starts when the kernel skipped runs of a program whose
/// absence reads as a violation (a size update or sync not seen): then a
/// violation is no proof either, and the answer is inconclusive. A prefix,
/// so a replayed trace (whose trailer keeps the reasons) decides the same.
pub const DOUBTED_VIOLATIONS: &str = "violations cannot be trusted:";

/// How the reason starts when no write was judged because the filesystem
/// wrote every sync direct write through the page cache
/// ([`went_buffered`]): it takes the place of "no size-extending sync
/// direct write was seen", which would hide why.
pub const ALL_WENT_BUFFERED: &str = "no direct write reached the kernel's direct I/O:";

/// What the sync direct writes a filesystem wrote through the page cache
/// (`Counter::BufferedFallback`) mean for a run that judged `counted`
/// writes: with none judged, the reason there are none (a reason, since
/// nothing was judged); else a note for the summary, not a reason (they
/// were not direct writes, the ordering in question does not apply).
pub fn went_buffered(buffered: u64, counted: u64) -> Option<(String, bool)> {
    if buffered == 0 {
        return None;
    }
    let what = format!(
        "btrfs wrote {buffered} sync-flavoured direct writes through the page cache (btrfs_buffered_write: \
         checksummed files on kernels that refuse direct writes to them, misaligned writes, the rest of a short \
         one); they were not direct writes, so the ordering in question does not apply"
    );
    Some(if counted == 0 {
        (
            format!(
                "{ALL_WENT_BUFFERED} {what}; to trace btrfs direct writes, write to a nodatacow file \
                 (`chattr +C` on its directory before the file is made)"
            ),
            true,
        )
    } else {
        (what, false)
    })
}

/// Decide the overall verdict. `problems` are facts found outside the
/// engine (a needed probe that did not attach, an unsupported kernel):
/// any of them keeps the answer from being "ordered".
pub fn summarize(tally: &Tally, direct_writes: u64, lost_records: u64, problems: Vec<String>) -> Summary {
    let mut reasons = problems;
    let lost = lost_records.max(tally.lost_records);
    if lost > 0 {
        reasons.push(format!(
            "{lost} records were lost (ring buffer full): writes may be missing; raise --ringbuf-size"
        ));
    }
    if tally.orphaned_lost > 0 {
        reasons.push(format!(
            "{} events belonged to writes whose start was lost",
            tally.orphaned_lost
        ));
    }
    if tally.evicted > 0 {
        reasons.push(format!(
            "{} writes were closed early: too many in flight",
            tally.evicted
        ));
    }
    if tally.inconclusive > 0 {
        reasons.push(format!("{} writes could not be judged", tally.inconclusive));
    }
    if tally.counted() == 0 && !reasons.iter().any(|r| r.starts_with(ALL_WENT_BUFFERED)) {
        reasons.push("no size-extending sync direct write was seen".into());
    }
    let doubted = reasons.iter().any(|r| r.starts_with(DOUBTED_VIOLATIONS));
    let overall = if tally.violations > 0 && !doubted {
        Overall::Violation
    } else if reasons.is_empty() {
        Overall::Ordered
    } else {
        Overall::Inconclusive
    };
    Summary {
        tally: tally.clone(),
        direct_writes,
        lost_records: lost,
        reasons,
        overall,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(ordered: u64, violations: u64, inconclusive: u64) -> Tally {
        Tally {
            ordered,
            violations,
            inconclusive,
            ..Tally::default()
        }
    }

    #[test]
    fn all_ordered_is_ordered() {
        let s = summarize(&tally(3, 0, 0), 3, 0, vec![]);
        assert_eq!(s.overall, Overall::Ordered);
        assert!(s.reasons.is_empty());
    }

    #[test]
    fn writes_gone_buffered_say_so_and_never_read_as_nothing_seen() {
        assert_eq!(went_buffered(0, 0), None);
        let (reason, is_reason) = went_buffered(4, 0).unwrap();
        assert!(is_reason && reason.starts_with(ALL_WENT_BUFFERED) && reason.contains("btrfs wrote 4"));
        let s = summarize(&tally(0, 0, 0), 0, 0, vec![reason]);
        assert_eq!(s.overall, Overall::Inconclusive);
        assert_eq!(s.reasons.len(), 1, "{:?}", s.reasons);
        assert!(!s.reasons[0].contains("no size-extending"));
        // Beside judged writes, a note: the verdict stays theirs.
        let (note, is_reason) = went_buffered(2, 3).unwrap();
        assert!(!is_reason && note.starts_with("btrfs wrote 2"));
    }

    #[test]
    fn nothing_counted_is_never_clean() {
        assert_eq!(
            summarize(&tally(0, 0, 0), 10, 0, vec![]).overall,
            Overall::Inconclusive
        );
    }

    #[test]
    fn losses_and_missing_probes_are_never_clean() {
        assert_eq!(
            summarize(&tally(3, 0, 0), 3, 1, vec![]).overall,
            Overall::Inconclusive
        );
        let s = summarize(&tally(3, 0, 0), 3, 0, vec!["probe x did not attach".into()]);
        assert_eq!(s.overall, Overall::Inconclusive);
        assert_eq!(s.reasons[0], "probe x did not attach");
    }

    #[test]
    fn a_doubted_violation_does_not_win() {
        let why = format!("{DOUBTED_VIOLATIONS} the sync probe was skipped");
        assert_eq!(
            summarize(&tally(0, 3, 0), 3, 0, vec![why]).overall,
            Overall::Inconclusive
        );
    }

    #[test]
    fn a_violation_wins() {
        assert_eq!(
            summarize(&tally(3, 1, 2), 6, 5, vec![]).overall,
            Overall::Violation
        );
    }

    // Found by `cargo xtask mutants` (issue 23): each of these alone must
    // keep a run from being clean, and say so.
    #[test]
    fn orphans_evictions_and_unjudged_writes_each_spoil_a_clean_run() {
        let spoiled = |t: Tally, why: &str| {
            let s = summarize(&t, 3, 0, vec![]);
            assert_eq!(s.overall, Overall::Inconclusive, "{why}");
            assert_eq!(s.reasons, [why]);
        };
        spoiled(
            Tally {
                orphaned_lost: 2,
                ..tally(3, 0, 0)
            },
            "2 events belonged to writes whose start was lost",
        );
        spoiled(
            Tally {
                evicted: 1,
                ..tally(3, 0, 0)
            },
            "1 writes were closed early: too many in flight",
        );
        spoiled(tally(2, 0, 1), "1 writes could not be judged");
    }

    #[test]
    fn overall_verdicts_are_named_as_reports_print_them() {
        assert_eq!(Overall::Ordered.name(), "ordered");
        assert_eq!(Overall::Violation.name(), "violation");
        assert_eq!(Overall::Inconclusive.name(), "inconclusive");
    }
}
