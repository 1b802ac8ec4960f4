//! Crash truth for every write: the scratch filesystem sits on a
//! dm-log-writes device, the pattern driver drops a mark each time a write
//! returns, and the log is replayed up to each mark onto a blank device,
//! which is mounted (journal recovery, roll-forward) and read, as after a
//! power cut at that instant.
//!
//! Kept small and separate like fstests' `src/log-writes/` (STYLE 16): the
//! log reader and the replay are pure over `Read + Seek` and a [`replay::Target`].

pub mod dm;
pub mod log;
pub mod loopdev;
pub mod replay;
pub mod report;
pub mod rig;
pub mod truth;

use crate::workload::Pattern;

/// The mark dropped when write `index` of `writer` returns.
pub fn mark_name(pattern: Pattern, writer: u32, index: u32) -> String {
    format!("{}/{writer}/{index}", pattern.name())
}

/// Drops the marks of one pattern's writes into a log-writes device.
pub struct Marker {
    ctl: dm::Control,
    dm: String,
    pattern: Pattern,
}

impl Marker {
    pub fn new(dm: &str, pattern: Pattern) -> Result<Self, crate::error::EnvError> {
        Ok(Self {
            ctl: dm::Control::open()?,
            dm: dm.to_owned(),
            pattern,
        })
    }

    pub fn mark(&self, writer: u32, index: u32) -> anyhow::Result<()> {
        let name = mark_name(self.pattern, writer, index);
        self.ctl
            .message(&self.dm, &format!("mark {name}"))
            .map_err(|e| anyhow::anyhow!("cannot mark {name} in the log-writes device {}: {e}", self.dm))
    }
}
