//! Decoded records, independent of the wire layout and of the mechanism
//! that produced them.

use dio_trace_common::{
    fs::Fs,
    kind::RecordKind,
    probe::Mechanism,
    record::{EVENT_FS_MASK, EVENT_FS_SHIFT, EVENT_NEW_EXTENT, EVENT_NO_DISKSIZE, EVENT_SYNC},
};

/// One inode fact, as any backend reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: RecordKind,
    pub mechanism: Mechanism,
    pub ts_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub cpu: u32,
    /// Records of this inode the kernel could not send before this one.
    pub lost: u32,
    pub dev: u32,
    pub ino: u64,
    pub flags: u32,
    pub i_size: i64,
    pub i_disksize: i64,
    pub pos: i64,
    pub len: u64,
    pub arg: u64,
    pub comm: String,
    /// Symbolized `arg` for size updates (`ext4_dio_write_end_io+0x..`).
    pub caller: Option<String>,
    /// The writer's cgroup v2 path (`WriteBegin` only), from the root of
    /// the cgroup2 mount, when the kernel sent it and it could be named.
    pub cgroup: Option<String>,
    /// The kernel call stack at this event, when the kernel sent one
    /// (the sync, size update or completion of a write that is not
    /// ordered; every sync and size update with `--stacks`).
    pub stack: Option<Stack>,
}

/// A kernel call stack, innermost frame first. Annotation only: no verdict
/// reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stack {
    pub frames: Vec<Frame>,
    /// The negative errno `bpf_get_stack` returned, when it could not walk
    /// the stack (then `frames` is empty).
    pub error: Option<i64>,
}

/// One return address, and its `name+0xoff [module]` when kernel symbols
/// could be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub addr: u64,
    pub symbol: Option<String>,
}

impl Frame {
    /// The frame as reports show it: its symbol; with `raw` (or without a
    /// symbol and `raw`) the address too. `None`: nothing may be shown
    /// (no symbol, and raw addresses are off: KASLR).
    pub fn display(&self, raw: bool) -> Option<String> {
        match (&self.symbol, raw) {
            (Some(s), false) => Some(s.clone()),
            (Some(s), true) => Some(format!("{:#x} {s}", self.addr)),
            (None, true) => Some(format!("{:#x}", self.addr)),
            (None, false) => None,
        }
    }
}

impl Event {
    /// Where the write this event belongs to ends (`WriteBegin` only).
    pub fn end(&self) -> i64 {
        self.pos.saturating_add(self.len as i64)
    }

    /// The on-disk size (`i_disksize` on ext4), if the kernel could read it.
    pub fn disksize(&self) -> Option<i64> {
        (self.flags & EVENT_NO_DISKSIZE == 0).then_some(self.i_disksize)
    }

    /// The filesystem of the write (`WriteBegin`): 0 in traces before
    /// format 3 means ext4; decoding refuses numbers it does not know.
    pub fn fs(&self) -> Fs {
        Fs::from_u32((self.flags & EVENT_FS_MASK) >> EVENT_FS_SHIFT).unwrap_or(Fs::Ext4)
    }

    /// Counted for going into new or unwritten blocks inside the file, not
    /// for extending it (`WriteBegin` only): it needs a sync, no size update.
    pub fn new_extent(&self) -> bool {
        self.flags & EVENT_NEW_EXTENT != 0
    }

    /// "sync" for O_SYNC/RWF_SYNC, "dsync" for O_DSYNC/RWF_DSYNC.
    pub fn sync_flavour(&self) -> &'static str {
        if self.flags & EVENT_SYNC != 0 {
            "sync"
        } else {
            "dsync"
        }
    }

    /// Key the engine matches events by.
    pub fn key(&self) -> (u32, u64) {
        (self.dev, self.ino)
    }
}

/// What the engine consumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Event(Event),
    /// The path of an armed write's file; `None` when it could not be
    /// resolved.
    Path {
        dev: u32,
        ino: u64,
        path: Option<String>,
    },
    /// The write open on this inode has said all it will (the kernel sent
    /// it whole and forgot it): judge it now.
    Done {
        dev: u32,
        ino: u64,
    },
    /// The kernel lost `records` records (ring buffer full) up to `ts_ns`:
    /// every write in flight may miss some of its events.
    Lost {
        records: u64,
        ts_ns: u64,
    },
}
