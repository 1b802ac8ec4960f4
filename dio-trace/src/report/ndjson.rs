//! NDJSON, one object per line, for pipes and CI.
//!
//! Schema (every line has `type`):
//! - `start`: `kernel`, `probes` (probe -> "mechanism:target" or null),
//!   `symbols_unreadable` (why kernel addresses stay unnamed, or null),
//!   `ordered_writes` ("counted": a run that shows only problems, whose
//!   ordered writes the kernel counts instead of sending, so the summary
//!   has them but no `write` line ever will; "sent": one record each).
//! - `write`: one per counted (or failed) write (with `--show problems`,
//!   the default of `watch`, only violations and inconclusive ones): `verdict` ("ordered" |
//!   "violation" | "inconclusive" | "failed"), `kind` (violation kind or
//!   null), `reason` (why inconclusive, or null), `pid`, `tid`, `comm`,
//!   `dev` ("major:minor"), `fs` ("ext4" | "xfs" | "f2fs" | "btrfs"), `ino`, `path` (null when unresolved), `cgroup`
//!   (the writer's cgroup v2 path from the cgroup2 root, e.g.
//!   "/system.slice/db.service"; null when unknown), `offset`,
//!   `len`, `sync` ("sync" | "dsync"), `new_extent` (true: counted for
//!   going into new or unwritten blocks inside the file, not for extending
//!   it), `backend`, `events`.
//! - `violation`: the same fields, for each violating write, after its
//!   `write` line.
//! - `summary`, last: `kernel`, `writes` (direct writes the kernel saw that
//!   passed the filters), `counted`, `ordered`, `violations`,
//!   `inconclusive`, `failed`, `not_counted`, `abandoned` (write attempts
//!   retried before any effect, e.g. io_uring's EAGAIN), `filtered`, `lost_events`,
//!   `verdict` ("ordered" | "violation" | "inconclusive"), `reasons`,
//!   `probes`, `skipped` (probe -> program runs the kernel skipped, only
//!   probes with skips), `counters` (raw kernel counters).
//!
//! `events` entries: `t_ns` (from the write's start), `event`, `mechanism`,
//! `pid`, `cpu`, `i_size`, `i_disksize` (null when unreadable), and per
//! event `caller` (size updates; null when unnamed), `datasync`
//! (sync_enter; null where the filesystem's tracepoint does not say), `ret`
//! (completions and sync exits), `cp_reason` (f2fs syncs, null elsewhere:
//! 0 the sync wrote node pages for roll-forward recovery, else it took a
//! checkpoint, the kernel's `enum cp_reason_type`, e.g. 3 `CP_HARDLINK`),
//! `sync_alone` (beside `cp_reason`: no other f2fs sync on the device was
//! running when it returned), `nodes_waited` (beside it: f2fs waited for
//! the node pages it wrote before its flush); a roll-forward counts only
//! with both,
//! `error` (completions), and `stack` where the kernel sent one: the call
//! path, innermost frame first, as `name+0xoff` (`[module]` after it for a
//! module's function); an unnamed frame is `"?"`. `stack_error` is the
//! errno of a stack the kernel could not walk. Raw kernel addresses stay
//! out (KASLR) unless `--raw-addresses`: then `caller` falls back to the
//! address, and `stack_addresses` lists each frame's.

use std::io::Write;

use dio_trace_common::{
    counters::Counter,
    kind::RecordKind,
    record::{DATASYNC_UNKNOWN, EVENT_NODES_WAITED, EVENT_SYNC_ALONE},
};
use serde_json::{Value, json};

use super::{Reporter, RunInfo, View, backend_of};
use crate::{
    analysis::{Event, Summary, Verdict, engine::WriteReport},
    kernel::dev_string,
};

pub struct Ndjson<W: Write> {
    out: W,
    view: View,
}

impl<W: Write> Ndjson<W> {
    pub fn new(out: W, view: impl Into<View>) -> Self {
        Self {
            out,
            view: view.into(),
        }
    }

    fn line(&mut self, v: &Value) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, v)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// One event relative to its write's start; `raw`: with kernel addresses.
pub fn event_json(e: &Event, t0: u64, raw: bool) -> Value {
    let mut v = json!({
        "t_ns": e.ts_ns.saturating_sub(t0),
        "event": e.kind.name(),
        "mechanism": e.mechanism.name(),
        "pid": e.pid,
        "cpu": e.cpu,
        "i_size": e.i_size,
        "i_disksize": e.disksize(),
    });
    let extra = match e.kind {
        RecordKind::MarkDirty | RecordKind::F2fsMarkDirty => {
            let raw_caller = (raw && e.arg != 0).then(|| format!("{:#x}", e.arg));
            json!({ "caller": e.caller.as_deref().map(str::to_owned).or(raw_caller) })
        }
        RecordKind::SyncEnter => json!({
            "datasync": (e.arg != DATASYNC_UNKNOWN).then_some(e.arg),
            "cp_reason": (e.pos >= 0).then_some(e.pos),
            "sync_alone": (e.pos >= 0).then_some(e.flags & EVENT_SYNC_ALONE != 0),
            "nodes_waited": (e.pos >= 0).then_some(e.flags & EVENT_NODES_WAITED != 0),
        }),
        RecordKind::SyncExit => json!({
            "ret": e.arg as i64,
            "cp_reason": (e.pos >= 0).then_some(e.pos),
            "sync_alone": (e.pos >= 0).then_some(e.flags & EVENT_SYNC_ALONE != 0),
            "nodes_waited": (e.pos >= 0).then_some(e.flags & EVENT_NODES_WAITED != 0),
        }),
        RecordKind::CompleteExit | RecordKind::CompleteEnter => {
            json!({ "ret": e.arg as i64, "error": e.pos })
        }
        _ => json!({}),
    };
    if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
        m.extend(x);
    }
    if let (Value::Object(m), Some(s)) = (&mut v, &e.stack) {
        let names: Vec<&str> = s
            .frames
            .iter()
            .map(|f| f.symbol.as_deref().unwrap_or("?"))
            .collect();
        m.insert("stack".into(), json!(names));
        if let Some(errno) = s.error {
            m.insert("stack_error".into(), json!(errno));
        }
        if raw {
            let addrs: Vec<String> = s.frames.iter().map(|f| format!("{:#x}", f.addr)).collect();
            m.insert("stack_addresses".into(), json!(addrs));
        }
    }
    v
}

/// The fields of a `write` or `violation` line.
pub fn write_json(kind: &str, w: &WriteReport, raw: bool) -> Value {
    let b = &w.begin;
    let (violation, reason) = match &w.verdict {
        Verdict::Violation(k) => (Some(k.name()), None),
        Verdict::Inconclusive(r) => (None, Some(r.clone())),
        _ => (None, None),
    };
    let events: Vec<Value> = std::iter::once(b)
        .chain(&w.events)
        .map(|e| event_json(e, b.ts_ns, raw))
        .collect();
    json!({
        "type": kind,
        "verdict": w.verdict.name(),
        "kind": violation,
        "reason": reason,
        "pid": b.tgid,
        "tid": b.pid,
        "comm": b.comm,
        "dev": dev_string(b.dev),
        "fs": b.fs().name(),
        "ino": b.ino,
        "path": w.path.as_deref(),
        "cgroup": b.cgroup.as_deref(),
        "offset": b.pos,
        "len": b.len,
        "sync": b.sync_flavour(),
        "new_extent": b.new_extent(),
        "backend": backend_of(w),
        "events": events,
    })
}

pub fn summary_json(s: &Summary, info: &RunInfo) -> Value {
    let t = &s.tally;
    let counters: serde_json::Map<String, Value> = Counter::ALL
        .iter()
        .map(|c| (c.name().to_owned(), json!(info.counters.get(*c))))
        .collect();
    json!({
        "type": "summary",
        "kernel": info.kernel,
        "writes": s.direct_writes,
        "counted": t.counted(),
        "ordered": t.ordered,
        "violations": t.violations,
        "inconclusive": t.inconclusive,
        "failed": t.failed,
        "not_counted": t.not_counted,
        "abandoned": t.abandoned,
        "filtered": t.filtered,
        "lost_events": s.lost_records,
        "verdict": s.overall.name(),
        "reasons": s.reasons,
        "probes": info.probes,
        "skipped": info.skipped,
        "counters": counters,
    })
}

impl<W: Write> Reporter for Ndjson<W> {
    fn start(&mut self, info: &RunInfo) -> std::io::Result<()> {
        self.line(&json!({
            "type": "start",
            "kernel": info.kernel,
            "probes": info.probes,
            "symbols_unreadable": info.symbols_unreadable,
            "ordered_writes": info.ordered_writes(),
        }))
    }

    fn write(&mut self, w: &WriteReport) -> std::io::Result<()> {
        if !self.view.show.shows(&w.verdict) {
            return Ok(());
        }
        self.line(&write_json("write", w, self.view.raw_addresses))?;
        if matches!(w.verdict, Verdict::Violation(_)) {
            self.line(&write_json("violation", w, self.view.raw_addresses))?;
        }
        Ok(())
    }

    fn finish(&mut self, s: &Summary, info: &RunInfo) -> std::io::Result<()> {
        self.line(&summary_json(s, info))
    }
}
