//! Replay a dm-log-writes log onto a blank device up to a mark: the disk a
//! power cut at that instant leaves (the log holds only what the device had
//! made durable, in order). Mounting the result runs journal recovery or
//! roll-forward as a reboot would.
//!
//! The target is a trait so the tests replay into memory and the tool into
//! a sparse file (a discard becomes a punched hole there).

use std::io::{Read, Seek};

use thiserror::Error;

use super::log::{Entry, Log, LogError};

/// Where a replay writes.
pub trait Target {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()>;
    /// Make `len` bytes at `offset` read as zeros (a discard).
    fn zero(&mut self, offset: u64, len: u64) -> std::io::Result<()>;
}

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the log has no mark {mark:?} ({seen} marks, the last {last:?}): did the writer drop it?")]
    NoMark {
        mark: String,
        seen: u64,
        last: Option<String>,
    },
    #[error("writing the replay target at byte {offset}: {source}")]
    Target {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
}

/// What a replay applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Entries read, the mark included.
    pub entries: u64,
    pub writes: u64,
    pub bytes: u64,
}

/// Replay every entry from the log's current position through the mark
/// named `mark`, onto `target`. The log stands after the mark afterwards,
/// so consecutive marks can be replayed onto one target incrementally.
pub fn to_mark<R: Read + Seek>(
    log: &mut Log<R>,
    mark: &str,
    target: &mut dyn Target,
) -> Result<Replayed, ReplayError> {
    let mut done = Replayed::default();
    let mut seen = 0;
    let mut last = None;
    while let Some(entry) = log.next_entry()? {
        done.entries += 1;
        match entry {
            Entry::Write { offset, data, .. } => {
                target
                    .write_at(offset, &data)
                    .map_err(|source| ReplayError::Target { offset, source })?;
                done.writes += 1;
                done.bytes += data.len() as u64;
            }
            Entry::Discard { offset, len } => target
                .zero(offset, len)
                .map_err(|source| ReplayError::Target { offset, source })?,
            Entry::Flush => {}
            Entry::Mark(m) if m == mark => return Ok(done),
            Entry::Mark(m) => {
                seen += 1;
                last = Some(m);
            }
        }
    }
    Err(ReplayError::NoMark {
        mark: mark.to_owned(),
        seen,
        last,
    })
}

/// A regular file as the target: a sparse image the tool then mounts
/// through a loop device.
impl Target for std::fs::File {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, data, offset)
    }

    fn zero(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: plain integers on an open descriptor.
        let r = unsafe {
            libc::fallocate(
                self.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
            return Ok(());
        }
        // No hole punching here (an old tmpfs): write the zeros.
        let zeros = vec![0u8; 1 << 20];
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(zeros.len() as u64) as usize;
            self.write_at(at, &zeros[..n])?;
            at += n as u64;
        }
        Ok(())
    }
}

/// An in-memory device (tests).
impl Target for Vec<u8> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let end = offset as usize + data.len();
        if end > self.len() {
            return Err(std::io::Error::other("write past the end of the device"));
        }
        self[offset as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn zero(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        let end = (offset + len).min(self.len() as u64) as usize;
        self[offset as usize..end].fill(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::super::log::{FUA, write};
    use super::*;

    fn w(offset: u64, byte: u8) -> Entry {
        Entry::Write {
            offset,
            data: vec![byte; 512],
            flags: 0,
        }
    }

    #[test]
    fn replays_up_to_each_mark_and_no_further() {
        let bytes = write::log(
            512,
            &[
                w(0, 1),
                Entry::Flush,
                Entry::Mark("a".into()),
                w(512, 2),
                Entry::Discard { offset: 0, len: 512 },
                Entry::Mark("b".into()),
                w(1024, 3),
            ],
        );
        let open = || Log::open(Cursor::new(bytes.clone())).unwrap();
        let mut dev = vec![0u8; 2048];
        let done = to_mark(&mut open(), "a", &mut dev).unwrap();
        assert_eq!(
            done,
            Replayed {
                entries: 3,
                writes: 1,
                bytes: 512
            }
        );
        assert_eq!((dev[0], dev[512], dev[1024]), (1, 0, 0));

        let mut dev = vec![0u8; 2048];
        to_mark(&mut open(), "b", &mut dev).unwrap();
        assert_eq!(
            (dev[0], dev[512], dev[1024]),
            (0, 2, 0),
            "the discard zeroed block 0"
        );

        // Incremental: "a" then "b" on one target gives what "b" alone gives.
        let mut log = open();
        let mut inc = vec![0u8; 2048];
        to_mark(&mut log, "a", &mut inc).unwrap();
        to_mark(&mut log, "b", &mut inc).unwrap();
        assert_eq!(inc, dev);
    }

    #[test]
    fn a_missing_mark_names_the_last_one_seen() {
        let bytes = write::log(512, &[Entry::Mark("p/0/0".into()), w(0, 1)]);
        let mut log = Log::open(Cursor::new(bytes)).unwrap();
        let err = to_mark(&mut log, "p/0/1", &mut vec![0u8; 512]).unwrap_err();
        assert!(
            matches!(&err, ReplayError::NoMark { seen: 1, last: Some(l), .. } if l == "p/0/0"),
            "{err}"
        );
    }

    #[test]
    fn a_write_off_the_device_is_an_error() {
        let bytes = write::log(
            512,
            &[
                Entry::Write {
                    offset: 4096,
                    data: vec![1; 512],
                    flags: FUA,
                },
                Entry::Mark("m".into()),
            ],
        );
        let mut log = Log::open(Cursor::new(bytes)).unwrap();
        let err = to_mark(&mut log, "m", &mut vec![0u8; 1024]).unwrap_err();
        assert!(matches!(err, ReplayError::Target { offset: 4096, .. }), "{err}");
    }

    #[test]
    fn a_file_target_punches_discards() {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(8192).unwrap();
        f.write_at(0, &[9u8; 8192]).unwrap();
        Target::zero(&mut f, 4096, 4096).unwrap();
        let mut back = Vec::new();
        std::io::Seek::rewind(&mut f).unwrap();
        std::io::Read::read_to_end(&mut f, &mut back).unwrap();
        assert_eq!((back[4095], back[4096], back[8191], back.len()), (9, 0, 0, 8192));
    }
}
