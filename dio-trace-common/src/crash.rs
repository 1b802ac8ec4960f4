//! What a crash left of a file, and whether that agrees with a verdict.
//!
//! Two harnesses ask this: `cargo xtask vm crash` (crash the guest with
//! sysrq, boot again, read the file) and `dio-trace verify --crash` (replay
//! a dm-log-writes log to the moment a write returned, mount, read the
//! file). Both classify here, so the two can never disagree on what
//! "kept" means (STYLE 15).

/// What is left of a file after a crash and a remount (journal recovery,
/// roll-forward) ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Survived {
    /// The file is gone: its creation was never made durable.
    Missing,
    /// Its size, and how many of its bytes are not zero. Writers write
    /// non-zero bytes; an unwritten extent whose conversion was lost reads
    /// as zeros.
    File { size: u64, data: u64 },
}

/// What a file must hold when every write up to the one in question was
/// made durable before it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// Its size.
    pub size: u64,
    /// How many of its bytes are written (non-zero) data.
    pub data: u64,
}

/// The crash outcome of one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The size and the data are there.
    Kept,
    /// The file is shorter: its size update was not journaled before the
    /// sync that completed the write.
    SizeLost,
    /// The size is there but some data reads as zeros: an unwritten
    /// extent's conversion never reached the journal.
    DataLost,
    /// No file: nothing was committed, not even its creation.
    FileLost,
    /// More than the writes put there: the harness, not the kernel, is
    /// wrong (a write counted twice, a stale file).
    Unexpected,
}

impl Outcome {
    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Kept => "kept",
            Outcome::SizeLost => "size-lost",
            Outcome::DataLost => "data-lost",
            Outcome::FileLost => "file-lost",
            Outcome::Unexpected => "unexpected",
        }
    }

    /// Did the write's promise (durable on return) break?
    pub fn lost(self) -> bool {
        matches!(self, Outcome::SizeLost | Outcome::DataLost | Outcome::FileLost)
    }
}

/// Classify what survived against what every durable write leaves.
pub fn classify(survived: Survived, expect: Expect) -> Outcome {
    match survived {
        Survived::Missing => Outcome::FileLost,
        Survived::File { size, .. } if size < expect.size => Outcome::SizeLost,
        Survived::File { size, .. } if size > expect.size => Outcome::Unexpected,
        Survived::File { data, .. } if data < expect.data => Outcome::DataLost,
        Survived::File { data, .. } if data == expect.data => Outcome::Kept,
        Survived::File { .. } => Outcome::Unexpected,
    }
}

/// Does a verdict ("ordered", "violation", ...) agree with the crash? An
/// ordered write must be kept; a violation must be lost. Anything else
/// (inconclusive, missing, an unexpected outcome) disagrees.
pub fn agrees(verdict: &str, outcome: Outcome) -> bool {
    match verdict {
        "ordered" => outcome == Outcome::Kept,
        "violation" => outcome.lost(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: Expect = Expect {
        size: 8192,
        data: 8192,
    };

    #[test]
    fn every_outcome() {
        let f = |size, data| Survived::File { size, data };
        assert_eq!(classify(Survived::Missing, TWO), Outcome::FileLost);
        assert_eq!(classify(f(4096, 4096), TWO), Outcome::SizeLost);
        assert_eq!(classify(f(0, 0), TWO), Outcome::SizeLost);
        assert_eq!(classify(f(8192, 4096), TWO), Outcome::DataLost);
        assert_eq!(classify(f(8192, 8192), TWO), Outcome::Kept);
        assert_eq!(classify(f(12288, 12288), TWO), Outcome::Unexpected);
        // Writes into fallocated space: the size is there from the start;
        // only the data says whether the write survived.
        let into = Expect {
            size: 16384,
            data: 8192,
        };
        assert_eq!(classify(f(16384, 8192), into), Outcome::Kept);
        assert_eq!(classify(f(16384, 4096), into), Outcome::DataLost);
        assert_eq!(classify(f(16384, 12288), into), Outcome::Unexpected);
    }

    #[test]
    fn agreement() {
        assert!(agrees("ordered", Outcome::Kept));
        assert!(
            !agrees("ordered", Outcome::SizeLost),
            "the worst case: a clean verdict, a lost size"
        );
        for lost in [Outcome::SizeLost, Outcome::DataLost, Outcome::FileLost] {
            assert!(agrees("violation", lost));
        }
        assert!(!agrees("violation", Outcome::Kept));
        assert!(!agrees("violation", Outcome::Unexpected));
        assert!(!agrees("inconclusive", Outcome::Kept));
        assert!(!agrees("missing", Outcome::SizeLost));
    }
}
