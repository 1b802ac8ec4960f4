//! Records held back until every record made before them has arrived,
//! then let go in the order the kernel made them.
//!
//! With per-CPU batches (`collect::batch`) the kernel's records no longer
//! arrive in the order it made them: one CPU's sixteen settled writes
//! leave together, while another CPU's writes, a write sent on its own, or
//! the path of a new file that reuses an inode number may have left before
//! the older writes in the batch. After the tick has flushed every CPU's
//! batch and drained the ring, each record made before the flush is in
//! hand; held until then and put in the order they were made
//! ([`crate::collect::decode::sent_at`]), they reach the engine in the
//! order an unbatched kernel would have sent them: every write gets the
//! path and cgroup it had, and reports, recordings and replays keep that
//! order. The one exception is a batch the flush found busy (it landed
//! while a program on that CPU was filling it): its writes come a tick
//! later, judged the same, but shown out of order.
//!
//! Each CPU's batches arrive in the order that CPU made them, so they are
//! kept as one stream per CPU, and merged with the records that came on
//! their own (sorted first: they are few): a merge of a few sorted streams
//! instead of a sort of every record.
//!
//! The tick is not the only time records can go. A batch of CPU n that
//! ends with a write settled at T says every write CPU n settled up to T
//! is in hand, and records sent alone left the moment they were made. So
//! once every CPU has sent a batch ending at or after T (or the tick
//! flushed them all after T), everything made up to T has arrived
//! ([`Hold::mark`]). Under load every CPU sends batches all the time, and
//! records go after a batch's worth of time instead of a tick's, while
//! their bytes are still in cache.

use std::collections::VecDeque;

/// Where a held record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// On its own, from any CPU.
    Alone,
    /// In a batch of this CPU.
    Batch(u32),
}

/// (made at, start in the arena, length): the start is also the order of
/// arrival, which breaks ties.
type Entry = (u64, usize, usize);

pub struct Hold {
    /// The records' bytes, in order of arrival; cleared once all are let
    /// go, compacted when what is let go dwarfs what is held.
    bytes: Vec<u8>,
    /// Stream 0: records that came alone; stream 1 + n: CPU n's batches.
    streams: Vec<VecDeque<Entry>>,
    /// By CPU: up to when everything it made is in hand.
    marks: Vec<u64>,
}

/// Arena bytes let go, past which the held rest moves to its front.
const COMPACT_AT: usize = 1 << 20;

impl Hold {
    /// For CPUs numbered below `cpus`.
    pub fn new(cpus: usize) -> Self {
        Self {
            bytes: Vec::new(),
            streams: Vec::new(),
            marks: vec![0; cpus.max(1)],
        }
    }

    pub fn push(&mut self, from: Source, made_at: u64, record: &[u8]) {
        let stream = match from {
            Source::Alone => 0,
            Source::Batch(cpu) => {
                if let Some(m) = self.marks.get_mut(cpu as usize) {
                    *m = (*m).max(made_at);
                }
                cpu as usize + 1
            }
        };
        if self.streams.len() <= stream {
            self.streams.resize_with(stream + 1, VecDeque::new);
        }
        self.streams[stream].push_back((made_at, self.bytes.len(), record.len()));
        self.bytes.extend_from_slice(record);
    }

    /// Every record made at or before `up_to` to `f`, in the order they
    /// were made (records made at the same time in order of arrival); the
    /// rest stay held. Stops at `f`'s first error, and drops what that
    /// call had taken out.
    pub fn let_go<E>(&mut self, up_to: u64, mut f: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if self.is_empty() {
            return Ok(());
        }
        // Stable: arrival order among equal times.
        if let Some(alone) = self.streams.first_mut() {
            alone.make_contiguous().sort_by_key(|&(at, _, _)| at);
        }
        // Each stream's first record: a linear scan of a few finds the
        // next one sooner than a heap.
        let mut heads: Vec<(u64, usize, usize)> = self
            .streams
            .iter()
            .enumerate()
            .filter_map(|(s, stream)| stream.front().map(|&(at, start, _)| (at, start, s)))
            .collect();
        let mut shown = Ok(());
        while let Some((i, &(at, _, s))) = heads.iter().enumerate().min_by_key(|(_, h)| (h.0, h.1)) {
            if at > up_to {
                break;
            }
            let Some((_, start, len)) = self.streams[s].pop_front() else {
                break;
            };
            if shown.is_ok() {
                shown = f(&self.bytes[start..start + len]);
            }
            match self.streams[s].front() {
                Some(&(at, start, _)) => heads[i] = (at, start, s),
                None => {
                    heads.swap_remove(i);
                }
            }
        }
        self.compact();
        shown
    }

    /// Free the bytes of what was let go: all of them when nothing is held,
    /// else by moving the held rest to the front once enough is free.
    fn compact(&mut self) {
        if self.is_empty() {
            self.bytes.clear();
            return;
        }
        if self.bytes.len() < COMPACT_AT {
            return;
        }
        let held = || self.streams.iter().flat_map(|s| s.iter());
        let Some(first) = held()
            .map(|&(_, start, _)| start)
            .min()
            .filter(|&f| f >= COMPACT_AT)
        else {
            return;
        };
        self.bytes.drain(..first);
        for stream in &mut self.streams {
            for e in stream.iter_mut() {
                e.1 -= first;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.streams.iter().all(VecDeque::is_empty)
    }

    /// Every CPU's batch was flushed and the ring drained after `at`.
    pub fn flushed(&mut self, at: u64) {
        for m in &mut self.marks {
            *m = (*m).max(at);
        }
    }

    /// Up to when every record made has arrived: the CPU that is furthest
    /// behind.
    pub fn mark(&self) -> u64 {
        self.marks.iter().copied().min().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(h: &mut Hold, up_to: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        h.let_go(up_to, |r| {
            out.push(r.to_vec());
            Ok::<_, ()>(())
        })
        .unwrap();
        out
    }

    #[test]
    fn records_go_in_the_order_they_were_made_up_to_the_mark() {
        let mut h = Hold::new(2);
        h.push(Source::Batch(1), 10, b"a");
        h.push(Source::Batch(1), 30, b"c");
        h.push(Source::Alone, 40, b"d");
        h.push(Source::Alone, 20, b"b");
        h.push(Source::Batch(0), 20, b"b2");
        h.push(Source::Batch(0), 35, b"c2");
        assert_eq!(all(&mut h, 30), [&b"a"[..], b"b", b"b2", b"c"]);
        assert!(!h.is_empty(), "made after the mark: held");
        h.push(Source::Batch(1), 36, b"late");
        assert_eq!(all(&mut h, u64::MAX), [&b"c2"[..], b"late", b"d"]);
        assert!(h.is_empty());
        assert!(all(&mut h, u64::MAX).is_empty());
    }

    #[test]
    fn the_mark_is_the_cpu_furthest_behind() {
        let mut h = Hold::new(2);
        h.push(Source::Alone, 5, b"alone");
        assert_eq!(h.mark(), 0, "no CPU said anything yet");
        h.push(Source::Batch(0), 40, b"x");
        assert_eq!(h.mark(), 0, "CPU 1 may still hold older writes");
        h.push(Source::Batch(1), 30, b"y");
        assert_eq!(h.mark(), 30);
        h.flushed(50);
        assert_eq!(h.mark(), 50);
        h.push(Source::Batch(7), 60, b"a CPU beyond the count");
        assert_eq!(h.mark(), 50);
    }

    #[test]
    fn what_was_let_go_is_freed_and_the_rest_kept_whole() {
        let mut h = Hold::new(1);
        let big = vec![7u8; 1024];
        for t in 0..1100 {
            h.push(Source::Batch(0), 10 + t, &big);
        }
        h.push(Source::Alone, 5_000, b"kept");
        h.push(Source::Batch(0), 4_000, b"also kept");
        assert_eq!(all(&mut h, 3_000).len(), 1100);
        assert!(h.bytes.len() < 64, "compacted: {}", h.bytes.len());
        assert_eq!(all(&mut h, u64::MAX), [&b"also kept"[..], b"kept"]);
        assert!(h.bytes.is_empty());
    }

    #[test]
    fn an_error_stops_the_rest() {
        let mut h = Hold::new(1);
        h.push(Source::Alone, 1, b"a");
        h.push(Source::Alone, 2, b"b");
        let mut seen = 0;
        let r = h.let_go(5, |_| {
            seen += 1;
            Err("full disk")
        });
        assert_eq!((r, seen), (Err("full disk"), 1));
    }
}
