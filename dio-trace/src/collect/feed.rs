//! Decoded records into the engine: name callers, resolve paths, turn
//! kernel loss counts into gap markers. Live tracing and replay both go
//! through here; only the [`Annotator`] differs. Closed writes wait in
//! `ready` for the reporter.

use dio_trace_common::{counters::Counter, kind::RecordKind, record::EVENT_FINAL};

use super::{
    counters::Reading,
    decode::{Decoded, decode},
};
use crate::{
    analysis::{Engine, Event, Input, engine::WriteReport},
    trace::writer::TraceWriter,
};

/// What a raw record does not carry: names for kernel addresses, full
/// paths for dentry names. Live: kallsyms and mountinfo. Replay: what the
/// recording wrote down.
pub trait Annotator {
    fn caller(&mut self, addr: u64) -> Option<String>;
    fn path(&mut self, dev: u32, ino: u64, tgid: u32, names: &[String], complete: bool) -> Option<String>;
    /// The path of cgroup v2 `id` from the cgroup2 root.
    fn cgroup(&mut self, id: u64) -> Option<String>;
}

pub struct Feed<A> {
    pub engine: Engine,
    annotator: A,
    recorder: Option<TraceWriter>,
    /// Ring-buffer losses already turned into gap markers.
    lost_seen: u64,
    /// Records that would not decode (a build mismatch): never silent.
    pub undecodable: u64,
    /// What one record becomes, kept between records to reuse its memory.
    inputs: Vec<Input>,
    /// Whole-write records decoded: with the kernel's `armed` and
    /// `writes_lost` counters, tells whether any write went missing.
    pub writes: u64,
    pub ready: Vec<WriteReport>,
    /// Paths by (dev, ino). The kernel sends a file's path once, not with
    /// every write; each begin gets the last one known, and a new path
    /// record (a reused inode number) replaces it.
    paths: std::collections::HashMap<(u32, u64), Option<String>>,
    /// Cgroup paths by process (tgid), from the kernel's cgroup records:
    /// each write's begin gets its process's.
    cgroups: std::collections::HashMap<u32, Option<String>>,
}

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
            inputs: Vec::new(),
            writes: 0,
            ready: Vec::new(),
            paths: std::collections::HashMap::new(),
            cgroups: std::collections::HashMap::new(),
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
    /// knows them when it reaches the record.
    pub fn record(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut inputs = std::mem::take(&mut self.inputs);
        match decode(bytes) {
            Ok(Decoded::Event(e)) => self.event(e, &mut inputs)?,
            Ok(Decoded::Write(events)) => {
                self.writes += 1;
                let done = events.first().map(|b| (b.flags & EVENT_FINAL != 0, b.key()));
                for e in events {
                    self.event(e, &mut inputs)?;
                }
                if let Some((true, (dev, ino))) = done {
                    inputs.push(Input::Done { dev, ino });
                }
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
                if self.paths.len() >= MAX_PATHS {
                    self.paths.clear();
                }
                self.paths.insert((dev, ino), path.clone());
                inputs.push(Input::Path { dev, ino, path });
            }
            Ok(Decoded::Cgroup { tgid, id }) => {
                let path = self.annotator.cgroup(id);
                if let Some(w) = self.recorder.as_mut() {
                    w.cgroup(id, path.as_deref())?;
                }
                if self.cgroups.len() >= MAX_PATHS {
                    self.cgroups.clear();
                }
                self.cgroups.insert(tgid, path);
            }
            Err(_) => self.undecodable += 1,
        }
        if let Some(w) = self.recorder.as_mut() {
            w.record(bytes)?;
        }
        for input in inputs.drain(..) {
            self.push(input);
        }
        self.inputs = inputs;
        Ok(())
    }

    /// One event for the engine: callers named, and a begin followed by
    /// its file's path when known.
    fn event(&mut self, mut e: Event, inputs: &mut Vec<Input>) -> std::io::Result<()> {
        if e.kind == RecordKind::MarkDirty || e.kind == RecordKind::InodeExtension {
            e.caller = self.annotator.caller(e.arg);
            if let (Some(w), Some(name)) = (self.recorder.as_mut(), &e.caller) {
                w.symbol(e.arg, name)?;
            }
        }
        if e.kind == RecordKind::WriteBegin {
            e.cgroup = self.cgroups.get(&e.tgid).cloned().flatten();
        }
        let key = e.key();
        let known = (e.kind == RecordKind::WriteBegin)
            .then(|| self.paths.get(&key).cloned())
            .flatten();
        inputs.push(Input::Event(e));
        if let Some(path) = known {
            inputs.push(Input::Path {
                dev: key.0,
                ino: key.1,
                path,
            });
        }
        Ok(())
    }

    fn push(&mut self, input: Input) {
        let closed = self.engine.push(input);
        self.ready.extend(closed);
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
        self.push(Input::Lost { records, ts_ns });
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
