//! Decoded records into the engine: name callers and stack frames, join
//! stacks to their steps, resolve paths, turn kernel loss counts into gap
//! markers. Live tracing and replay both go
//! through here; only the [`Annotator`] differs. Closed writes wait in
//! `ready` for the reporter.

use std::sync::Arc;

use dio_trace_common::{counters::Counter, kind::RecordKind, record::EVENT_FINAL};
use rustc_hash::FxHashMap;

use super::{
    counters::Reading,
    decode::{Decoded, batch_slots, decode_into, sent_at, settled_cpu},
    hold::{Hold, Source},
    ordered::OrderedCount,
};
use crate::{
    analysis::{Engine, Event, Frame, Input, Stack, engine::WriteReport},
    report::Reporter,
    trace::writer::TraceWriter,
};

/// What a raw record does not carry: names for kernel addresses, full
/// paths for dentry names. Live: kallsyms and mountinfo. Replay: what the
/// recording wrote down. Names are shared (`Arc`): a caller's name is
/// asked for at every size update, and a clone must not allocate.
pub trait Annotator {
    /// `name+0xoff [module]` for a kernel text address.
    fn symbol(&mut self, addr: u64) -> Option<Arc<str>>;
    fn path(&mut self, dev: u32, ino: u64, tgid: u32, names: &[String], complete: bool) -> Option<Arc<str>>;
    /// The path of cgroup v2 `id` from the cgroup2 root.
    fn cgroup(&mut self, id: u64) -> Option<Arc<str>>;
}

pub struct Feed<A> {
    pub engine: Engine,
    annotator: A,
    recorder: Option<TraceWriter>,
    /// Ring-buffer losses already turned into gap markers.
    lost_seen: u64,
    /// Records that would not decode (a build mismatch): never silent.
    pub undecodable: u64,
    /// The steps of a whole-write record, kept between records to reuse
    /// its memory.
    steps: Vec<Event>,
    /// Whole-write records decoded: with the kernel's `armed` and
    /// `writes_lost` counters, tells whether any write went missing.
    pub writes: u64,
    pub ready: Vec<WriteReport>,
    /// Paths by (dev, ino). The kernel sends a file's path once, not with
    /// every write; each begin gets the last one known, and a new path
    /// record (a reused inode number) replaces it.
    paths: FxHashMap<(u32, u64), Option<Arc<str>>>,
    /// Cgroup paths by process (tgid), from the kernel's cgroup records:
    /// each write's begin gets its process's.
    cgroups: FxHashMap<u32, Option<Arc<str>>>,
    /// Records waiting for the ones made before them
    /// ([`Feed::hold_writes`]).
    hold: Option<Hold>,
    /// Stacks waiting for their step: the kernel sends a step's stack
    /// before the step's record, keyed by (dev, ino, step kind, step time).
    stacks: FxHashMap<StackKey, Box<Stack>>,
}

type StackKey = (u32, u64, RecordKind, u64);

/// Stacks waiting at most (a step whose record was lost leaves its stack
/// behind); past it they are dropped.
const MAX_PENDING_STACKS: usize = 4096;

/// Paths remembered at most; past it the cache starts over (a write whose
/// path is then unknown is still judged, its path shown as unknown).
const MAX_PATHS: usize = 65_536;

impl<A: Annotator> Feed<A> {
    pub fn new(engine: Engine, annotator: A) -> Self {
        Self {
            engine,
            annotator,
            recorder: None,
            lost_seen: 0,
            undecodable: 0,
            steps: Vec::new(),
            writes: 0,
            ready: Vec::new(),
            paths: FxHashMap::default(),
            cgroups: FxHashMap::default(),
            hold: None,
            stacks: FxHashMap::default(),
        }
    }

    /// Also write every record and annotation to a trace file.
    pub fn record_to(&mut self, w: TraceWriter) {
        self.recorder = Some(w);
    }

    pub fn take_recorder(&mut self) -> Option<TraceWriter> {
        self.recorder.take()
    }

    pub fn annotator_mut(&mut self) -> &mut A {
        &mut self.annotator
    }

    /// One raw record from the ring buffer (or a trace file). A recording
    /// gets the record's annotations (symbols, paths) first, so a replay
    /// knows them when it reaches the record; the engine gets it last.
    pub fn record(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let Some(slots) = batch_slots(bytes) {
            return match slots {
                Ok(slots) => {
                    // One CPU's batch: every slot was settled there.
                    let from = slots
                        .clone()
                        .next()
                        .and_then(settled_cpu)
                        .map_or(Source::Alone, Source::Batch);
                    slots.into_iter().try_for_each(|slot| self.take(slot, from))
                }
                Err(_) => {
                    self.undecodable += 1;
                    self.recorded(bytes)
                }
            };
        }
        self.take(bytes, Source::Alone)
    }

    /// Hold `bytes` if records are held, else process it now.
    fn take(&mut self, bytes: &[u8], from: Source) -> std::io::Result<()> {
        if let Some(hold) = self.hold.as_mut()
            && let Some(at) = sent_at(bytes)
        {
            hold.push(from, at, bytes);
            return Ok(());
        }
        self.process(bytes)
    }

    /// Hold records back until [`Feed::let_go_shown`] says every record
    /// made before them has arrived (the kernel batches settled writes per
    /// CPU, [`crate::collect::hold`]). `cpus`: CPUs are numbered below it.
    pub fn hold_writes(&mut self, cpus: usize) {
        self.hold = Some(Hold::new(cpus));
    }

    /// Every CPU's batch was flushed, and the ring drained, after `at`.
    pub fn flushed(&mut self, at: u64) {
        if let Some(hold) = self.hold.as_mut() {
            hold.flushed(at);
        }
    }

    /// [`Feed::let_go_shown`] up to where every record made has arrived.
    pub fn let_go_arrived(&mut self, reporter: &mut dyn Reporter) -> std::io::Result<()> {
        match self.hold.as_ref().map(Hold::mark) {
            Some(mark) => self.let_go_shown(mark, reporter),
            None => Ok(()),
        }
    }

    /// The records held that the kernel made at or before `up_to`, in the
    /// order it made them, and the writes they closed to `reporter`.
    pub fn let_go_shown(&mut self, up_to: u64, reporter: &mut dyn Reporter) -> std::io::Result<()> {
        let Some(mut hold) = self.hold.take() else {
            return Ok(());
        };
        let shown = hold.let_go(up_to, |bytes| {
            self.process(bytes)?;
            self.drain_ready(|w| reporter.write(w))
        });
        self.hold = Some(hold);
        shown
    }

    /// [`Feed::record`], once held records are let go.
    fn process(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.steps.clear();
        match decode_into(bytes, &mut self.steps) {
            Ok(Decoded::Event(mut e)) => {
                self.annotate(&mut e)?;
                self.recorded(bytes)?;
                let path = self.known_path(&e);
                let (dev, ino) = e.key();
                self.engine.push_into(Input::Event(e), &mut self.ready);
                if let Some(path) = path {
                    self.engine
                        .push_into(Input::Path { dev, ino, path }, &mut self.ready);
                }
            }
            Ok(Decoded::Write(mut begin)) => {
                self.writes += 1;
                self.annotate(&mut begin)?;
                let mut steps = std::mem::take(&mut self.steps);
                let annotated = steps.iter_mut().try_for_each(|e| self.annotate(e));
                self.steps = steps;
                annotated?;
                self.recorded(bytes)?;
                let path = self.known_path(&begin);
                let done = begin.flags & EVENT_FINAL != 0;
                self.engine
                    .write(begin, &mut self.steps, path, done, &mut self.ready);
            }
            Ok(Decoded::Path {
                dev,
                ino,
                tgid,
                names,
                complete,
            }) => {
                let path = self.annotator.path(dev, ino, tgid, &names, complete);
                if let Some(w) = self.recorder.as_mut() {
                    w.path(dev, ino, path.as_deref())?;
                }
                self.recorded(bytes)?;
                if self.paths.len() >= MAX_PATHS {
                    self.paths.clear();
                }
                self.paths.insert((dev, ino), path.clone());
                self.engine
                    .push_into(Input::Path { dev, ino, path }, &mut self.ready);
            }
            Ok(Decoded::Cgroup { tgid, id }) => {
                let path = self.annotator.cgroup(id);
                if let Some(w) = self.recorder.as_mut() {
                    w.cgroup(id, path.as_deref())?;
                }
                self.recorded(bytes)?;
                if self.cgroups.len() >= MAX_PATHS {
                    self.cgroups.clear();
                }
                self.cgroups.insert(tgid, path);
            }
            Ok(Decoded::Stack {
                dev,
                ino,
                step,
                step_ts,
                ips,
            }) => {
                let stack = self.stack(ips)?;
                self.recorded(bytes)?;
                if self.stacks.len() >= MAX_PENDING_STACKS {
                    self.stacks.clear();
                }
                self.stacks.insert((dev, ino, step, step_ts), Box::new(stack));
            }
            Err(_) => {
                self.undecodable += 1;
                self.recorded(bytes)?;
            }
        }
        Ok(())
    }

    /// The record itself into the recording, if any.
    fn recorded(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.recorder.as_mut() {
            Some(w) => w.record(bytes),
            None => Ok(()),
        }
    }

    /// [`Feed::record`], then the writes it closed to `reporter` at once:
    /// each write's memory is reused by the next while still in cache,
    /// instead of a burst of records each taking memory of its own.
    pub fn record_shown(&mut self, bytes: &[u8], reporter: &mut dyn Reporter) -> std::io::Result<()> {
        self.record(bytes)?;
        self.drain_ready(|w| reporter.write(w))
    }

    /// Closed writes to `show` (a reporter), oldest first; their memory
    /// goes back to the engine for the next writes. On an error the rest
    /// are dropped.
    pub fn drain_ready(
        &mut self,
        mut show: impl FnMut(&WriteReport) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut shown = Ok(());
        for w in &mut self.ready {
            if shown.is_ok() {
                shown = show(w);
            }
            self.engine.recycle(std::mem::take(&mut w.events));
        }
        self.ready.clear();
        shown
    }

    /// An event's callers named, its stack joined, and a begin given its
    /// process's cgroup.
    fn annotate(&mut self, e: &mut Event) -> std::io::Result<()> {
        if e.kind == RecordKind::MarkDirty || e.kind == RecordKind::InodeExtension {
            e.caller = self.symbol(e.arg)?;
        }
        if !self.stacks.is_empty() {
            e.stack = self.stacks.remove(&(e.dev, e.ino, e.kind, e.ts_ns));
        }
        if e.kind == RecordKind::WriteBegin {
            e.cgroup = self.cgroups.get(&e.tgid).cloned().flatten();
        }
        Ok(())
    }

    /// A begin's file path, when the kernel has sent it (`Some(None)`: sent
    /// but could not be resolved).
    fn known_path(&self, e: &Event) -> Option<Option<Arc<str>>> {
        if e.kind != RecordKind::WriteBegin {
            return None;
        }
        self.paths.get(&e.key()).cloned()
    }

    /// `addr` named, and the name written down for replays.
    fn symbol(&mut self, addr: u64) -> std::io::Result<Option<Arc<str>>> {
        let name = self.annotator.symbol(addr);
        if let (Some(w), Some(name)) = (self.recorder.as_mut(), &name) {
            w.symbol(addr, name)?;
        }
        Ok(name)
    }

    /// A stack's frames named, without the BPF frames above the probed
    /// function (they say how dio-trace looked, not what the kernel did).
    fn stack(&mut self, ips: Result<Vec<u64>, i64>) -> std::io::Result<Stack> {
        let ips = match ips {
            Ok(ips) => ips,
            Err(errno) => {
                return Ok(Stack {
                    frames: Vec::new(),
                    error: Some(errno),
                });
            }
        };
        let mut frames = Vec::with_capacity(ips.len());
        for addr in ips {
            let symbol = self.symbol(addr)?;
            frames.push(Frame { addr, symbol });
        }
        Ok(Stack {
            frames: without_bpf_frames(frames),
            error: None,
        })
    }

    /// A fresh counter reading: new ring-buffer losses become a gap marker.
    pub fn counters(&mut self, reading: &Reading, now_ns: u64) -> std::io::Result<()> {
        let lost = reading.get(Counter::RingbufFull);
        if lost > self.lost_seen {
            let records = lost - self.lost_seen;
            self.lost_seen = lost;
            self.lost(records, now_ns)?;
        }
        Ok(())
    }

    /// A gap of `records` lost records at `ts_ns`.
    pub fn lost(&mut self, records: u64, ts_ns: u64) -> std::io::Result<()> {
        if let Some(w) = self.recorder.as_mut() {
            w.lost(records, ts_ns)?;
        }
        self.engine
            .push_into(Input::Lost { records, ts_ns }, &mut self.ready);
        Ok(())
    }

    /// Ordered writes the kernel counted instead of sending: tallied as
    /// judged ones (and as received, for the accounting of writes gone
    /// missing), and handed to the reporter with their labels, the
    /// writer's cgroup as a path.
    pub fn ordered_counted(
        &mut self,
        counts: &[OrderedCount],
        reporter: &mut dyn Reporter,
    ) -> std::io::Result<()> {
        for c in counts {
            self.engine.ordered_counted(c.fs(), c.n);
            self.writes += c.n;
            let cgroup = match c.key.cgroup_id {
                0 => None,
                id => self.annotator.cgroup(id),
            };
            reporter.ordered_counted(c, cgroup.as_deref())?;
        }
        Ok(())
    }

    pub fn tick(&mut self, now_ns: u64) {
        let closed = self.engine.tick(now_ns);
        self.ready.extend(closed);
    }

    pub fn finish(&mut self) {
        let closed = self.engine.finish();
        self.ready.extend(closed);
    }
}

/// Drop the frames that belong to dio-trace's own probes: the BPF
/// programs, the trampolines fentry runs through (also those of another of
/// its probes on a function further down the stack), the tracepoint glue.
/// They say how dio-trace looked, not what the kernel did. Leading unnamed
/// frames go too when named kernel frames follow (programs loaded after
/// kallsyms was read); a stack with no name at all is kept whole.
fn without_bpf_frames(frames: Vec<Frame>) -> Vec<Frame> {
    const PROBE_GLUE: [&str; 6] = [
        "bpf_prog_",
        "bpf_trampoline_",
        "__bpf_trace_",
        "__traceiter_",
        "bpf_get_stack",
        "bpf_trace_run",
    ];
    let glue = |f: &Frame| {
        f.symbol
            .as_deref()
            .is_some_and(|s| PROBE_GLUE.iter().any(|p| s.starts_with(p)))
    };
    let Some(first) = frames.iter().position(|f| f.symbol.is_some() && !glue(f)) else {
        return frames;
    };
    let function = |f: &Frame| {
        f.symbol
            .as_deref()
            .map(|s| s.split('+').next().unwrap_or(s).to_owned())
    };
    let mut kept: Vec<Frame> = Vec::with_capacity(frames.len());
    let mut after_trampoline = false;
    for f in frames.into_iter().skip(first) {
        if glue(&f) {
            after_trampoline = true;
            continue;
        }
        // Below a trampoline that called the function's body (fexit), the
        // same function shows again at its patched first call: one call.
        let again = after_trampoline && kept.last().is_some_and(|k| function(k) == function(&f));
        after_trampoline = false;
        if !again {
            kept.push(f);
        }
    }
    kept
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::{EngineConfig, Verdict},
        collect::decode::record_bytes,
    };
    use dio_trace_common::record::{
        CgroupRecord, EVENT_DSYNC, InodeEvent, PathRecord, RecordHeader, SETTLED_BATCH, SettledBatch,
        SettledWrite, Step, WriteRecord,
    };

    /// Paths are their names joined; cgroup `id` is `/cg<id>`.
    struct Plain;

    impl Annotator for Plain {
        fn symbol(&mut self, _: u64) -> Option<Arc<str>> {
            None
        }
        fn path(&mut self, _: u32, _: u64, _: u32, names: &[String], _: bool) -> Option<Arc<str>> {
            Some(Arc::from(format!("/{}", names.join("/"))))
        }
        fn cgroup(&mut self, id: u64) -> Option<Arc<str>> {
            Some(Arc::from(format!("/cg{id}")))
        }
    }

    const TGID: u32 = 7;

    fn header(kind: RecordKind, ts_ns: u64) -> RecordHeader {
        RecordHeader {
            kind: kind as u32,
            mechanism: dio_trace_common::probe::Mechanism::Tracepoint as u32,
            ts_ns,
            tgid: TGID,
            ..RecordHeader::default()
        }
    }

    fn path(since: u64, name: &[u8]) -> PathRecord {
        let mut r = PathRecord {
            header: header(RecordKind::WritePath, since),
            dev: 1,
            depth: 1,
            ino: 12,
            complete: 1,
            _pad: 0,
            names: [[0; dio_trace_common::record::PATH_NAME_LEN]; dio_trace_common::record::PATH_DEPTH],
        };
        r.names[0][..name.len()].copy_from_slice(name);
        r
    }

    fn cgroup(since: u64, id: u64) -> CgroupRecord {
        CgroupRecord {
            header: header(RecordKind::TaskCgroup, since),
            cgroup_id: id,
        }
    }

    /// An ordered write of inode 12 that began at `ts`, settled at its sync.
    fn settled(ts: u64) -> SettledWrite {
        let step = |kind: RecordKind, at: u64, pos: i64| Step {
            ts_ns: ts + at,
            i_size: 8192,
            i_disksize: 8192,
            pos,
            mechanism: dio_trace_common::probe::Mechanism::Tracepoint as u32,
            kind: kind as u32,
            ..Step::default()
        };
        let w = WriteRecord {
            begin: InodeEvent {
                header: header(RecordKind::Write, ts),
                dev: 1,
                flags: EVENT_DSYNC | EVENT_FINAL,
                ino: 12,
                i_size: 4096,
                i_disksize: 4096,
                pos: 4096,
                len: 4096,
                ..InodeEvent::default()
            },
            size: step(RecordKind::MarkDirty, 1, 0),
            sync: step(RecordKind::SyncEnter, 2, -1),
            ..WriteRecord::default()
        };
        SettledWrite::of(&w).expect("settled")
    }

    /// The old file's write, held in a batch, arrives after the new file's
    /// path and its process's new cgroup, which a later write needed.
    fn late_write(hold: bool) -> Vec<(u64, Option<String>, Option<String>)> {
        let mut feed = Feed::new(Engine::new(EngineConfig::default()), Plain);
        if hold {
            feed.hold_writes(2);
        }
        let mut batch = SettledBatch {
            kind: RecordKind::SettledBatch as u32,
            count: 1,
            writes: [SettledWrite::default(); SETTLED_BATCH],
        };
        batch.writes[0] = settled(50);
        for bytes in [
            record_bytes(&path(10, b"old")).to_vec(),
            record_bytes(&cgroup(10, 1)).to_vec(),
            record_bytes(&path(100, b"new")).to_vec(),
            record_bytes(&cgroup(100, 2)).to_vec(),
            record_bytes(&settled(100)).to_vec(),
            record_bytes(&batch).to_vec(),
        ] {
            feed.record(&bytes).unwrap();
        }
        let mut shown = Vec::new();
        feed.let_go_shown(u64::MAX, &mut Shown(&mut shown)).unwrap();
        shown.extend(feed.ready.iter().map(|w| {
            assert_eq!(w.verdict, Verdict::Ordered);
            (
                w.begin.ts_ns,
                w.path.as_deref().map(str::to_owned),
                w.begin.cgroup.as_deref().map(str::to_owned),
            )
        }));
        assert_eq!(
            (feed.writes, feed.undecodable),
            (2, 0),
            "a batch counts its writes"
        );
        shown
    }

    #[test]
    fn held_records_go_in_the_order_the_kernel_made_them() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            late_write(true),
            [
                (50, some("/old"), some("/cg1")),
                (100, some("/new"), some("/cg2"))
            ]
        );
        // What holding prevents: the new names on the old file's write.
        assert_eq!(
            late_write(false),
            [
                (100, some("/new"), some("/cg2")),
                (50, some("/new"), some("/cg2"))
            ]
        );
    }

    /// A reporter that writes down each write's time and names, and each
    /// count of ordered writes as (writes, its labels, its cgroup).
    struct Shown<'a>(&'a mut Vec<(u64, Option<String>, Option<String>)>);

    impl Reporter for Shown<'_> {
        fn ordered_counted(&mut self, c: &OrderedCount, cgroup: Option<&str>) -> std::io::Result<()> {
            let blocks = if c.new_extent() { "new-blocks" } else { "extending" };
            let labels = format!("{} {} {blocks} {}", c.fs().name(), c.sync_flavour(), c.key.dev);
            self.0.push((c.n, Some(labels), cgroup.map(str::to_owned)));
            Ok(())
        }
        fn start(&mut self, _: &crate::report::RunInfo) -> std::io::Result<()> {
            Ok(())
        }
        fn write(&mut self, w: &WriteReport) -> std::io::Result<()> {
            self.0.push((
                w.begin.ts_ns,
                w.path.as_deref().map(str::to_owned),
                w.begin.cgroup.as_deref().map(str::to_owned),
            ));
            Ok(())
        }
        fn finish(
            &mut self,
            _: &crate::analysis::Summary,
            _: &crate::report::RunInfo,
        ) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn frame(addr: u64, symbol: Option<&str>) -> Frame {
        Frame {
            addr,
            symbol: symbol.map(Arc::from),
        }
    }

    #[test]
    fn the_probe_frames_above_the_kernel_are_dropped() {
        let frames = vec![
            frame(1, Some("bpf_prog_6deef7357e7b4530_fentry_vfs_fsync+0x3a")),
            frame(2, Some("bpf_trampoline_6442510345+0x4f")),
            frame(3, Some("vfs_fsync_range+0x5")),
            frame(4, Some("iomap_dio_complete+0xde")),
            frame(5, Some("bpf_trampoline_6442510346+0x64 [bpf]")),
            frame(6, Some("iomap_dio_complete+0x5")),
            frame(7, None),
        ];
        let kept: Vec<u64> = without_bpf_frames(frames).iter().map(|f| f.addr).collect();
        assert_eq!(
            kept,
            [3, 4, 7],
            "the trampoline's re-entry of iomap_dio_complete is one call"
        );
    }

    #[test]
    fn an_unnamed_stack_is_kept_whole() {
        let frames = vec![frame(1, None), frame(2, None)];
        assert_eq!(without_bpf_frames(frames.clone()), frames);
    }

    /// Ordered writes the kernel counted reach the tally, the accounting
    /// of writes received, and the reporters with their labels (the
    /// cgroup as a path), as many as were counted.
    #[test]
    fn ordered_writes_counted_in_the_kernel_are_tallied_and_reported() {
        use dio_trace_common::{
            fs::Fs,
            ordered::OrderedKey,
            record::{EVENT_FS_SHIFT, EVENT_NEW_EXTENT, EVENT_SYNC},
        };
        let mut feed = Feed::new(Engine::new(EngineConfig::default()), Plain);
        let xfs = (Fs::Xfs as u32) << EVENT_FS_SHIFT;
        let counts = [
            OrderedCount {
                key: OrderedKey::new(5, 7, EVENT_SYNC | xfs | EVENT_NEW_EXTENT),
                n: 3,
            },
            OrderedCount {
                key: OrderedKey::new(0, 8, EVENT_DSYNC | (Fs::Ext4 as u32) << EVENT_FS_SHIFT),
                n: 2,
            },
        ];
        let mut shown = Vec::new();
        feed.ordered_counted(&counts, &mut Shown(&mut shown)).unwrap();
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            shown,
            [
                (3, some("xfs sync new-blocks 7"), some("/cg5")),
                (2, some("ext4 dsync extending 8"), None)
            ]
        );
        let t = feed.engine.tally();
        assert_eq!(
            (
                t.ordered,
                t.counted(),
                t.by_fs[Fs::Xfs.slot()],
                t.by_fs[Fs::Ext4.slot()]
            ),
            (5, 5, 3, 2)
        );
        assert_eq!(feed.writes, 5);
    }
}
