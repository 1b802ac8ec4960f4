//! User-space cost per write: raw ring-buffer records through the same
//! feed (decode, annotate, engine) that live tracing and replay use, as
//! whole-write records, settled records (alone and in per-CPU batches, as
//! the kernel sends most writes) and one record per event (a full
//! timeline). Reports records per second on one core.

use std::{collections::HashMap, sync::Arc};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dio_trace::{
    analysis::{Engine, EngineConfig, Summary, engine::WriteReport},
    collect::{
        decode::record_bytes,
        feed::{Annotator, Feed},
    },
    report::{Reporter, RunInfo},
};
use dio_trace_common::{
    kind::RecordKind,
    probe::Mechanism,
    record::{
        CgroupRecord, EVENT_DSYNC, EVENT_FINAL, EVENT_SYNC, InodeEvent, PATH_DEPTH, PATH_NAME_LEN,
        PathRecord, RecordHeader, SETTLED_BATCH, SettledBatch, SettledWrite, Step, WriteRecord,
    },
};

/// Names as the live annotator gives them: a path for each file's path
/// record, a cgroup for each process, and the caller of every size update
/// from a cache of a few call sites (what live pays per write).
#[derive(Default)]
struct Names {
    symbols: HashMap<u64, Option<Arc<str>>>,
}

impl Annotator for Names {
    fn symbol(&mut self, addr: u64) -> Option<Arc<str>> {
        self.symbols
            .entry(addr)
            .or_insert_with(|| Some(format!("ext4_dio_write_end_io+{:#x}", addr & 0xfff).into()))
            .clone()
    }
    fn path(&mut self, _: u32, ino: u64, _: u32, names: &[String], _: bool) -> Option<Arc<str>> {
        Some(format!("/mnt/wal/{}-{ino}", names.first().map_or("", String::as_str)).into())
    }
    fn cgroup(&mut self, _: u64) -> Option<Arc<str>> {
        Some("/system.slice/postgresql.service".into())
    }
}

fn bytes<T: Copy>(v: &T) -> Vec<u8> {
    record_bytes(v).to_vec()
}

fn event(kind: RecordKind, ino: u64, ts: u64, pos: i64, disksize: i64) -> InodeEvent {
    InodeEvent {
        header: RecordHeader {
            kind: kind as u32,
            mechanism: Mechanism::Tracepoint as u32,
            ts_ns: ts,
            pid: 1,
            tgid: 1,
            cpu: 0,
            lost: 0,
        },
        dev: 7 << 20,
        flags: if kind == RecordKind::WriteBegin {
            EVENT_SYNC | EVENT_DSYNC
        } else {
            0
        },
        ino,
        i_size: disksize,
        i_disksize: disksize,
        pos,
        len: 4096,
        arg: 4096,
        comm: *b"bench\0\0\0\0\0\0\0\0\0\0\0",
    }
}

/// What the kernel sends before a file's first write: its dentry names.
fn path_record(ino: u64) -> Vec<u8> {
    let mut names = [[0; PATH_NAME_LEN]; PATH_DEPTH];
    names[0][..3].copy_from_slice(b"wal");
    bytes(&PathRecord {
        header: RecordHeader {
            kind: RecordKind::WritePath as u32,
            mechanism: Mechanism::Tracepoint as u32,
            tgid: 1,
            ..RecordHeader::default()
        },
        dev: 7 << 20,
        depth: 1,
        ino,
        complete: 1,
        _pad: 0,
        names,
    })
}

/// `writes` ordered 4 KiB appends spread over `inodes` files, one
/// [`WriteRecord`] each: begin, size update, sync (what the kernel sends by
/// default: an ordered write leaves at its sync). Before them, as live,
/// the writer's cgroup and each file's path, once.
fn whole_writes(writes: usize, inodes: u64) -> Vec<Vec<u8>> {
    names(inodes)
        .chain(appends(writes, inodes).map(|r| bytes(&r)))
        .collect()
}

/// The same appends as the compact records the kernel sends for writes
/// settled at their sync ([`SettledWrite`], format 4).
fn settled_writes(writes: usize, inodes: u64) -> Vec<Vec<u8>> {
    names(inodes)
        .chain(appends(writes, inodes).map(|r| bytes(&settled(r))))
        .collect()
}

/// The settled appends as two CPUs batch them: writes alternate between
/// the CPUs, each CPU sends sixteen of its own to a record, so every batch
/// overlaps the other CPU's in time (the names go alone, first).
fn batched_writes(writes: usize, inodes: u64) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = names(inodes).collect();
    let mut cpus = [Vec::new(), Vec::new()];
    for (w, r) in appends(writes, inodes).enumerate() {
        let mut s = settled(r);
        s.sync.cpu = (w % 2) as u16;
        let cpu = &mut cpus[w % 2];
        cpu.push(s);
        if cpu.len() == SETTLED_BATCH {
            out.push(batch(cpu));
        }
    }
    for cpu in &mut cpus {
        if !cpu.is_empty() {
            out.push(batch(cpu));
        }
    }
    out
}

/// The writer's cgroup and each file's path, as the kernel sends them
/// before the writes that need them.
fn names(inodes: u64) -> impl Iterator<Item = Vec<u8>> {
    let cgroup = bytes(&CgroupRecord {
        header: RecordHeader {
            kind: RecordKind::TaskCgroup as u32,
            mechanism: Mechanism::Kprobe as u32,
            tgid: 1,
            ..RecordHeader::default()
        },
        cgroup_id: 77,
    });
    std::iter::once(cgroup).chain((0..inodes).map(path_record))
}

/// `writes` appends over `inodes` files, each as its whole record.
fn appends(writes: usize, inodes: u64) -> impl Iterator<Item = WriteRecord> {
    (0..writes).map(move |w| {
        let ts = (w as u64 + 1) * 400;
        let ino = w as u64 % inodes;
        let pos = (w as u64 / inodes) as i64 * 4096;
        let mut begin = event(RecordKind::Write, ino, ts - 400, pos, pos);
        begin.flags = EVENT_SYNC | EVENT_DSYNC | EVENT_FINAL;
        let step = |ts_ns, arg| Step {
            ts_ns,
            arg,
            i_size: pos + 4096,
            i_disksize: pos + 4096,
            mechanism: Mechanism::Tracepoint as u32,
            pid: 1,
            tgid: 1,
            ..Step::default()
        };
        WriteRecord {
            begin,
            size: step(ts - 300, 0xffff_ffff_8150_0a5c),
            sync: step(ts - 200, 0),
            complete: Step::default(),
        }
    })
}

/// An append as the compact record the kernel sends when it settles at
/// its sync.
fn settled(mut r: WriteRecord) -> SettledWrite {
    // What the kernel's step slots hold at a settled sync.
    r.size.pos = 0;
    r.sync.pos = -1;
    SettledWrite::of(&r).expect("an append settled at its sync has a compact record")
}

/// `writes` as one batch record, emptied.
fn batch(writes: &mut Vec<SettledWrite>) -> Vec<u8> {
    let mut b = SettledBatch {
        kind: RecordKind::SettledBatch as u32,
        count: writes.len() as u32,
        writes: [SettledWrite::default(); SETTLED_BATCH],
    };
    b.writes[..writes.len()].copy_from_slice(writes);
    writes.clear();
    bytes(&b)
}

/// Shows nothing: the cost measured ends at the verdict.
struct Quiet;

impl Reporter for Quiet {
    fn start(&mut self, _: &RunInfo) -> std::io::Result<()> {
        Ok(())
    }
    fn write(&mut self, _: &WriteReport) -> std::io::Result<()> {
        Ok(())
    }
    fn finish(&mut self, _: &Summary, _: &RunInfo) -> std::io::Result<()> {
        Ok(())
    }
}

/// The same appends with every event its own record (`--full-timeline`):
/// begin, size update, sync, completion.
fn events(writes: usize, inodes: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(writes * 4);
    let mut ts = 0;
    for w in 0..writes {
        let ino = w as u64 % inodes;
        let pos = (w as u64 / inodes) as i64 * 4096;
        for (kind, disk) in [
            (RecordKind::WriteBegin, pos),
            (RecordKind::MarkDirty, pos + 4096),
            (RecordKind::SyncEnter, pos + 4096),
            (RecordKind::CompleteExit, pos + 4096),
        ] {
            ts += 100;
            out.push(bytes(&event(kind, ino, ts, pos, disk)));
        }
    }
    out
}

fn feed(c: &mut Criterion) {
    const WRITES: usize = 250_000;
    let mut g = c.benchmark_group("feed");
    g.sample_size(10);
    // Elements: writes for whole-write records, records for the timeline.
    for (name, records, elements) in [
        (
            "250k writes as whole-write records, 64 files",
            whole_writes(WRITES, 64),
            WRITES,
        ),
        (
            "250k writes as settled records, 64 files",
            settled_writes(WRITES, 64),
            WRITES,
        ),
        (
            "250k writes as 1M event records, 64 files",
            events(WRITES, 64),
            WRITES * 4,
        ),
    ] {
        g.throughput(Throughput::Elements(elements as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                || Feed::new(Engine::new(EngineConfig::default()), Names::default()),
                |mut f| {
                    for r in &records {
                        f.record(r).unwrap();
                        f.drain_ready(|_| Ok(())).unwrap();
                    }
                    f.finish();
                    assert_eq!(f.engine.tally().ordered, WRITES as u64);
                },
                BatchSize::LargeInput,
            )
        });
    }
    // As live: per-CPU batches, held and let go in order as soon as both
    // CPUs' batches have passed them.
    let records = batched_writes(WRITES, 64);
    g.throughput(Throughput::Elements(WRITES as u64));
    g.bench_function(
        "250k writes in per-CPU batches, held and let go in order, 64 files",
        |b| {
            b.iter_batched(
                || {
                    let mut f = Feed::new(Engine::new(EngineConfig::default()), Names::default());
                    f.hold_writes(2);
                    f
                },
                |mut f| {
                    for (i, r) in records.iter().enumerate() {
                        f.record(r).unwrap();
                        if i % 4096 == 4095 {
                            f.let_go_shown(u64::MAX, &mut Quiet).unwrap();
                        }
                    }
                    f.let_go_shown(u64::MAX, &mut Quiet).unwrap();
                    f.finish();
                    assert_eq!(f.engine.tally().ordered, WRITES as u64);
                },
                BatchSize::LargeInput,
            )
        },
    );
    g.finish();
}

criterion_group!(benches, feed);
criterion_main!(benches);
