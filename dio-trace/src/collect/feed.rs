//! Decoded records into the engine: symbolize callers, resolve paths, turn
//! kernel loss counts into gap markers. Closed writes wait in `ready` for
//! the reporter.

use dio_trace_common::{counters::Counter, kind::RecordKind};

use super::{
    counters::Reading,
    decode::{Decoded, decode},
    paths::PathResolver,
};
use crate::{
    analysis::{Engine, Input, engine::WriteReport},
    kernel::kallsyms::Kallsyms,
};

pub struct Feed {
    pub engine: Engine,
    resolver: PathResolver,
    kallsyms: Kallsyms,
    /// Ring-buffer losses already turned into gap markers.
    lost_seen: u64,
    /// Records that would not decode (a build mismatch): never silent.
    pub undecodable: u64,
    pub ready: Vec<WriteReport>,
}

impl Feed {
    pub fn new(engine: Engine, resolver: PathResolver, kallsyms: Kallsyms) -> Self {
        Self {
            engine,
            resolver,
            kallsyms,
            lost_seen: 0,
            undecodable: 0,
            ready: Vec::new(),
        }
    }

    /// One raw record from the ring buffer.
    pub fn record(&mut self, bytes: &[u8]) {
        let input = match decode(bytes) {
            Ok(Decoded::Event(mut e)) => {
                if e.kind == RecordKind::MarkDirty {
                    e.caller = self.kallsyms.symbolize(e.arg);
                }
                Input::Event(e)
            }
            Ok(Decoded::Path {
                dev,
                ino,
                tgid,
                names,
                complete,
            }) => Input::Path {
                dev,
                ino,
                path: self.resolver.resolve(dev, ino, tgid, &names, complete),
            },
            Err(_) => {
                self.undecodable += 1;
                return;
            }
        };
        let closed = self.engine.push(input);
        self.ready.extend(closed);
    }

    /// A fresh counter reading: new ring-buffer losses become a gap marker.
    pub fn counters(&mut self, reading: &Reading, now_ns: u64) {
        let lost = reading.get(Counter::RingbufFull);
        if lost > self.lost_seen {
            let records = lost - self.lost_seen;
            self.lost_seen = lost;
            let closed = self.engine.push(Input::Lost {
                records,
                ts_ns: now_ns,
            });
            self.ready.extend(closed);
        }
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
