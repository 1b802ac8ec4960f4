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
pub mod replay;
pub mod rig;
