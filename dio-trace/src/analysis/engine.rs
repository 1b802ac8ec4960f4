//! Groups events into writes and closes each write with a verdict.
//!
//! A write opens at its `WriteBegin` and collects every later event of its
//! inode. It closes when it has nothing more to say (completed, and the
//! size update seen; or the kernel says so, `Input::Done`), when the next
//! write to that inode begins, when it has lingered past its completion,
//! or at the end of the trace.
//!
//! A write the kernel sends whole and settled ([`Engine::write`]) while
//! no other write is open on its inode is judged at once, without entering
//! the open map: the default path, taken once per counted write, allocates
//! nothing (the event lists of closed reports come back through
//! [`Engine::recycle`]).

use std::{collections::VecDeque, sync::Arc};

use rustc_hash::FxHashMap;

use dio_trace_common::{
    fs::{FS_SLOTS, Fs},
    kind::RecordKind,
    record::{EVENT_DSYNC, EVENT_SYNC},
};

use super::{
    event::{Event, Input},
    judge::{Coverage, Verdict, judge},
};

/// Tunables and facts the engine is built with (no I/O behind any of them).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub coverage: Coverage,
    /// Keep only writes whose path is this file or lies under this directory.
    pub path_prefix: Option<String>,
    /// How long after its completion a write waits for a late size update
    /// (the buggy order updates the size after `iomap_dio_complete`).
    pub linger_ns: u64,
    /// A write with no completion after this long is closed inconclusive.
    pub stall_ns: u64,
    /// Writes kept open at most; the oldest is closed inconclusive beyond.
    pub max_open: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            coverage: Coverage::ALL,
            path_prefix: None,
            linger_ns: 200_000_000,
            stall_ns: 30_000_000_000,
            max_open: 65_536,
        }
    }
}

/// A closed write: what it was, what happened, and the verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteReport {
    pub begin: Event,
    pub path: Option<Arc<str>>,
    pub verdict: Verdict,
    /// Every event of this write after its begin, in kernel order.
    pub events: Vec<Event>,
}

struct OpenWrite {
    begin: Event,
    path: Option<Arc<str>>,
    excluded: bool,
    events: Vec<Event>,
    lost: bool,
    completed_at: Option<u64>,
    size_seen: bool,
}

/// What the engine tallied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub ordered: u64,
    pub violations: u64,
    pub inconclusive: u64,
    pub failed: u64,
    /// Armed writes outside `--path`.
    pub filtered: u64,
    /// Records the kernel reported lost.
    pub lost_records: u64,
    /// Events of writes whose begin never arrived, carrying a loss mark.
    pub orphaned_lost: u64,
    /// Writes closed early because `max_open` was reached.
    pub evicted: u64,
    /// Begins that were not sync-flavoured size-extending writes (a backend
    /// may report more than the kernel-side filter lets through).
    pub not_counted: u64,
    /// Begins superseded by a new begin on the same inode before any event
    /// of theirs: attempts that never ran (EAGAIN retries).
    pub abandoned: u64,
    /// Writes judged, by filesystem ([`Fs::slot`]).
    pub by_fs: [u64; FS_SLOTS],
}

impl Tally {
    /// Writes judged (failed writes extended nothing and are not counted).
    pub fn counted(&self) -> u64 {
        self.ordered + self.violations + self.inconclusive
    }
}

pub struct Engine {
    cfg: EngineConfig,
    open: FxHashMap<(u32, u64), OpenWrite>,
    /// Open keys in begin order, for eviction.
    order: VecDeque<(u32, u64)>,
    tally: Tally,
    last_ts: u64,
    /// Emptied event lists of reports already shown, for the next writes.
    spare: Vec<Vec<Event>>,
}

/// Event lists kept for reuse at most (a burst of closed writes beyond it
/// frees the rest).
const MAX_SPARE: usize = 1024;

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        Self {
            cfg,
            open: FxHashMap::default(),
            order: VecDeque::new(),
            tally: Tally::default(),
            last_ts: 0,
            spare: Vec::new(),
        }
    }

    /// The event list of a report that has been shown, kept for the next
    /// write instead of being freed.
    pub fn recycle(&mut self, mut events: Vec<Event>) {
        if self.spare.len() < MAX_SPARE && events.capacity() > 0 {
            events.clear();
            self.spare.push(events);
        }
    }

    /// An empty event list, reused when one is spare.
    pub fn spare_events(&mut self) -> Vec<Event> {
        self.spare.pop().unwrap_or_default()
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// `n` writes on `fs` that the kernel settled as ordered by the shared
    /// rule and counted instead of sending (`CONFIG_COUNT_ORDERED`): the
    /// verdict [`judge`] gives such a write, tallied as if it had come.
    pub fn ordered_counted(&mut self, fs: Fs, n: u64) {
        self.tally.ordered += n;
        self.tally.by_fs[fs.slot()] += n;
    }

    /// Writes in flight now.
    pub fn open_writes(&self) -> usize {
        self.open.len()
    }

    /// Feed one input; returns the writes it closed.
    pub fn push(&mut self, input: Input) -> Vec<WriteReport> {
        let mut out = Vec::new();
        self.push_into(input, &mut out);
        out
    }

    /// Feed one input; the writes it closes are appended to `out`.
    pub fn push_into(&mut self, input: Input, out: &mut Vec<WriteReport>) {
        match input {
            Input::Event(ev) => {
                self.last_ts = self.last_ts.max(ev.ts_ns);
                self.event(ev, out);
            }
            Input::Path { dev, ino, path } => {
                if let Some(w) = self.open.get_mut(&(dev, ino)) {
                    w.set_path(path, self.cfg.path_prefix.as_deref());
                }
            }
            Input::Done { dev, ino } => self.close((dev, ino), out),
            Input::Lost { records, ts_ns } => {
                self.tally.lost_records += records;
                self.last_ts = self.last_ts.max(ts_ns);
                for w in self.open.values_mut() {
                    w.lost = true;
                }
            }
        }
    }

    /// A whole write: its `begin`, then `steps` (its later events, in
    /// kernel order; emptied, its memory kept or swapped for a spare
    /// list), and `path` when its file's path is known. `done`: the kernel
    /// sent it settled, judge it now. Exactly what pushing the begin, the
    /// path, each step and `Done` would do, in that order; when nothing is
    /// open on its inode and it counts, without the open map.
    pub fn write(
        &mut self,
        begin: Event,
        steps: &mut Vec<Event>,
        path: Option<Option<Arc<str>>>,
        done: bool,
        out: &mut Vec<WriteReport>,
    ) {
        let key = begin.key();
        // A write open on the inode that began after this one is a later
        // write that overtook it (this one was in a batch a flush found
        // busy, which comes a tick late): it is not this one's to close.
        let alone = done
            && counts(&begin)
            && self.open.get(&key).is_none_or(|w| w.begin.ts_ns > begin.ts_ns)
            && steps
                .iter()
                .all(|e| e.kind != RecordKind::WriteBegin && e.key() == key);
        if !alone {
            self.push_into(Input::Event(begin), out);
            if let Some(path) = path {
                self.push_into(
                    Input::Path {
                        dev: key.0,
                        ino: key.1,
                        path,
                    },
                    out,
                );
            }
            for e in steps.drain(..) {
                self.push_into(Input::Event(e), out);
            }
            if done {
                self.push_into(
                    Input::Done {
                        dev: key.0,
                        ino: key.1,
                    },
                    out,
                );
            }
            return;
        }
        self.last_ts = steps
            .iter()
            .fold(self.last_ts.max(begin.ts_ns), |t, e| t.max(e.ts_ns));
        self.make_room(out);
        let mut w = OpenWrite::new(begin);
        if let Some(path) = path {
            w.set_path(path, self.cfg.path_prefix.as_deref());
        }
        // Steps after the one that settled it find no open write, as
        // they would pushed one by one.
        let settled = steps.iter().position(|e| w.saw(e)).map_or(steps.len(), |i| i + 1);
        self.tally.orphaned_lost += steps[settled..].iter().filter(|e| e.lost > 0).count() as u64;
        steps.truncate(settled);
        let spare = self.spare_events();
        w.events = std::mem::replace(steps, spare);
        self.report(w, out);
    }

    /// Close what has lingered or stalled, as of `now_ns` (kernel monotonic
    /// clock; replays pass the last event's time).
    pub fn tick(&mut self, now_ns: u64) -> Vec<WriteReport> {
        let (linger, stall) = (self.cfg.linger_ns, self.cfg.stall_ns);
        let due: Vec<_> = self
            .open
            .iter()
            .filter(|(_, w)| match w.completed_at {
                Some(t) => now_ns.saturating_sub(t) > linger,
                None => now_ns.saturating_sub(w.begin.ts_ns) > stall,
            })
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for k in due {
            self.close(k, &mut out);
        }
        out
    }

    /// Close everything (end of trace).
    pub fn finish(&mut self) -> Vec<WriteReport> {
        let mut out = Vec::new();
        let keys: Vec<_> = self.order.iter().copied().collect();
        for k in keys {
            self.close(k, &mut out);
        }
        out
    }

    /// The newest kernel timestamp seen.
    pub fn last_ts(&self) -> u64 {
        self.last_ts
    }

    fn event(&mut self, ev: Event, out: &mut Vec<WriteReport>) {
        let key = ev.key();
        if ev.kind == RecordKind::WriteBegin {
            self.supersede(key, &ev, out);
            if !counts(&ev) {
                self.tally.not_counted += 1;
                return;
            }
            self.make_room(out);
            self.order.push_back(key);
            let mut w = OpenWrite::new(ev);
            w.events = self.spare_events();
            self.open.insert(key, w);
            return;
        }
        let Some(w) = self.open.get_mut(&key) else {
            if ev.lost > 0 {
                self.tally.orphaned_lost += 1;
            }
            return;
        };
        let settled = w.saw(&ev);
        w.events.push(ev);
        if settled {
            self.close(key, out);
        }
    }

    /// A counted write begins: past `max_open` open writes, the oldest is
    /// closed first.
    fn make_room(&mut self, out: &mut Vec<WriteReport>) {
        if self.open.len() >= self.cfg.max_open
            && let Some(oldest) = self.order.front().copied()
        {
            self.tally.evicted += 1;
            self.close(oldest, out);
        }
    }

    /// A new write to `key` began. An open one that never got to its sync
    /// or completion, and that left no trace at all or is now retried at
    /// the same offset and length, was an attempt abandoned before any
    /// effect: io_uring's non-blocking try, which ext4 refuses with EAGAIN
    /// (after a timestamp update) before a worker retries it. It is not a
    /// write to judge. Lost records keep it open to judgement.
    fn supersede(&mut self, key: (u32, u64), next: &Event, out: &mut Vec<WriteReport>) {
        let reached_io = |e: &Event| {
            matches!(
                e.kind,
                RecordKind::SyncEnter | RecordKind::CompleteEnter | RecordKind::CompleteExit
            )
        };
        if let Some(w) = self.open.get(&key)
            && !w.lost
            && !w.events.iter().any(reached_io)
            && (w.events.is_empty() || (w.begin.pos, w.begin.len) == (next.pos, next.len))
        {
            if let Some(w) = self.open.remove(&key) {
                self.recycle(w.events);
            }
            self.order.retain(|k| *k != key);
            self.tally.abandoned += 1;
            return;
        }
        self.close(key, out);
    }

    fn close(&mut self, key: (u32, u64), out: &mut Vec<WriteReport>) {
        let Some(w) = self.open.remove(&key) else { return };
        self.order.retain(|k| *k != key);
        self.report(w, out);
    }

    /// Judge a closed write and tally it; report it unless `--path` left
    /// it out.
    fn report(&mut self, w: OpenWrite, out: &mut Vec<WriteReport>) {
        if w.excluded {
            self.tally.filtered += 1;
            self.recycle(w.events);
            return;
        }
        let verdict = judge(&w.begin, &w.events, w.lost, self.cfg.coverage);
        match &verdict {
            Verdict::Ordered => self.tally.ordered += 1,
            Verdict::Violation(_) => self.tally.violations += 1,
            Verdict::Inconclusive(_) => self.tally.inconclusive += 1,
            Verdict::Failed(_) => self.tally.failed += 1,
        }
        if !matches!(verdict, Verdict::Failed(_)) {
            self.tally.by_fs[w.begin.fs().slot()] += 1;
        }
        out.push(WriteReport {
            begin: w.begin,
            path: w.path,
            verdict,
            events: w.events,
        });
    }
}

impl OpenWrite {
    /// The open write a counted `begin` starts (with no events yet).
    fn new(begin: Event) -> Self {
        Self {
            lost: begin.lost > 0,
            // A write into new blocks inside the file has no size to update.
            size_seen: begin.new_extent(),
            begin,
            path: None,
            excluded: false,
            events: Vec::new(),
            completed_at: None,
        }
    }

    /// The path of its file arrived; outside `prefix` it is left out.
    fn set_path(&mut self, path: Option<Arc<str>>, prefix: Option<&str>) {
        if let (Some(prefix), Some(p)) = (prefix, &path) {
            self.excluded = !under(p, prefix);
        }
        self.path = path;
    }

    /// Note what `ev`, its next event, says; true when the write has
    /// nothing more to say (completed, and the size update seen).
    fn saw(&mut self, ev: &Event) -> bool {
        let end = self.begin.end();
        match ev.kind {
            k if k.is_size_update() && ev.disksize().is_some_and(|d| d >= end) => self.size_seen = true,
            // A sync that writes the size it finds, finding it covering:
            // no size update will follow, none is needed.
            RecordKind::SyncEnter
                if ev
                    .disksize()
                    .is_some_and(|d| self.begin.fs().sync_carries_size(d, end)) =>
            {
                self.size_seen = true
            }
            RecordKind::CompleteExit => self.completed_at = Some(ev.ts_ns),
            _ => {}
        }
        self.completed_at.is_some() && self.size_seen
    }
}

/// The rule for a counted write, checked again here so that every backend
/// is held to it: sync-flavoured (DSYNC is set for SYNC too) and either
/// ending past the smaller of `i_size` and the on-disk size when it began, or
/// going into new or unwritten blocks (the kernel saw its mapping).
fn counts(begin: &Event) -> bool {
    let sync = begin.flags & (EVENT_DSYNC | EVENT_SYNC) != 0;
    let on_disk = match begin.disksize() {
        Some(d) => d.min(begin.i_size),
        None => begin.i_size,
    };
    sync && begin.pos >= 0 && (begin.end() > on_disk || begin.new_extent())
}

/// `path` is `prefix` or lies below it.
pub fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix || path.strip_prefix(prefix).is_some_and(|r| r.starts_with('/')) || prefix.is_empty()
}

#[cfg(test)]
mod tests;
