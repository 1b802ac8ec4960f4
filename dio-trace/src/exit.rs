//! Exit statuses: the contract scripts and CI rely on.

use crate::analysis::Overall;

/// 0 ordered, 1 violation, 2 usage, 3 inconclusive, 4 cannot do the job
/// here, 5 the tracer and the crash truth disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// At least one counted write, and every one ordered.
    Ordered = 0,
    /// At least one violation.
    Violation = 1,
    /// Bad command line.
    Usage = 2,
    /// No trustworthy answer; stderr says why.
    Inconclusive = 3,
    /// Cannot trace here (privilege, BTF, tracefs, kernel, filesystem,
    /// unreadable input); stderr says the cause and the fix.
    Environment = 4,
    /// `verify --crash`: a write's verdict and its crash truth disagree
    /// (an ordered write lost, a violation kept, a write not seen).
    Disagreement = 5,
}

impl From<Overall> for Exit {
    fn from(o: Overall) -> Self {
        match o {
            Overall::Ordered => Exit::Ordered,
            Overall::Violation => Exit::Violation,
            Overall::Inconclusive => Exit::Inconclusive,
        }
    }
}
