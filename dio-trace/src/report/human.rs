//! The view for people: one line per write, a compact timeline under each
//! violation (retsnoop-style arrows), and a summary.

use std::io::Write;

use dio_trace_common::{
    kind::RecordKind,
    record::{DATASYNC_UNKNOWN, EVENT_ROLL_FORWARD},
};

use super::{Reporter, RunInfo, Show, backend_of};
use crate::{
    analysis::{Event, Overall, Summary, Verdict, engine::WriteReport},
    kernel::dev_string,
};

pub struct Human<W: Write> {
    out: W,
    show: Show,
}

impl<W: Write> Human<W> {
    pub fn new(out: W, show: Show) -> Self {
        Self { out, show }
    }
}

/// `write_begin +0us disk=4096 -> sync_enter +21us disk=4096 -> ...`
pub fn timeline(w: &WriteReport) -> String {
    let t0 = w.begin.ts_ns;
    std::iter::once(&w.begin)
        .chain(&w.events)
        .map(|e| step(e, t0))
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn step(e: &Event, t0: u64) -> String {
    let us = e.ts_ns.saturating_sub(t0) as f64 / 1000.0;
    let disk = e.disksize().map(|d| format!(" disk={d}")).unwrap_or_default();
    let extra = match e.kind {
        RecordKind::MarkDirty | RecordKind::F2fsMarkDirty => {
            e.caller.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
        }
        RecordKind::SyncEnter | RecordKind::SyncExit => {
            let datasync = match (e.kind, e.arg) {
                (RecordKind::SyncEnter, a) if a != DATASYNC_UNKNOWN => format!(" datasync={a}"),
                _ => String::new(),
            };
            format!("{datasync}{}", sync_path(e))
        }
        _ => String::new(),
    };
    format!("{} +{us:.0}us{disk}{extra}", e.kind.name())
}

/// How an f2fs sync ended (`pos` holds its `cp_reason`, -1 elsewhere).
fn sync_path(e: &Event) -> String {
    match e.pos {
        p if p < 0 => String::new(),
        0 if e.flags & EVENT_ROLL_FORWARD != 0 => " cp_reason=0 (roll-forward)".into(),
        p => format!(" cp_reason={p} (checkpoint)"),
    }
}

impl<W: Write> Reporter for Human<W> {
    fn start(&mut self, info: &RunInfo) -> std::io::Result<()> {
        writeln!(self.out, "tracing on {} ({})", info.kernel, info.probe_line())?;
        self.out.flush()
    }

    fn write(&mut self, w: &WriteReport) -> std::io::Result<()> {
        if !self.show.shows(&w.verdict) {
            return Ok(());
        }
        let b = &w.begin;
        let (label, detail) = match &w.verdict {
            Verdict::Ordered => ("ORDERED", String::new()),
            Verdict::Violation(k) => ("VIOLATION", format!(" {}", k.name())),
            Verdict::Inconclusive(why) => ("INCONCLUSIVE", format!(" ({why})")),
            Verdict::Failed(ret) => ("FAILED", format!(" (ret={ret})")),
        };
        writeln!(
            self.out,
            "{label:<12} pid {} ({}) {} dev {} ino {} {} off={} len={} {}{}{detail} [{}]",
            b.tgid,
            b.comm,
            b.fs().name(),
            dev_string(b.dev),
            b.ino,
            w.path.as_deref().unwrap_or("<path unknown>"),
            b.pos,
            b.len,
            b.sync_flavour().to_uppercase(),
            if b.new_extent() { " into-new-blocks" } else { "" },
            backend_of(w),
        )?;
        if !matches!(w.verdict, Verdict::Ordered) {
            if let Some(cg) = b.cgroup.as_deref().filter(|c| *c != "/") {
                writeln!(self.out, "    cgroup {cg}")?;
            }
            writeln!(self.out, "    {}", timeline(w))?;
        }
        self.out.flush()
    }

    fn finish(&mut self, s: &Summary, info: &RunInfo) -> std::io::Result<()> {
        let t = &s.tally;
        writeln!(
            self.out,
            "summary: {} counted writes: {} ordered, {} violations, {} inconclusive; {} direct writes seen, {} not counted, {} lost records",
            t.counted(),
            t.ordered,
            t.violations,
            t.inconclusive,
            s.direct_writes,
            t.not_counted + t.failed,
            s.lost_records,
        )?;
        writeln!(self.out, "probes: {}", info.probe_line())?;
        let verdict = match s.overall {
            Overall::Ordered => {
                "ORDERED: every size-extending sync write made its size durable before or by its sync"
            }
            Overall::Violation => "VIOLATION: a sync ran before the size update of a size-extending write",
            Overall::Inconclusive => "INCONCLUSIVE",
        };
        writeln!(self.out, "verdict: {verdict}")?;
        self.out.flush()
    }
}
