//! Decoded records into the engine: name callers, resolve paths, turn
//! kernel loss counts into gap markers. Live tracing and replay both go
//! through here; only the [`Annotator`] differs. Closed writes wait in
//! `ready` for the reporter.

use dio_trace_common::{counters::Counter, kind::RecordKind};

use super::{
    counters::Reading,
    decode::{Decoded, decode},
};
use crate::{
    analysis::{Engine, Input, engine::WriteReport},
    trace::writer::TraceWriter,
};

/// What a raw record does not carry: names for kernel addresses, full
/// paths for dentry names. Live: kallsyms and mountinfo. Replay: what the
/// recording wrote down.
pub trait Annotator {
    fn caller(&mut self, addr: u64) -> Option<String>;
    fn path(&mut self, dev: u32, ino: u64, tgid: u32, names: &[String], complete: bool) -> Option<String>;
}

pub struct Feed<A> {
    pub engine: Engine,
    annotator: A,
    recorder: Option<TraceWriter>,
    /// Ring-buffer losses already turned into gap markers.
    lost_seen: u64,
    /// Records that would not decode (a build mismatch): never silent.
    pub undecodable: u64,
    pub ready: Vec<WriteReport>,
    /// Paths by (dev, ino). The kernel sends a file's path once, not with
    /// every write; each begin gets the last one known, and a new path
    /// record (a reused inode number) replaces it.
    paths: std::collections::HashMap<(u32, u64), Option<String>>,
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
            ready: Vec::new(),
            paths: std::collections::HashMap::new(),
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

    /// One raw record from the ring buffer (or a trace file).
    pub fn record(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let input = match decode(bytes) {
            Ok(Decoded::Event(mut e)) => {
                if e.kind == RecordKind::MarkDirty || e.kind == RecordKind::InodeExtension {
                    e.caller = self.annotator.caller(e.arg);
                    if let (Some(w), Some(name)) = (self.recorder.as_mut(), &e.caller) {
                        w.symbol(e.arg, name)?;
                    }
                }
                Input::Event(e)
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
                Input::Path { dev, ino, path }
            }
            Err(_) => {
                self.undecodable += 1;
                if let Some(w) = self.recorder.as_mut() {
                    w.record(bytes)?;
                }
                return Ok(());
            }
        };
        if let Some(w) = self.recorder.as_mut() {
            w.record(bytes)?;
        }
        let known = match &input {
            Input::Event(e) if e.kind == RecordKind::WriteBegin => self.paths.get(&e.key()).cloned(),
            _ => None,
        };
        let key = match &input {
            Input::Event(e) => Some(e.key()),
            _ => None,
        };
        let closed = self.engine.push(input);
        self.ready.extend(closed);
        if let (Some(path), Some((dev, ino))) = (known, key) {
            let closed = self.engine.push(Input::Path { dev, ino, path });
            self.ready.extend(closed);
        }
        Ok(())
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
        let closed = self.engine.push(Input::Lost { records, ts_ns });
        self.ready.extend(closed);
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
