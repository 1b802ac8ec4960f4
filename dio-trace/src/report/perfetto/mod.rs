//! `--perfetto FILE`: the writes as a Perfetto trace, for people with
//! thousands of writes to look at (ui.perfetto.dev opens it offline).
//!
//! Layout: a track per process and under it one per thread (the writer),
//! and under the thread one track per write, because Perfetto cannot
//! overlap slices on one track. A write is a slice from its begin to its
//! completion (or to its last step: an ordered write is sent at its sync,
//! before it completes). Its steps (size update, sync, completion) are
//! instants on its track, in kernel order, each carrying `i_disksize` and,
//! where the kernel sent one, its stack. The verdict is in the slice's name
//! ("VIOLATION sync_before_size_update ...", so the search box finds every
//! violation) and in its arguments. The run's summary is an instant on a
//! track of its own.
//!
//! The trace is a stream of `TracePacket`s (field 1 of `Trace`, written as
//! they come, so nothing is held in memory): `TrackDescriptor`s, then
//! `TrackEvent`s. Field numbers are Perfetto's (protos/perfetto/trace/...),
//! listed in [`field`].

mod wire;

use std::{
    collections::HashSet,
    fs::File,
    io::{BufWriter, Write},
    path::Path,
};

use anyhow::{Context as _, Result};
use dio_trace_common::kind::RecordKind;

use self::wire::Msg;
use super::{Reporter, RunInfo, backend_of};
use crate::{
    analysis::{Event, Stack, Summary, Verdict, ViolationKind, engine::WriteReport},
    kernel::dev_string,
};

/// Perfetto's field numbers, by message.
mod field {
    /// `Trace` (trace.proto).
    pub const TRACE_PACKET: u32 = 1;
    /// `TracePacket` (trace_packet.proto).
    pub const TIMESTAMP: u32 = 8;
    pub const TRUSTED_PACKET_SEQUENCE_ID: u32 = 10;
    pub const TRACK_EVENT: u32 = 11;
    pub const SEQUENCE_FLAGS: u32 = 13;
    pub const TRACK_DESCRIPTOR: u32 = 60;
    /// `TracePacket.SequenceFlags.SEQ_INCREMENTAL_STATE_CLEARED`.
    pub const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;
    /// `TrackDescriptor` (track_descriptor.proto).
    pub const TD_UUID: u32 = 1;
    pub const TD_NAME: u32 = 2;
    pub const TD_PROCESS: u32 = 3;
    pub const TD_THREAD: u32 = 4;
    pub const TD_PARENT_UUID: u32 = 5;
    /// `ProcessDescriptor` (process_descriptor.proto).
    pub const PD_PID: u32 = 1;
    pub const PD_PROCESS_NAME: u32 = 6;
    /// `ThreadDescriptor` (thread_descriptor.proto).
    pub const THD_PID: u32 = 1;
    pub const THD_TID: u32 = 2;
    pub const THD_THREAD_NAME: u32 = 5;
    /// `TrackEvent` (track_event.proto).
    pub const TE_DEBUG_ANNOTATIONS: u32 = 4;
    pub const TE_TYPE: u32 = 9;
    pub const TE_TRACK_UUID: u32 = 11;
    pub const TE_CATEGORIES: u32 = 22;
    pub const TE_NAME: u32 = 23;
    /// `TrackEvent.Type`.
    pub const TYPE_SLICE_BEGIN: u64 = 1;
    pub const TYPE_SLICE_END: u64 = 2;
    pub const TYPE_INSTANT: u64 = 3;
    /// `DebugAnnotation` (debug_annotation.proto).
    pub const DA_UINT_VALUE: u32 = 3;
    pub const DA_INT_VALUE: u32 = 4;
    pub const DA_STRING_VALUE: u32 = 6;
    pub const DA_NAME: u32 = 10;
}

/// The one packet sequence this writer uses.
const SEQUENCE: u64 = 1;
/// Track uuids by family (high bits), so process, thread and write ids
/// never collide.
const PROCESS_TRACK: u64 = 1 << 40;
const THREAD_TRACK: u64 = 2 << 40;
const WRITE_TRACK: u64 = 3 << 40;
const SUMMARY_TRACK: u64 = 4 << 40;

pub struct Perfetto {
    out: BufWriter<File>,
    raw_addresses: bool,
    processes: HashSet<u32>,
    threads: HashSet<u32>,
    writes: u64,
    /// The first packet clears the sequence's incremental state: Perfetto
    /// reads track events only after that.
    started: bool,
    /// The newest time seen, for the summary.
    last_ts: u64,
}

/// One argument of an event.
enum Arg<'a> {
    Int(i64),
    Uint(u64),
    Str(&'a str),
}

impl Perfetto {
    pub fn create(path: &Path, raw_addresses: bool) -> Result<Self> {
        let file =
            File::create(path).with_context(|| format!("cannot create Perfetto trace {}", path.display()))?;
        Ok(Self {
            out: BufWriter::new(file),
            raw_addresses,
            processes: HashSet::new(),
            threads: HashSet::new(),
            writes: 0,
            started: false,
            last_ts: 0,
        })
    }

    fn packet(&mut self, mut p: Msg) -> std::io::Result<()> {
        p.uint(field::TRUSTED_PACKET_SEQUENCE_ID, SEQUENCE);
        if !self.started {
            p.uint(field::SEQUENCE_FLAGS, field::SEQ_INCREMENTAL_STATE_CLEARED);
            self.started = true;
        }
        let mut framed = Msg::new();
        framed.message(field::TRACE_PACKET, &p);
        self.out.write_all(framed.as_bytes())
    }

    fn track(&mut self, td: Msg) -> std::io::Result<()> {
        let mut p = Msg::new();
        p.message(field::TRACK_DESCRIPTOR, &td);
        self.packet(p)
    }

    /// The process and thread tracks of a writer, once each.
    fn writer_tracks(&mut self, b: &Event) -> std::io::Result<u64> {
        if self.processes.insert(b.tgid) {
            let mut pd = Msg::new();
            pd.int(field::PD_PID, i64::from(b.tgid));
            pd.string(field::PD_PROCESS_NAME, &b.comm.as_str());
            let mut td = Msg::new();
            td.uint(field::TD_UUID, PROCESS_TRACK | u64::from(b.tgid));
            td.message(field::TD_PROCESS, &pd);
            self.track(td)?;
        }
        let thread = THREAD_TRACK | u64::from(b.pid);
        if self.threads.insert(b.pid) {
            let mut thd = Msg::new();
            thd.int(field::THD_PID, i64::from(b.tgid));
            thd.int(field::THD_TID, i64::from(b.pid));
            thd.string(field::THD_THREAD_NAME, &b.comm.as_str());
            let mut td = Msg::new();
            td.uint(field::TD_UUID, thread);
            td.uint(field::TD_PARENT_UUID, PROCESS_TRACK | u64::from(b.tgid));
            td.message(field::TD_THREAD, &thd);
            self.track(td)?;
        }
        Ok(thread)
    }

    fn event(
        &mut self,
        ts: u64,
        track: u64,
        kind: u64,
        name: Option<&str>,
        args: &[(&str, Arg)],
    ) -> std::io::Result<()> {
        let mut te = Msg::new();
        te.uint(field::TE_TYPE, kind);
        te.uint(field::TE_TRACK_UUID, track);
        te.string(field::TE_CATEGORIES, "dio-trace");
        if let Some(name) = name {
            te.string(field::TE_NAME, name);
        }
        for (name, value) in args {
            let mut da = Msg::new();
            da.string(field::DA_NAME, name);
            match value {
                Arg::Int(v) => da.int(field::DA_INT_VALUE, *v),
                Arg::Uint(v) => da.uint(field::DA_UINT_VALUE, *v),
                Arg::Str(s) => da.string(field::DA_STRING_VALUE, s),
            };
            te.message(field::TE_DEBUG_ANNOTATIONS, &da);
        }
        let mut p = Msg::new();
        p.uint(field::TIMESTAMP, ts);
        p.message(field::TRACK_EVENT, &te);
        self.last_ts = self.last_ts.max(ts);
        self.packet(p)
    }

    /// A stack as one string argument: a frame per line, innermost first.
    fn stack_text(&self, s: &Stack) -> String {
        if let Some(errno) = s.error {
            return format!("(no stack: bpf_get_stack returned {errno})");
        }
        let shown: Vec<String> = s
            .frames
            .iter()
            .filter_map(|f| f.display(self.raw_addresses))
            .collect();
        if shown.is_empty() {
            format!("({} frames, unnamed)", s.frames.len())
        } else {
            shown.join("\n")
        }
    }
}

/// The slice's name: verdict first, so a search for "VIOLATION" (or the
/// violation kind) finds every violating write.
pub fn slice_name(w: &WriteReport) -> String {
    let b = &w.begin;
    let verdict = match &w.verdict {
        Verdict::Violation(k) => format!("VIOLATION {}", k.name()),
        v => v.name().to_uppercase(),
    };
    format!(
        "{verdict} {} off={} len={}",
        w.path.as_deref().unwrap_or("<path unknown>"),
        b.pos,
        b.len
    )
}

impl Reporter for Perfetto {
    fn start(&mut self, _info: &RunInfo) -> std::io::Result<()> {
        let mut td = Msg::new();
        td.uint(field::TD_UUID, SUMMARY_TRACK);
        td.string(field::TD_NAME, "dio-trace");
        self.track(td)
    }

    fn write(&mut self, w: &WriteReport) -> std::io::Result<()> {
        let b = &w.begin;
        let thread = self.writer_tracks(b)?;
        self.writes += 1;
        let track = WRITE_TRACK | self.writes;
        let mut td = Msg::new();
        td.uint(field::TD_UUID, track);
        td.uint(field::TD_PARENT_UUID, thread);
        td.string(
            field::TD_NAME,
            &format!("write ino {} off={} len={}", b.ino, b.pos, b.len),
        );
        self.track(td)?;

        let (kind, reason) = match &w.verdict {
            Verdict::Violation(k) => (k.name().to_owned(), String::new()),
            Verdict::Inconclusive(why) => (String::new(), why.clone()),
            Verdict::Failed(ret) => (String::new(), format!("ret={ret}")),
            Verdict::Ordered => (String::new(), String::new()),
        };
        let complete = w.events.iter().find(|e| e.kind == RecordKind::CompleteExit);
        let end_ts = complete.or(w.events.last()).map_or(b.ts_ns, |e| e.ts_ns);
        let ends_at = if complete.is_some() {
            "completion"
        } else {
            "last step seen (an ordered write is sent at its sync, before it completes)"
        };
        let dev = dev_string(b.dev);
        let path = w.path.as_deref().unwrap_or_default();
        let backend = backend_of(w);
        let mut args = vec![
            ("verdict", Arg::Str(w.verdict.name())),
            ("path", Arg::Str(path)),
            ("dev", Arg::Str(&dev)),
            ("ino", Arg::Uint(b.ino)),
            ("offset", Arg::Int(b.pos)),
            ("len", Arg::Uint(b.len)),
            ("sync", Arg::Str(b.sync_flavour())),
            ("backend", Arg::Str(&backend)),
            ("ends_at", Arg::Str(ends_at)),
        ];
        if !kind.is_empty() {
            args.push(("kind", Arg::Str(&kind)));
        }
        if !reason.is_empty() {
            args.push(("reason", Arg::Str(&reason)));
        }
        if let Some(d) = b.disksize() {
            args.push(("i_disksize", Arg::Int(d)));
        }
        let name = slice_name(w);
        self.event(b.ts_ns, track, field::TYPE_SLICE_BEGIN, Some(&name), &args)?;
        for e in &w.events {
            let stack = e.stack.as_ref().map(|s| self.stack_text(s));
            let caller = e.caller.as_deref().unwrap_or_default();
            let mut args = vec![
                ("mechanism", Arg::Str(e.mechanism.name())),
                ("i_size", Arg::Int(e.i_size)),
            ];
            if let Some(d) = e.disksize() {
                args.push(("i_disksize", Arg::Int(d)));
            }
            if !caller.is_empty() {
                args.push(("caller", Arg::Str(caller)));
            }
            if let Some(s) = &stack {
                args.push(("stack", Arg::Str(s)));
            }
            let disk = e.disksize().map_or("?".into(), |d| d.to_string());
            let early = w.verdict == Verdict::Violation(ViolationKind::SyncBeforeSizeUpdate)
                && e.kind == RecordKind::SyncEnter;
            let name = format!(
                "{} disk={disk}{}",
                e.kind.name(),
                if early {
                    " (VIOLATION: before the size update)"
                } else {
                    ""
                }
            );
            self.event(e.ts_ns, track, field::TYPE_INSTANT, Some(&name), &args)?;
        }
        self.event(end_ts, track, field::TYPE_SLICE_END, None, &[])
    }

    fn finish(&mut self, s: &Summary, _info: &RunInfo) -> std::io::Result<()> {
        let t = &s.tally;
        let reasons = s.reasons.join("; ");
        let name = format!("summary: {}", s.overall.name().to_uppercase());
        let args = [
            ("verdict", Arg::Str(s.overall.name())),
            ("counted", Arg::Uint(t.counted())),
            ("ordered", Arg::Uint(t.ordered)),
            ("violations", Arg::Uint(t.violations)),
            ("inconclusive", Arg::Uint(t.inconclusive)),
            ("lost_records", Arg::Uint(s.lost_records)),
            ("reasons", Arg::Str(&reasons)),
        ];
        self.event(
            self.last_ts,
            SUMMARY_TRACK,
            field::TYPE_INSTANT,
            Some(&name),
            &args,
        )?;
        self.out.flush()
    }
}
