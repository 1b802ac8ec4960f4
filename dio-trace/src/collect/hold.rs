//! Records held back until every record sent before them has arrived,
//! then let go in the order the kernel made them.
//!
//! With per-CPU batches (`collect::batch`) the kernel's records no longer
//! arrive in the order it made them: one CPU's sixteen settled writes
//! leave together, while another CPU's writes, a write sent on its own, or
//! the path of a new file that reuses an inode number may have left before
//! the older writes in the batch. After the tick has flushed every CPU's
//! batch and drained the ring, each record made before the flush is in
//! hand; held until then and sorted by when it was made
//! ([`crate::collect::decode::sent_at`]), they reach the engine in the
//! order an unbatched kernel would have sent them: every write gets the
//! path and cgroup it had, and reports, recordings and replays keep that
//! order. The one exception is a batch the flush found busy (it landed
//! while a program on that CPU was filling it): its writes come a tick
//! later, judged the same, but shown out of order.

/// Raw records, each with the time the kernel made it.
#[derive(Default)]
pub struct Hold {
    bytes: Vec<u8>,
    /// (sent at, start, length) in `bytes`.
    index: Vec<(u64, usize, usize)>,
    /// The last `let_go`'s memory, reused.
    spare: Vec<u8>,
}

impl Hold {
    pub fn push(&mut self, sent_at: u64, record: &[u8]) {
        self.index.push((sent_at, self.bytes.len(), record.len()));
        self.bytes.extend_from_slice(record);
    }

    /// Every record sent at or before `up_to` to `f`, in the order they
    /// were sent (records sent at the same time in arrival order); the
    /// rest stay held. Stops at `f`'s first error, and drops what that
    /// call had taken out.
    pub fn let_go<E>(&mut self, up_to: u64, mut f: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if self.index.is_empty() {
            return Ok(());
        }
        // Stable, and linear on what is already nearly in order (runs of
        // one CPU's batch).
        self.index.sort_by_key(|&(at, _, _)| at);
        let due = self.index.partition_point(|&(at, _, _)| at <= up_to);
        let bytes = std::mem::replace(&mut self.bytes, std::mem::take(&mut self.spare));
        let index = std::mem::take(&mut self.index);
        for &(at, start, len) in &index[due..] {
            self.push(at, &bytes[start..start + len]);
        }
        let shown = index[..due]
            .iter()
            .try_for_each(|&(_, start, len)| f(&bytes[start..start + len]));
        self.spare = bytes;
        self.spare.clear();
        shown
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_go_in_the_order_they_were_sent_up_to_the_mark() {
        let mut h = Hold::default();
        h.push(30, b"c");
        h.push(10, b"a");
        h.push(40, b"d");
        h.push(20, b"b");
        h.push(20, b"b2");
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut take = |r: &[u8]| {
            out.push(r.to_vec());
            Ok::<_, ()>(())
        };
        h.let_go(30, &mut take).unwrap();
        assert_eq!(out, [&b"a"[..], b"b", b"b2", b"c"]);
        assert!(!h.is_empty(), "sent after the mark: held");
        h.push(35, b"late");
        let mut rest: Vec<Vec<u8>> = Vec::new();
        h.let_go(u64::MAX, |r| {
            rest.push(r.to_vec());
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(rest, [&b"late"[..], b"d"]);
        assert!(h.is_empty());
    }

    #[test]
    fn an_error_stops_the_rest() {
        let mut h = Hold::default();
        h.push(1, b"a");
        h.push(2, b"b");
        let mut seen = 0;
        let r = h.let_go(5, |_| {
            seen += 1;
            Err("full disk")
        });
        assert_eq!((r, seen), (Err("full disk"), 1));
    }
}
