//! Phase 3: the maps taken from the attached programs, the feed that turns
//! records into verdicts, and the loop that runs until the traced command
//! exits, a signal comes or the deadline passes.

use std::path::Path;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use tokio::signal::unix::{SignalKind, signal};

use super::{
    TICK, Target,
    attached::{Attached, map_error},
    unix_now,
};
use crate::{
    attach::Tracer,
    collect::{
        batch::{self, BATCH_MAP},
        counters::Counters,
        feed::{Feed, monotonic_ns},
        kernel_log::KernelLog,
        ordered::{ORDERED_MAP, OrderedCounts},
        paths::LiveAnnotator,
        ringbuf::RingReader,
    },
    error::UsageError,
    kernel::{btf::FsStatus, facts::KernelFacts, kallsyms::Kallsyms},
    loader::{ARMED_MAP, CGROUPS_MAP, COUNTERS_MAP, EVENTS_MAP, FOLLOW_MAP},
    plan::Plan,
    probes::select::Wants,
    report::{Reporter, RunInfo},
    spawn::spawn_gated,
    trace::{Header, writer::TraceWriter},
};
use dio_trace_common::{
    arm::ArmedWrite,
    config::{CONFIG_COUNT_ORDERED, CONFIG_DEBUG},
    record::CpuBatch,
};

pub(super) struct Running {
    pub tracer: Tracer,
    pub info: RunInfo,
    pub problems: Vec<String>,
    pub wants: Wants,
    pub feed: Feed<LiveAnnotator>,
    pub ring: RingReader,
    pub counters: Counters,
    /// Ordered writes the kernel counts instead of sending, where the run
    /// asked it to (`CONFIG_COUNT_ORDERED`).
    pub ordered: Option<OrderedCounts>,
    /// Writes the kernel still tracks: judged at the end on what they saw.
    pub armed: BpfHashMap<MapData, u64, ArmedWrite>,
    /// Per-CPU batches of settled writes not yet sent.
    pub batches: PerCpuArray<MapData, CpuBatch>,
    /// The pids traced (run, `--pid`): the command joins it when spawned.
    follow: Option<BpfHashMap<MapData, u32, u8>>,
    pub kernel_log: Option<KernelLog>,
    /// Each filesystem's facts, or why they are missing.
    pub fs: Vec<FsStatus>,
}

impl Running {
    /// Take the maps, fill the pid and cgroup filters, and set up the feed
    /// (and the recorder, with `record`).
    pub fn open(
        mut a: Attached,
        plan: &Plan,
        facts: KernelFacts,
        target: &Target,
        record: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let kernel_log = if plan.config_flags & CONFIG_DEBUG != 0 {
            Some(KernelLog::take(&mut a.tracer.ebpf)?)
        } else {
            None
        };
        let ring = RingBuf::try_from(a.take(EVENTS_MAP)?).map_err(|e| map_error(EVENTS_MAP, e))?;
        let counters = Counters::new(
            PerCpuArray::try_from(a.take(COUNTERS_MAP)?).map_err(|e| map_error(COUNTERS_MAP, e))?,
        );
        let armed = BpfHashMap::try_from(a.take(ARMED_MAP)?).map_err(|e| map_error(ARMED_MAP, e))?;
        let ordered = if plan.config_flags & CONFIG_COUNT_ORDERED != 0 {
            let map = PerCpuHashMap::try_from(a.take(ORDERED_MAP)?).map_err(|e| map_error(ORDERED_MAP, e))?;
            Some(OrderedCounts::new(map))
        } else {
            None
        };
        let batches = PerCpuArray::try_from(a.take(BATCH_MAP)?).map_err(|e| map_error(BATCH_MAP, e))?;
        let mut follow: Option<BpfHashMap<MapData, u32, u8>> = if plan.follows() {
            let map = a.take(FOLLOW_MAP)?;
            Some(BpfHashMap::try_from(map).map_err(|e| map_error(FOLLOW_MAP, e))?)
        } else {
            None
        };
        if let Some(map) = follow.as_mut() {
            for pid in crate::procs::with_descendants(&plan.follow_pids) {
                map.insert(pid, 1, 0)?;
            }
        }
        if !plan.cgroups.is_empty() {
            let mut kept: BpfHashMap<MapData, u64, u8> =
                BpfHashMap::try_from(a.take(CGROUPS_MAP)?).map_err(|e| map_error(CGROUPS_MAP, e))?;
            for c in &plan.cgroups {
                kept.insert(c.id, 1, 0)?;
            }
        }

        // Read again now that the programs are attached: they and the
        // trampolines fentry runs through get names, which stacks leave out.
        let kallsyms = match facts.symbols_unreadable {
            None => Kallsyms::load().unwrap_or(facts.kallsyms),
            Some(_) => facts.kallsyms,
        };
        let mut feed = Feed::new(a.engine, LiveAnnotator::new(facts.mounts.clone(), kallsyms));
        if a.tracer.batching.is_ok() {
            feed.hold_writes(batch::cpus());
        }
        if let Some(path) = record {
            let header = Header {
                format_version: dio_trace_common::FORMAT_VERSION,
                dio_trace_version: env!("CARGO_PKG_VERSION").into(),
                kernel: a.info.kernel.clone(),
                started_at: unix_now(),
                probes: a.info.probes.clone(),
                target: target.describe(),
                symbols_unreadable: a.info.symbols_unreadable.clone(),
            };
            feed.record_to(TraceWriter::create(path, &header).map_err(|e| UsageError(format!("{e:#}")))?);
        }
        Ok(Self {
            tracer: a.tracer,
            info: a.info,
            problems: a.problems,
            wants: a.wants,
            feed,
            ring: RingReader::new(ring)?,
            counters,
            ordered,
            armed,
            batches,
            follow,
            kernel_log,
            fs: facts.fs,
        })
    }

    /// Start the command (run) and collect until it exits (its status is
    /// returned), or until a signal or the deadline (watch).
    pub async fn run(
        &mut self,
        target: Target,
        json: bool,
        reporter: &mut dyn Reporter,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let (mut child, deadline) = match target {
            Target::Command(argv) => {
                let mut c = spawn_gated(&argv, json)?;
                if let Some(map) = self.follow.as_mut() {
                    map.insert(c.pid(), 1, 0)?;
                }
                c.release()?;
                let c = std::sync::Arc::new(c);
                (Some(tokio::task::spawn_blocking(move || c.wait_blocking())), None)
            }
            Target::Watch(d) => (None, d.map(|d| tokio::time::Instant::now() + d)),
        };
        crate::notify::send(&format!(
            "READY=1\nSTATUS=watching; probes: {}",
            self.info.probe_line()
        ))?;
        let mut tick = tokio::time::interval(TICK);
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut child_status = None;
        let Self {
            tracer,
            feed,
            ring,
            counters,
            ordered,
            kernel_log,
            ..
        } = self;
        loop {
            tokio::select! {
                r = ring.ready() => {
                    r?;
                    ring.drain(|b| feed.record_shown(b, reporter))?;
                    feed.let_go_arrived(reporter)?;
                }
                _ = tick.tick() => {
                    if let Some(log) = kernel_log.as_mut() {
                        log.drain();
                    }
                    let flushed = monotonic_ns();
                    batch::flush(&tracer.ebpf);
                    ring.drain(|b| feed.record_shown(b, reporter))?;
                    feed.flushed(flushed);
                    feed.let_go_arrived(reporter)?;
                    let reading = counters.read();
                    feed.counters(&reading, monotonic_ns())?;
                    if let Some(o) = ordered.as_mut() {
                        feed.ordered_counted(&o.grew(), reporter)?;
                    }
                    feed.tick(monotonic_ns());
                    reporter.counters(&reading)?;
                }
                status = async { child.as_mut().expect("guarded").await }, if child.is_some() => {
                    child_status = Some(status??);
                    break;
                }
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break,
            }
            feed.drain_ready(|w| reporter.write(w))?;
        }
        Ok(child_status)
    }
}
