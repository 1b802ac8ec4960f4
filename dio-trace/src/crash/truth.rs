//! Each counted write's verdict against its crash truth: which writes a
//! pattern made, which verdict the tracer gave each, what a replay to its
//! return left, and whether the two agree. Pure: the replays are done by
//! the caller and handed in.

use dio_trace_common::crash::{Outcome, Survived, agrees, classify};

use crate::{exit::Exit, workload::Pattern};

/// One counted write, judged twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteTruth {
    pub pattern: Pattern,
    pub writer: u32,
    pub index: u32,
    /// The tracer's verdict ("ordered", "violation", "inconclusive",
    /// "failed"), or "missing" when it reported no such write.
    pub verdict: String,
    /// What the replay to this write's return left, or why there is no
    /// replay (no mark, a mount that failed).
    pub survived: Result<Survived, String>,
    pub outcome: Option<Outcome>,
}

impl WriteTruth {
    pub fn new(
        pattern: Pattern,
        (writer, index): (u32, u32),
        verdict: Option<&str>,
        survived: Result<Survived, String>,
        (count, size): (u32, u64),
    ) -> Self {
        let outcome = survived
            .as_ref()
            .ok()
            .map(|s| classify(*s, pattern.expect_after(index, count, size)));
        Self {
            pattern,
            writer,
            index,
            verdict: verdict.unwrap_or("missing").to_owned(),
            survived,
            outcome,
        }
    }

    pub fn mark(&self) -> String {
        super::mark_name(self.pattern, self.writer, self.index)
    }

    /// The crash column: an outcome, or "no-replay".
    pub fn crash(&self) -> &'static str {
        self.outcome.map_or("no-replay", Outcome::name)
    }

    pub fn agrees(&self) -> bool {
        self.outcome.is_some_and(|o| agrees(&self.verdict, o)) || self.hidden()
    }

    /// A violation that was kept where writers share a journal: the sync
    /// did run before the size update, but another writer's commit made
    /// the late update durable before this write returned, closing the
    /// window a crash would have hit (seen on buggy-6.1 with 8 writers).
    /// Not a disagreement: the ordering bug is real and the tracer right;
    /// only a single writer's crash shows the loss every time.
    pub fn hidden(&self) -> bool {
        self.pattern.files() > 1 && self.verdict == "violation" && self.outcome == Some(Outcome::Kept)
    }

    /// The tracer gave no verdict to check: an inconclusive write (its
    /// reason is on the tracer's line for it) neither agrees nor
    /// disagrees. A write it did not report at all ("missing") is a miss,
    /// and disagrees.
    pub fn unjudged(&self) -> bool {
        self.verdict == "inconclusive"
    }

    /// The result column: `agree`, `hidden` (see [`WriteTruth::hidden`]),
    /// `unjudged` (see [`WriteTruth::unjudged`]) or `DISAGREE`.
    pub fn result(&self) -> &'static str {
        if self.hidden() {
            "hidden"
        } else if self.unjudged() {
            "unjudged"
        } else if self.agrees() {
            "agree"
        } else {
            "DISAGREE"
        }
    }

    /// "8192 bytes, 4096 of them written data", "no file", or the replay's error.
    pub fn left(&self) -> String {
        match &self.survived {
            Ok(Survived::Missing) => "no file".into(),
            Ok(Survived::File { size, data }) => format!("{size} bytes, {data} of them written data"),
            Err(e) => format!("no replay: {e}"),
        }
    }

    /// Neither agrees nor is unjudged.
    pub fn disagrees(&self) -> bool {
        !self.agrees() && !self.unjudged()
    }

    /// Why this write disagrees, for the report (`None` when it does not).
    pub fn disagreement(&self) -> Option<String> {
        self.disagrees().then(|| {
            format!(
                "{}: verdict {} but crash {} ({})",
                self.mark(),
                self.verdict,
                self.crash(),
                self.left()
            )
        })
    }
}

/// Which writer and write a tracer report is: the writer from the file's
/// name for the concurrent pattern (FILE/0..7), the index from its offset.
pub fn locate(
    pattern: Pattern,
    path: Option<&str>,
    offset: i64,
    count: u32,
    size: u64,
) -> Option<(u32, u32)> {
    let writer = if pattern.files() > 1 {
        path?
            .rsplit('/')
            .next()?
            .parse()
            .ok()
            .filter(|w| *w < pattern.files())?
    } else {
        0
    };
    Some((writer, pattern.index_at(offset, count, size)?))
}

/// The verdict of what `write()` returned, from the reports of one write's
/// attempts in order: an attempt that failed and was tried again (an
/// io_uring write's `IOCB_NOWAIT` try gets -EAGAIN, and a worker makes it
/// again) is not the write; the last attempt that did not fail is, else
/// the last one.
pub fn returned<'a>(reports: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    reports.fold(None, |kept, v| match kept {
        Some(k) if v == "failed" && k != "failed" => Some(k),
        _ => Some(v),
    })
}

/// The exit status with crash truth: any disagreement is 5; else what
/// `verify` alone says (inconclusive, 3, where a write was unjudged).
pub fn exit(verify: Exit, truths: &[WriteTruth]) -> Exit {
    if !truths.iter().any(WriteTruth::disagrees) {
        verify
    } else {
        Exit::Disagreement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u64 = 4096;

    fn t(p: Pattern, index: u32, verdict: &str, size: u64, data: u64) -> WriteTruth {
        WriteTruth::new(
            p,
            (0, index),
            Some(verdict),
            Ok(Survived::File { size, data }),
            (2, SIZE),
        )
    }

    #[test]
    fn appends_grow_write_by_write() {
        let p = Pattern::OSyncAppend;
        assert_eq!(t(p, 0, "ordered", 4096, 4096).crash(), "kept");
        assert_eq!(t(p, 1, "ordered", 8192, 8192).crash(), "kept");
        // Buggy kernel: at write 1's return only write 0's size is durable.
        let lost = t(p, 1, "violation", 4096, 4096);
        assert_eq!((lost.crash(), lost.agrees()), ("size-lost", true));
        let bad = t(p, 1, "ordered", 4096, 4096);
        assert!(!bad.agrees());
        assert_eq!(
            bad.disagreement().unwrap(),
            "o-sync-append/0/1: verdict ordered but crash size-lost (4096 bytes, 4096 of them written data)"
        );
    }

    #[test]
    fn a_kept_violation_is_hidden_only_among_writers_sharing_a_journal() {
        let kept = |p| {
            WriteTruth::new(
                p,
                (3, 0),
                Some("violation"),
                Ok(Survived::File {
                    size: 4096,
                    data: 4096,
                }),
                (2, SIZE),
            )
        };
        let c = kept(Pattern::ConcurrentOSyncAppend);
        assert!(c.hidden() && c.agrees());
        assert_eq!(c.result(), "hidden");
        let single = kept(Pattern::OSyncAppend);
        assert!(!single.hidden() && !single.agrees());
        assert_eq!(single.result(), "DISAGREE");
        // An ordered write that was lost is never hidden.
        let lost = WriteTruth::new(
            Pattern::ConcurrentOSyncAppend,
            (3, 0),
            Some("ordered"),
            Ok(Survived::File { size: 0, data: 0 }),
            (2, SIZE),
        );
        assert!(!lost.agrees());
    }

    #[test]
    fn other_patterns_expect_their_own_shape() {
        // O_APPEND writes follow the block the file starts with.
        assert_eq!(t(Pattern::OAppendDsync, 0, "ordered", 8192, 8192).crash(), "kept");
        // Writes into fallocated space: the size is there, data grows.
        let p = Pattern::ODsyncIntoFallocated;
        assert_eq!(t(p, 0, "ordered", 8192, 4096).crash(), "kept");
        assert_eq!(t(p, 1, "violation", 8192, 4096).crash(), "data-lost");
    }

    #[test]
    fn no_report_or_no_replay_never_agrees() {
        let p = Pattern::ODsyncAppend;
        let missing = WriteTruth::new(p, (0, 0), None, Ok(Survived::Missing), (2, SIZE));
        assert_eq!(
            (missing.verdict.as_str(), missing.crash()),
            ("missing", "file-lost")
        );
        assert!(!missing.agrees());
        let no_replay = WriteTruth::new(p, (0, 0), Some("ordered"), Err("no mark".into()), (2, SIZE));
        assert_eq!(no_replay.crash(), "no-replay");
        assert!(!no_replay.agrees());
        assert_eq!(exit(Exit::Ordered, &[no_replay]), Exit::Disagreement);
        assert_eq!(
            exit(Exit::Violation, &[t(p, 0, "violation", 0, 0)]),
            Exit::Violation
        );
        assert_eq!(exit(Exit::Ordered, &[]), Exit::Ordered);
    }

    #[test]
    fn an_inconclusive_write_is_unjudged_whatever_the_crash() {
        let p = Pattern::ConcurrentOSyncAppend;
        for (size, data) in [(0, 0), (4096, 4096)] {
            let w = t(p, 0, "inconclusive", size, data);
            assert!(w.unjudged() && !w.agrees() && !w.hidden());
            assert_eq!((w.result(), w.disagreement()), ("unjudged", None));
            // Verify's own status (inconclusive) stands: not 5.
            assert_eq!(exit(Exit::Inconclusive, &[w]), Exit::Inconclusive);
        }
        // Beside a disagreement, 5 still wins.
        let lost = t(p, 1, "ordered", 0, 0);
        assert_eq!(
            exit(Exit::Inconclusive, &[t(p, 0, "inconclusive", 0, 0), lost]),
            Exit::Disagreement
        );
        // Only "inconclusive" is unjudged: a missing write is a miss.
        assert!(!WriteTruth::new(p, (0, 0), None, Ok(Survived::Missing), (2, SIZE)).unjudged());
    }

    #[test]
    fn a_retried_attempt_gives_way_to_the_write_that_returned() {
        assert_eq!(returned(["failed", "violation"].into_iter()), Some("violation"));
        assert_eq!(returned(["ordered", "failed"].into_iter()), Some("ordered"));
        assert_eq!(returned(["failed", "failed"].into_iter()), Some("failed"));
        assert_eq!(
            returned(["ordered", "inconclusive"].into_iter()),
            Some("inconclusive")
        );
        assert_eq!(returned(std::iter::empty()), None);
    }

    #[test]
    fn reports_are_located_by_file_and_offset() {
        let c = Pattern::ConcurrentOSyncAppend;
        assert_eq!(
            locate(c, Some("/mnt/x/dio-trace-verify-c/7"), 4096, 2, SIZE),
            Some((7, 1))
        );
        assert_eq!(locate(c, Some("/mnt/x/c/8"), 0, 2, SIZE), None);
        assert_eq!(locate(c, None, 0, 2, SIZE), None);
        assert_eq!(locate(Pattern::OSyncAppend, None, 4096, 2, SIZE), Some((0, 1)));
        assert_eq!(
            locate(Pattern::OSyncAppend, None, 8192, 2, SIZE),
            None,
            "past the count"
        );
        assert_eq!(locate(Pattern::OAppendDsync, None, 4096, 2, SIZE), Some((0, 0)));
        assert_eq!(locate(Pattern::OAppendDsync, None, 0, 2, SIZE), None);
    }
}
