//! User-space cost per event: raw ring-buffer records through the same
//! feed (decode, annotate, engine) that live tracing and replay use.
//! Reports records per second on one core.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dio_trace::{
    analysis::{Engine, EngineConfig},
    collect::feed::{Annotator, Feed},
};
use dio_trace_common::{
    kind::RecordKind,
    probe::Mechanism,
    record::{EVENT_DSYNC, EVENT_SYNC, InodeEvent, RecordHeader},
};

struct NoNames;

impl Annotator for NoNames {
    fn caller(&mut self, _: u64) -> Option<String> {
        None
    }
    fn path(&mut self, _: u32, _: u64, _: u32, _: &[String], _: bool) -> Option<String> {
        None
    }
}

fn record(kind: RecordKind, ino: u64, ts: u64, pos: i64, disksize: i64) -> Vec<u8> {
    let ev = InodeEvent {
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
    };
    // SAFETY: a repr(C) record of integers, viewed as bytes.
    unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<InodeEvent>()) }.to_vec()
}

/// `writes` ordered 4 KiB appends spread over `inodes` files, interleaved:
/// begin, size update, sync, completion (what the kernel sends by default).
fn stream(writes: usize, inodes: u64) -> Vec<Vec<u8>> {
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
            out.push(record(kind, ino, ts, pos, disk));
        }
    }
    out
}

fn feed(c: &mut Criterion) {
    let records = stream(250_000, 64);
    let mut g = c.benchmark_group("feed");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.sample_size(10);
    g.bench_function("1M records, 64 files", |b| {
        b.iter_batched(
            || Feed::new(Engine::new(EngineConfig::default()), NoNames),
            |mut f| {
                for r in &records {
                    f.record(r).unwrap();
                    f.ready.clear();
                }
                f.finish();
                assert_eq!(f.engine.tally().ordered, 250_000);
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, feed);
criterion_main!(benches);
