//! The view for people: one line per ordered write; under each write that
//! is not ordered, its timeline read top to bottom with the kernel stack
//! of each step that has one (retsnoop-style), in 80 columns; a summary.

use std::io::Write;

use dio_trace_common::{
    kind::RecordKind,
    record::{DATASYNC_UNKNOWN, EVENT_NODES_WAITED, EVENT_ROLL_FORWARD, EVENT_SYNC_ALONE},
};

use super::{Reporter, RunInfo, View, backend_of};
use crate::{
    analysis::{
        Event, Overall, Stack, Summary, Verdict, ViolationKind, engine::WriteReport, summary::went_buffered,
    },
    kernel::dev_string,
};

pub struct Human<W: Write> {
    out: W,
    view: View,
}

impl<W: Write> Human<W> {
    pub fn new(out: W, view: impl Into<View>) -> Self {
        Self {
            out,
            view: view.into(),
        }
    }
}

/// The width every line of a timeline keeps to.
pub const COLUMNS: usize = 80;

/// `write_begin +0us disk=4096 -> sync_enter +21us disk=4096 -> ...`: the
/// one-line form (JUnit failure messages).
pub fn timeline(w: &WriteReport) -> String {
    let t0 = w.begin.ts_ns;
    std::iter::once(&w.begin)
        .chain(&w.events)
        .map(|e| step(e, t0))
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn step(e: &Event, t0: u64) -> String {
    let disk = e.disksize().map(|d| format!(" disk={d}")).unwrap_or_default();
    format!("{} +{}us{disk}{}", e.kind.name(), micros(e, t0), extra(e))
}

fn micros(e: &Event, t0: u64) -> String {
    format!("{:.0}", e.ts_ns.saturating_sub(t0) as f64 / 1000.0)
}

/// What an event says beyond its kind, time and on-disk size.
fn extra(e: &Event) -> String {
    match e.kind {
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
    }
}

/// `line` without trailing blanks, cut to [`COLUMNS`] characters, ending
/// in `…` when cut.
fn fit(line: String) -> String {
    let line = line.trim_end().to_owned();
    if line.chars().count() <= COLUMNS {
        return line;
    }
    let mut cut: String = line.chars().take(COLUMNS - 1).collect();
    cut.push('…');
    cut
}

/// The timeline of a write that is not ordered, one step per line, each
/// step's stack under it (innermost frame first, callers below), then one
/// line that says what went wrong. Every line fits [`COLUMNS`].
pub fn timeline_block(w: &WriteReport, raw: bool) -> Vec<String> {
    let t0 = w.begin.ts_ns;
    let mut lines = Vec::new();
    for e in std::iter::once(&w.begin).chain(&w.events) {
        let disk = e
            .disksize()
            .map(|d| format!("disk={d}"))
            .unwrap_or_else(|| "disk=?".into());
        lines.push(fit(format!(
            "{:>10}us  {:<18} {disk:<11}{}",
            format!("+{}", micros(e, t0)),
            e.kind.name(),
            extra(e).trim_start()
        )));
        if let Some(s) = &e.stack {
            lines.extend(stack_lines(s, raw));
        }
    }
    if let Some(why) = explanation(w) {
        lines.push(fit(format!("    => {why}")));
    }
    lines
}

const FRAME_INDENT: &str = "                ";

fn stack_lines(s: &Stack, raw: bool) -> Vec<String> {
    if let Some(errno) = s.error {
        return vec![format!(
            "{FRAME_INDENT}(no stack: bpf_get_stack returned {errno})"
        )];
    }
    let shown: Vec<String> = s.frames.iter().filter_map(|f| f.display(raw)).collect();
    if shown.is_empty() {
        return vec![format!(
            "{FRAME_INDENT}({} frames, unnamed; --raw-addresses shows them)",
            s.frames.len()
        )];
    }
    shown
        .into_iter()
        .enumerate()
        .map(|(i, f)| fit(format!("{FRAME_INDENT}{}{f}", if i == 0 { "" } else { "<- " })))
        .collect()
}

/// One sentence on what went wrong, from the steps the verdict used.
fn explanation(w: &WriteReport) -> Option<String> {
    let t0 = w.begin.ts_ns;
    let end = w.begin.end();
    let find = |kind| w.events.iter().find(|e: &&Event| e.kind == kind);
    match w.verdict {
        Verdict::Violation(ViolationKind::SyncBeforeSizeUpdate) => {
            let sync = find(RecordKind::SyncEnter)?;
            let disk = sync.disksize().map_or("?".into(), |d| d.to_string());
            let size = w
                .events
                .iter()
                .find(|e| e.kind.is_size_update() && e.disksize().is_some_and(|d| d >= end));
            Some(match size {
                Some(u) => format!(
                    "sync at +{}us found disk={disk} < end {end}; size updated at +{}us",
                    micros(sync, t0),
                    micros(u, t0)
                ),
                None => format!(
                    "sync at +{}us found disk={disk} < end {end}; no size update seen",
                    micros(sync, t0)
                ),
            })
        }
        Verdict::Violation(ViolationKind::SyncMissing) => {
            let done = find(RecordKind::CompleteExit)?;
            Some(format!(
                "the write completed at +{}us and no sync ran",
                micros(done, t0)
            ))
        }
        _ => None,
    }
}

/// How an f2fs sync ended (`pos` holds its `cp_reason`, -1 elsewhere).
fn sync_path(e: &Event) -> String {
    match e.pos {
        p if p < 0 => String::new(),
        0 if e.flags & EVENT_ROLL_FORWARD != 0 && e.flags & EVENT_SYNC_ALONE == 0 => {
            " cp_reason=0 (roll-forward, beside another sync)".into()
        }
        0 if e.flags & EVENT_ROLL_FORWARD != 0 && e.flags & EVENT_NODES_WAITED == 0 => {
            " cp_reason=0 (roll-forward, node pages not waited for)".into()
        }
        0 if e.flags & EVENT_ROLL_FORWARD != 0 => " cp_reason=0 (roll-forward)".into(),
        p => format!(" cp_reason={p} (checkpoint)"),
    }
}

impl<W: Write> Reporter for Human<W> {
    fn start(&mut self, info: &RunInfo) -> std::io::Result<()> {
        writeln!(self.out, "tracing on {} ({})", info.kernel, info.probe_line())?;
        if info.ordered_counted {
            writeln!(
                self.out,
                "note: ordered writes are counted in the kernel, not sent (only problems are shown; --show all sends each)"
            )?;
        }
        if let Some(why) = &info.symbols_unreadable {
            writeln!(self.out, "note: kernel stacks and callers stay unnamed: {why}")?;
        }
        self.out.flush()
    }

    fn write(&mut self, w: &WriteReport) -> std::io::Result<()> {
        if !self.view.show.shows(&w.verdict) {
            return Ok(());
        }
        let b = &w.begin;
        let path = w.path.as_deref().unwrap_or("<path unknown>");
        let who = format!(
            "pid {} ({}) {} dev {} ino {}",
            b.tgid,
            b.comm,
            b.fs().name(),
            dev_string(b.dev),
            b.ino
        );
        let what = format!(
            "off={} len={} {}{}",
            b.pos,
            b.len,
            b.sync_flavour().to_uppercase(),
            if b.new_extent() { " into-new-blocks" } else { "" }
        );
        let (label, detail) = match &w.verdict {
            Verdict::Ordered => ("ORDERED", String::new()),
            Verdict::Violation(k) => ("VIOLATION", k.name().to_owned()),
            Verdict::Inconclusive(why) => ("INCONCLUSIVE", format!("({why})")),
            Verdict::Failed(ret) => ("FAILED", format!("(ret={ret})")),
        };
        if matches!(w.verdict, Verdict::Ordered | Verdict::Failed(_)) {
            writeln!(
                self.out,
                "{label:<12} {who} {path} {what}{}{detail} [{}]",
                if detail.is_empty() { "" } else { " " },
                backend_of(w),
            )?;
            return self.out.flush();
        }
        writeln!(self.out, "{label:<12} {detail}")?;
        writeln!(self.out, "{}", fit(format!("    {path} {what}")))?;
        writeln!(self.out, "{}", fit(format!("    {who} [{}]", backend_of(w))))?;
        if let Some(cg) = b.cgroup.as_deref().filter(|c| *c != "/") {
            writeln!(self.out, "{}", fit(format!("    cgroup {cg}")))?;
        }
        for line in timeline_block(w, self.view.raw_addresses) {
            writeln!(self.out, "{line}")?;
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
        let stacks_lost = info.counters.get(dio_trace_common::counters::Counter::StacksLost);
        if stacks_lost > 0 {
            writeln!(
                self.out,
                "note: {stacks_lost} kernel stacks did not fit in the ring buffer (--ringbuf-size); their steps show none"
            )?;
        }
        if let Some((note, false)) = went_buffered(
            info.counters
                .get(dio_trace_common::counters::Counter::BufferedFallback),
            t.counted(),
        ) {
            writeln!(self.out, "note: {note}")?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{Frame, Stack};
    use crate::report::Show;
    use dio_trace_common::{probe::Mechanism, record::EVENT_SYNC};

    fn ev(kind: RecordKind, ts_ns: u64, disk: i64) -> Event {
        Event {
            kind,
            mechanism: Mechanism::Kprobe,
            ts_ns,
            pid: 43,
            tgid: 43,
            cpu: 0,
            lost: 0,
            dev: 254 << 20,
            ino: 12,
            flags: EVENT_SYNC,
            i_size: 4096,
            i_disksize: disk,
            pos: 0,
            len: 4096,
            arg: 0,
            comm: "dio-trace".into(),
            caller: None,
            stack: None,
            cgroup: None,
        }
    }

    fn frames(names: &[&str]) -> Option<Box<Stack>> {
        Some(Box::new(Stack {
            frames: names
                .iter()
                .enumerate()
                .map(|(i, n)| Frame {
                    addr: 0xffff_ffff_8100_0000 + i as u64,
                    symbol: Some((*n).into()),
                })
                .collect(),
            error: None,
        }))
    }

    fn buggy_write() -> WriteReport {
        let mut sync = ev(RecordKind::SyncEnter, 7_012_000, 0);
        sync.stack = frames(&[
            "vfs_fsync_range+0x5",
            "iomap_dio_complete+0x1b3",
            "iomap_dio_rw+0x3a",
            "a_very_long_function_name_that_would_not_fit_in_eighty_columns_at_all+0x1234 [ext4]",
        ]);
        let mut size = ev(RecordKind::MarkDirty, 15_569_000, 4096);
        size.caller = Some("ext4_dio_write_iter+0x3c5".into());
        size.stack = frames(&["__ext4_mark_inode_dirty+0x5", "ext4_dio_write_iter+0x3c5"]);
        WriteReport {
            begin: ev(RecordKind::WriteBegin, 0, 0),
            path: Some("/mnt/f".into()),
            verdict: Verdict::Violation(ViolationKind::SyncBeforeSizeUpdate),
            events: vec![sync, ev(RecordKind::CompleteExit, 15_291_000, 0), size],
        }
    }

    #[test]
    fn a_violation_reads_top_down_with_its_stacks_in_80_columns() {
        let mut out = Vec::new();
        Human::new(&mut out, Show::All).write(&buggy_write()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().all(|l| l.chars().count() <= COLUMNS), "{text}");
        let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle} in {text}"));
        assert!(at("VIOLATION    sync_before_size_update") < at("sync_enter"));
        assert!(at("sync_enter") < at("vfs_fsync_range+0x5"));
        assert!(at("vfs_fsync_range+0x5") < at("<- iomap_dio_complete+0x1b3"));
        assert!(at("<- iomap_dio_rw+0x3a") < at("dio_complete_exit"));
        assert!(at("dio_complete_exit") < at("mark_inode_dirty"));
        assert!(at("mark_inode_dirty") < at("<- ext4_dio_write_iter+0x3c5"));
        assert!(text.contains("…"), "the long frame is cut: {text}");
        assert!(text.contains("=> sync at +7012us found disk=0 < end 4096; size updated at +15569us"));
        assert!(
            !text.contains("0xffffffff81"),
            "no raw addresses by default: {text}"
        );
    }

    #[test]
    fn raw_addresses_only_when_asked() {
        let mut out = Vec::new();
        let view = View {
            show: Show::All,
            raw_addresses: true,
        };
        Human::new(&mut out, view).write(&buggy_write()).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("0xffffffff81000000 vfs_fsync_range+0x5")
        );
    }

    #[test]
    fn unnamed_frames_are_counted_not_shown() {
        let s = Stack {
            frames: vec![Frame {
                addr: 0xffff_ffff_8100_0000,
                symbol: None,
            }],
            error: None,
        };
        let lines = stack_lines(&s, false);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("1 frames, unnamed"), "{lines:?}");
    }
}
