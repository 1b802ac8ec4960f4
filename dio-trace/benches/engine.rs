//! User-space cost per write: raw ring-buffer records through the same
//! feed (decode, annotate, engine) that live tracing and replay use, as
//! whole-write records (the default) and as one record per event (a full
//! timeline). Reports records per second on one core.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dio_trace::{
    analysis::{Engine, EngineConfig},
    collect::{
        decode::record_bytes,
        feed::{Annotator, Feed},
    },
};
use dio_trace_common::{
    kind::RecordKind,
    probe::Mechanism,
    record::{EVENT_DSYNC, EVENT_FINAL, EVENT_SYNC, InodeEvent, RecordHeader, Step, WriteRecord},
};

struct NoNames;

impl Annotator for NoNames {
    fn symbol(&mut self, _: u64) -> Option<String> {
        None
    }
    fn path(&mut self, _: u32, _: u64, _: u32, _: &[String], _: bool) -> Option<String> {
        None
    }
    fn cgroup(&mut self, _: u64) -> Option<String> {
        None
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

/// `writes` ordered 4 KiB appends spread over `inodes` files, one
/// [`WriteRecord`] each: begin, size update, sync (what the kernel sends by
/// default: an ordered write leaves at its sync).
fn whole_writes(writes: usize, inodes: u64) -> Vec<Vec<u8>> {
    let mut ts = 0;
    (0..writes)
        .map(|w| {
            let ino = w as u64 % inodes;
            let pos = (w as u64 / inodes) as i64 * 4096;
            let mut begin = event(RecordKind::Write, ino, ts, pos, pos);
            begin.flags = EVENT_SYNC | EVENT_DSYNC | EVENT_FINAL;
            let step = |ts_ns| Step {
                ts_ns,
                i_size: pos + 4096,
                i_disksize: pos + 4096,
                mechanism: Mechanism::Tracepoint as u32,
                pid: 1,
                tgid: 1,
                ..Step::default()
            };
            ts += 400;
            bytes(&WriteRecord {
                begin,
                size: step(ts - 300),
                sync: step(ts - 200),
                complete: Step::default(),
            })
        })
        .collect()
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
    for (name, records) in [
        (
            "250k writes as whole-write records, 64 files",
            whole_writes(WRITES, 64),
        ),
        ("250k writes as 1M event records, 64 files", events(WRITES, 64)),
    ] {
        g.throughput(Throughput::Elements(records.len() as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                || Feed::new(Engine::new(EngineConfig::default()), NoNames),
                |mut f| {
                    for r in &records {
                        f.record(r).unwrap();
                        f.ready.clear();
                    }
                    f.finish();
                    assert_eq!(f.engine.tally().ordered, WRITES as u64);
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, feed);
criterion_main!(benches);
