//! Reader of the block log the kernel's dm-log-writes target writes.
//!
//! Written from the format the kernel documents
//! (`Documentation/admin-guide/device-mapper/log-writes.rst`,
//! `drivers/md/dm-log-writes.c`): all little endian,
//!
//! ```text
//! sector 0      super:  magic u64, version u64 (1), nr_entries u64, sectorsize u32
//! then, nr_entries times:
//!   1 sector    entry:  sector u64, nr_sectors u64, flags u64, data_len u64,
//!                       then (marks only) data_len bytes of the mark's name
//!   nr_sectors  the data written (none for discards, flushes and marks)
//! ```
//!
//! where "sector" is the data device's logical block size (`sectorsize`),
//! and an entry's `sector` and `nr_sectors` count in it. The kernel logs a
//! write once a later flush completes (a FUA write at once), so the log
//! holds what the device had made durable, in that order; a mark goes in
//! where it was asked for. The super is rewritten after every FUA write and
//! mark, so `nr_entries` covers every entry up to the last mark.
//!
//! Reading is generic over `Read + Seek` so the tests feed it bytes and the
//! tool feeds it the log device's backing file; nothing here opens a file.

use std::io::{self, Read, Seek, SeekFrom};

use thiserror::Error;

/// `WRITE_LOG_MAGIC`.
pub const MAGIC: u64 = 0x006a_7366_7773_6872;
/// `WRITE_LOG_VERSION`.
pub const VERSION: u64 = 1;

pub const FLUSH: u64 = 1 << 0;
pub const FUA: u64 = 1 << 1;
pub const DISCARD: u64 = 1 << 2;
pub const MARK: u64 = 1 << 3;
/// `REQ_META` writes (5.0+); a hint only, replayed like any write.
pub const METADATA: u64 = 1 << 4;

/// Bytes of an entry header before its sector's padding or mark name.
const ENTRY_LEN: usize = 32;
/// Bytes of the super before its sector's padding.
const SUPER_LEN: usize = 28;
/// Data of one entry read at once at most; a bio is far smaller, so a
/// bigger one means a corrupt header, not a real write.
const MAX_ENTRY_BYTES: u64 = 64 << 20;

/// Why a log cannot be read. Each says where and what to do.
#[derive(Debug, Error)]
pub enum LogError {
    #[error("reading the dm-log-writes log: {0}")]
    Io(#[from] io::Error),
    #[error(
        "not a dm-log-writes log (magic {0:#x}, want {MAGIC:#x}): pass the log device, not the data device"
    )]
    Magic(u64),
    #[error("dm-log-writes log version {0}, this reader knows version {VERSION}")]
    Version(u64),
    #[error(
        "dm-log-writes log sector size {0} is not a power of two from 512 to 65536: the super is corrupt"
    )]
    SectorSize(u32),
    #[error(
        "dm-log-writes log truncated in entry {entry} of {total} (at byte {at}): copy the whole log device, after removing the target"
    )]
    Truncated { entry: u64, total: u64, at: u64 },
    #[error("dm-log-writes log entry {entry} (at byte {at}) is malformed: {why}")]
    Malformed { entry: u64, at: u64, why: &'static str },
}

/// The log's super block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Super {
    pub nr_entries: u64,
    pub sectorsize: u32,
}

/// One logged entry, data read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Data that reached the device: `offset` in bytes on the data device.
    Write { offset: u64, data: Vec<u8>, flags: u64 },
    /// A discarded range (reads back as zeros on the devices we replay to).
    Discard { offset: u64, len: u64 },
    /// A completed flush with no data.
    Flush,
    /// A mark, named by whoever sent the `mark` target message.
    Mark(String),
}

/// Reads a log entry by entry, from the first.
pub struct Log<R> {
    r: R,
    sup: Super,
    /// Index of the next entry.
    next: u64,
    /// Byte position of the next entry.
    at: u64,
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// `read_exact`, with end-of-file as `Ok(false)`.
fn fill<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

impl<R: Read + Seek> Log<R> {
    /// Check the super and stand before the first entry.
    pub fn open(mut r: R) -> Result<Self, LogError> {
        r.seek(SeekFrom::Start(0))?;
        let mut b = [0u8; SUPER_LEN];
        if !fill(&mut r, &mut b)? {
            return Err(LogError::Truncated {
                entry: 0,
                total: 0,
                at: 0,
            });
        }
        let magic = le64(&b, 0);
        if magic != MAGIC {
            return Err(LogError::Magic(magic));
        }
        let version = le64(&b, 8);
        if version != VERSION {
            return Err(LogError::Version(version));
        }
        let sectorsize = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
        if !sectorsize.is_power_of_two() || !(512..=65536).contains(&sectorsize) {
            return Err(LogError::SectorSize(sectorsize));
        }
        let sup = Super {
            nr_entries: le64(&b, 16),
            sectorsize,
        };
        let mut log = Self {
            r,
            sup,
            next: 0,
            at: 0,
        };
        log.rewind()?;
        Ok(log)
    }

    pub fn sup(&self) -> Super {
        self.sup
    }

    /// Back to the first entry.
    pub fn rewind(&mut self) -> Result<(), LogError> {
        self.at = u64::from(self.sup.sectorsize);
        self.next = 0;
        self.r.seek(SeekFrom::Start(self.at))?;
        Ok(())
    }

    /// Index of the entry [`Log::next_entry`] reads next.
    pub fn position(&self) -> u64 {
        self.next
    }

    fn truncated(&self) -> LogError {
        LogError::Truncated {
            entry: self.next,
            total: self.sup.nr_entries,
            at: self.at,
        }
    }

    fn malformed(&self, why: &'static str) -> LogError {
        LogError::Malformed {
            entry: self.next,
            at: self.at,
            why,
        }
    }

    /// The next entry, or `None` after the last one the super counts.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, LogError> {
        if self.next >= self.sup.nr_entries {
            return Ok(None);
        }
        let ss = u64::from(self.sup.sectorsize);
        let mut head = vec![0u8; ss as usize];
        if !fill(&mut self.r, &mut head)? {
            return Err(self.truncated());
        }
        let sector = le64(&head, 0);
        let nr_sectors = le64(&head, 8);
        let flags = le64(&head, 16);
        let data_len = le64(&head, 24);
        let offset = sector
            .checked_mul(ss)
            .ok_or_else(|| self.malformed("sector out of range"))?;
        let len = nr_sectors
            .checked_mul(ss)
            .ok_or_else(|| self.malformed("length out of range"))?;
        let entry = if flags & MARK != 0 {
            let end = ENTRY_LEN as u64 + data_len;
            if end > ss {
                return Err(self.malformed("mark name longer than its sector"));
            }
            let name = &head[ENTRY_LEN..end as usize];
            let name = std::str::from_utf8(name).map_err(|_| self.malformed("mark name is not UTF-8"))?;
            Entry::Mark(name.to_owned())
        } else {
            // The kernel zero-fills the rest of a header sector: anything
            // else is a stale or torn sector (what fstests' reader checks too).
            if flags == 0 && nr_sectors == 0 {
                return Err(self.malformed("all-zero header (the log ends before its super says)"));
            }
            if head[ENTRY_LEN..].iter().any(|&b| b != 0) {
                return Err(self.malformed("header padding is not zero"));
            }
            if flags & DISCARD != 0 {
                Entry::Discard { offset, len }
            } else if len == 0 {
                Entry::Flush
            } else {
                if len > MAX_ENTRY_BYTES {
                    return Err(self.malformed("write larger than 64 MiB"));
                }
                let mut data = vec![0u8; len as usize];
                if !fill(&mut self.r, &mut data)? {
                    return Err(self.truncated());
                }
                Entry::Write { offset, data, flags }
            }
        };
        self.at += ss
            + if matches!(entry, Entry::Write { .. }) {
                len
            } else {
                0
            };
        self.next += 1;
        Ok(Some(entry))
    }

    /// Bytes the log's entries take, super included: what to keep of a
    /// log device that is mostly unused (reads the whole log; rewinds).
    pub fn used_bytes(&mut self) -> Result<u64, LogError> {
        self.rewind()?;
        while self.next_entry()?.is_some() {}
        let len = self.at;
        self.rewind()?;
        Ok(len)
    }

    /// Every mark's name, in log order (reads the whole log; rewinds).
    pub fn marks(&mut self) -> Result<Vec<String>, LogError> {
        self.rewind()?;
        let mut marks = Vec::new();
        while let Some(e) = self.next_entry()? {
            if let Entry::Mark(m) = e {
                marks.push(m);
            }
        }
        self.rewind()?;
        Ok(marks)
    }
}

/// Writes logs in the kernel's format: for tests of the reader and the
/// replay (the real kernel's output is checked against a fixture).
#[cfg(test)]
pub mod write {
    use super::*;

    pub fn log(sectorsize: u32, entries: &[Entry]) -> Vec<u8> {
        let ss = sectorsize as usize;
        let mut out = vec![0u8; ss];
        out[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        out[8..16].copy_from_slice(&VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&(entries.len() as u64).to_le_bytes());
        out[24..28].copy_from_slice(&sectorsize.to_le_bytes());
        for e in entries {
            let mut head = vec![0u8; ss];
            let (sector, nr, flags, name, data): (u64, u64, u64, &[u8], &[u8]) = match e {
                Entry::Write { offset, data, flags } => {
                    (offset / ss as u64, (data.len() / ss) as u64, *flags, &[], data)
                }
                Entry::Discard { offset, len } => (offset / ss as u64, len / ss as u64, DISCARD, &[], &[]),
                Entry::Flush => (0, 0, FLUSH, &[], &[]),
                Entry::Mark(m) => (0, 0, MARK, m.as_bytes(), &[]),
            };
            head[0..8].copy_from_slice(&sector.to_le_bytes());
            head[8..16].copy_from_slice(&nr.to_le_bytes());
            head[16..24].copy_from_slice(&flags.to_le_bytes());
            head[24..32].copy_from_slice(&(name.len() as u64).to_le_bytes());
            head[32..32 + name.len()].copy_from_slice(name);
            out.extend_from_slice(&head);
            out.extend_from_slice(data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry::Write {
                offset: 4096,
                data: vec![0xd1; 4096],
                flags: 0,
            },
            Entry::Flush,
            Entry::Mark("o-sync-append/0/0".into()),
            Entry::Discard { offset: 0, len: 8192 },
            Entry::Write {
                offset: 8192,
                data: vec![7; 4096],
                flags: FUA | METADATA,
            },
            Entry::Mark("o-sync-append/0/1".into()),
        ]
    }

    fn bytes_len(ss: u32) -> u64 {
        write::log(ss, &sample()).len() as u64
    }

    #[test]
    fn reads_back_what_was_written() {
        for ss in [512, 4096] {
            let bytes = write::log(ss, &sample());
            let mut log = Log::open(Cursor::new(bytes)).unwrap();
            assert_eq!(log.sup().nr_entries, 6);
            let mut got = Vec::new();
            while let Some(e) = log.next_entry().unwrap() {
                got.push(e);
            }
            assert_eq!(got, sample());
            assert_eq!(log.marks().unwrap(), ["o-sync-append/0/0", "o-sync-append/0/1"]);
            assert_eq!(log.position(), 0, "marks() rewinds");
            assert_eq!(log.used_bytes().unwrap(), bytes_len(ss));
        }
    }

    #[test]
    fn refuses_what_is_not_a_log() {
        assert!(matches!(
            Log::open(Cursor::new(vec![0u8; 4096])),
            Err(LogError::Magic(0))
        ));
        assert!(matches!(
            Log::open(Cursor::new(vec![0u8; 3])),
            Err(LogError::Truncated { .. })
        ));
        let mut bytes = write::log(512, &sample());
        bytes[8] = 2;
        assert!(matches!(Log::open(Cursor::new(bytes)), Err(LogError::Version(2))));
        let mut bytes = write::log(512, &sample());
        bytes[24..28].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(
            Log::open(Cursor::new(bytes)),
            Err(LogError::SectorSize(1000))
        ));
    }

    #[test]
    fn a_truncated_or_torn_log_is_an_error_not_a_panic() {
        let bytes = write::log(512, &sample());
        for cut in (512..bytes.len()).step_by(97) {
            let mut log = Log::open(Cursor::new(bytes[..cut].to_vec())).unwrap();
            let err = loop {
                match log.next_entry() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("a log cut at {cut} read to its end"),
                    Err(e) => break e,
                }
            };
            assert!(matches!(err, LogError::Truncated { .. }), "{err}");
            assert!(err.to_string().contains("copy the whole log"));
        }
        // The super counts one entry more than was written: zeros follow.
        let mut bytes = write::log(512, &sample());
        bytes[16] = 7;
        bytes.extend_from_slice(&[0u8; 512]);
        let mut log = Log::open(Cursor::new(bytes)).unwrap();
        let err = std::iter::from_fn(|| log.next_entry().transpose())
            .find_map(Result::err)
            .unwrap();
        assert!(err.to_string().contains("all-zero header"), "{err}");
        // A header with junk in its padding (sample()'s first entry).
        let mut bytes = write::log(512, &sample());
        bytes[512 + 100] = 1;
        let mut log = Log::open(Cursor::new(bytes)).unwrap();
        assert!(matches!(
            log.next_entry(),
            Err(LogError::Malformed { entry: 0, .. })
        ));
        // A mark whose name runs past its sector.
        let mut bytes = write::log(512, &[Entry::Mark("m".into())]);
        bytes[512 + 24..512 + 32].copy_from_slice(&600u64.to_le_bytes());
        let mut log = Log::open(Cursor::new(bytes)).unwrap();
        assert!(matches!(log.next_entry(), Err(LogError::Malformed { .. })));
    }
}
