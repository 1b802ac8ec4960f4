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

use std::{cmp::Reverse, collections::BinaryHeap};

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
type Entry = (u64, u32, u32);

#[derive(Default)]
pub struct Hold {
    bytes: Vec<u8>,
    /// Stream 0: records that came alone; stream 1 + n: CPU n's batches.
    streams: Vec<Vec<Entry>>,
    held: usize,
    /// The last [`Hold::let_go`]'s memory, reused.
    spare: Vec<u8>,
}

impl Hold {
    pub fn push(&mut self, from: Source, made_at: u64, record: &[u8]) {
        let stream = match from {
            Source::Alone => 0,
            Source::Batch(cpu) => cpu as usize + 1,
        };
        if self.streams.len() <= stream {
            self.streams.resize_with(stream + 1, Vec::new);
        }
        self.streams[stream].push((made_at, self.bytes.len() as u32, record.len() as u32));
        self.bytes.extend_from_slice(record);
        self.held += 1;
    }

    /// Every record made at or before `up_to` to `f`, in the order they
    /// were made (records made at the same time in order of arrival); the
    /// rest stay held. Stops at `f`'s first error, and drops what that
    /// call had taken out.
    pub fn let_go<E>(&mut self, up_to: u64, mut f: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if self.held == 0 {
            return Ok(());
        }
        let bytes = std::mem::replace(&mut self.bytes, std::mem::take(&mut self.spare));
        let mut streams = std::mem::take(&mut self.streams);
        self.held = 0;
        // Stable: arrival order among equal times.
        streams[0].sort_by_key(|&(at, _, _)| at);
        let mut next = BinaryHeap::with_capacity(streams.len());
        for (s, stream) in streams.iter().enumerate() {
            if let Some(&(at, start, _)) = stream.first() {
                next.push(Reverse((at, start, s, 0usize)));
            }
        }
        let mut shown = Ok(());
        while let Some(Reverse((at, _, s, i))) = next.pop() {
            if at > up_to {
                // Every stream's rest is later still: keep them all.
                next.push(Reverse((at, 0, s, i)));
                break;
            }
            let (_, start, len) = streams[s][i];
            if shown.is_ok() {
                shown = f(&bytes[start as usize..(start + len) as usize]);
            }
            if let Some(&(at, start, _)) = streams[s].get(i + 1) {
                next.push(Reverse((at, start, s, i + 1)));
            }
        }
        for Reverse((_, _, s, i)) in next {
            for &(at, start, len) in &streams[s][i..] {
                let from = if s == 0 {
                    Source::Alone
                } else {
                    Source::Batch(s as u32 - 1)
                };
                self.push(from, at, &bytes[start as usize..(start + len) as usize]);
            }
        }
        self.spare = bytes;
        self.spare.clear();
        shown
    }

    pub fn is_empty(&self) -> bool {
        self.held == 0
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
        let mut h = Hold::default();
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
    fn an_error_stops_the_rest() {
        let mut h = Hold::default();
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
