//! The dm-log-writes reader and replay on a log the kernel wrote: Debian's
//! 6.1.0-57 cloud kernel in QEMU, `dio-trace verify --crash --fresh-fs
//! /dev/vda --count 1 --keep-log` (every write ordered and kept there),
//! gzip'd from 1,080,320 to 20,910 bytes.

use std::{collections::BTreeMap, io::Read as _};

use dio_trace::crash::{
    log::{Entry, Log, LogError},
    replay::{self, Target},
};

fn fixture() -> Vec<u8> {
    let gz = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/log-writes-debian-6.1.log.gz"
    ))
    .unwrap();
    let mut log = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut log)
        .unwrap();
    log
}

/// A sparse device: 512-byte sectors that were written.
#[derive(Default)]
struct Sparse(BTreeMap<u64, Vec<u8>>);

impl Target for Sparse {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        for (i, s) in data.chunks(512).enumerate() {
            self.0.insert(offset / 512 + i as u64, s.to_vec());
        }
        Ok(())
    }
    fn zero(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        let first = offset / 512;
        self.0.retain(|s, _| *s < first || *s >= first + len / 512);
        Ok(())
    }
}

impl Sparse {
    /// 4 KiB-aligned blocks that hold nothing but the writers' 0xd1 bytes.
    fn written_blocks(&self) -> usize {
        self.0
            .keys()
            .filter(|s| *s % 8 == 0)
            .filter(|s| {
                (0..8).all(|i| {
                    self.0
                        .get(&(*s + i))
                        .is_some_and(|d| d.iter().all(|&b| b == 0xd1))
                })
            })
            .count()
    }
}

const COUNTED: [&str; 11] = [
    "o-sync-append",
    "o-dsync-append",
    "rwf-sync-append",
    "rwf-dsync-append",
    "aio-dsync-append",
    "uring-dsync-append",
    "concurrent-o-sync-append",
    "o-append-dsync",
    "o-dsync-into-fallocated",
    "rwf-dsync-into-fallocated",
    "o-sync-into-fallocated",
];

#[test]
fn the_kernels_log_reads_to_its_end_with_every_mark_in_order() {
    let mut log = Log::open(std::io::Cursor::new(fixture())).unwrap();
    assert_eq!(log.sup().sectorsize, 512, "loop devices have 512-byte sectors");
    let marks = log.marks().unwrap();
    // Each counted write's mark, then the target's own on removal.
    let mut want: Vec<String> = Vec::new();
    for p in COUNTED {
        let writers = if p == "concurrent-o-sync-append" { 8 } else { 1 };
        let mut these: Vec<String> = (0..writers).map(|w| format!("{p}/{w}/0")).collect();
        want.append(&mut these);
    }
    assert_eq!(marks.last().map(String::as_str), Some("dm-log-writes-end"));
    let body = &marks[..marks.len() - 1];
    let (mut sorted, mut want_sorted) = (body.to_vec(), want.clone());
    sorted.sort();
    want_sorted.sort();
    assert_eq!(sorted, want_sorted);
    // Patterns run one after another (the 8 writers of one mark in any order).
    let mut order: Vec<&str> = body.iter().map(|m| m.split('/').next().unwrap()).collect();
    order.dedup();
    assert_eq!(order, COUNTED);
    let (mut writes, mut flushes) = (0, 0);
    while let Some(e) = log.next_entry().unwrap() {
        match e {
            Entry::Write { .. } => writes += 1,
            Entry::Flush => flushes += 1,
            _ => {}
        }
    }
    assert!(writes > 30 && flushes > 10, "{writes} writes, {flushes} flushes");
}

#[test]
fn each_write_is_in_the_log_before_its_mark() {
    let bytes = fixture();
    let mut log = Log::open(std::io::Cursor::new(bytes)).unwrap();
    let mut dev = Sparse::default();
    // Incremental replay: each appended block is there by its write's mark.
    replay::to_mark(&mut log, "o-sync-append/0/0", &mut dev).unwrap();
    let first = dev.written_blocks();
    assert!(first >= 1, "the first write's block");
    replay::to_mark(&mut log, "o-dsync-append/0/0", &mut dev).unwrap();
    assert!(dev.written_blocks() > first);
}

#[test]
fn a_cut_kernel_log_is_an_error_that_says_so() {
    let bytes = fixture();
    let cut = bytes[..bytes.len() / 2].to_vec();
    let mut log = Log::open(std::io::Cursor::new(cut)).unwrap();
    let err = replay::to_mark(&mut log, "dm-log-writes-end", &mut Sparse::default()).unwrap_err();
    assert!(
        matches!(err, replay::ReplayError::Log(LogError::Truncated { .. })),
        "{err}"
    );
}
