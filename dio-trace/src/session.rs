//! A live tracing session: gather kernel facts, load, attach, collect until
//! the command exits (run), or until a signal or the deadline (watch), then
//! summarize. The [`Tracer`] is dropped on every path out, detaching all.

use std::{path::Path, time::Duration};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    analysis::{
        Engine, EngineConfig, Summary,
        summary::{DOUBTED_VIOLATIONS, summarize},
    },
    attach::{Attach, Tracer},
    collect::{
        batch::{self, BATCH_MAP},
        counters::Counters,
        decode::record_bytes,
        feed::{Feed, monotonic_ns},
        kernel_log::KernelLog,
        paths::LiveAnnotator,
        ringbuf::RingReader,
    },
    error::{EnvError, LoadError, UsageError, chain},
    kernel::{btf::FsStatus, facts::KernelFacts, kallsyms::Kallsyms},
    loader::{ARMED_MAP, CGROUPS_MAP, COUNTERS_MAP, EVENTS_MAP, FOLLOW_MAP},
    plan::Plan,
    probes::{
        catalog::{SIZE_UPDATE, SYNC_ENTER, WRITE_BEGIN, probe_of_program},
        select::Wants,
    },
    report::{Reporter, RunInfo},
    spawn::spawn_gated,
    trace::{Header, Trailer, writer::TraceWriter},
};
use dio_trace_common::{
    arm::{ARM_MAP_ENTRIES, ARM_SENT, ArmedWrite},
    config::{CONFIG_DEBUG, CONFIG_FULL_TIMELINE},
    counters::Counter,
    fs::Fs,
    record::CpuBatch,
};

/// What to trace.
pub enum Target {
    /// Run this command; stop when it exits.
    Command(Vec<String>),
    /// The whole host; stop on a signal or after the duration.
    Watch(Option<Duration>),
}

impl Target {
    /// For trace headers.
    fn describe(&self) -> String {
        match self {
            Target::Command(argv) => argv.join(" "),
            Target::Watch(_) => "watch".into(),
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct Outcome {
    pub summary: Summary,
    pub info: RunInfo,
    /// How the traced command ended (run only).
    pub child: Option<std::process::ExitStatus>,
}

/// How often counters are read, the ring drained below its wake-up level
/// and lingering writes closed: the longest a record waits to be shown.
/// Each tick is a wake-up (tokio's timer wheel makes it two or three),
/// which costs this process about 160 µs of CPU on a VM: an idle watch
/// used 1.8 ms per second at 100 ms, 0.66 ms at 250 ms (a third of its
/// cost per write under a single appender) and 0.18 ms at a second, what
/// interval tools (`biotop`, `ebpf_exporter` scrapes) live with.
const TICK: Duration = Duration::from_secs(1);

/// Trace `target`; with `record`, also write a trace file there.
pub async fn trace(
    plan: &Plan,
    target: Target,
    reporter: &mut dyn Reporter,
    record: Option<&Path>,
) -> anyhow::Result<Outcome> {
    let facts = KernelFacts::gather(plan.btf.as_deref())?;
    facts.check_targeted(plan.filter.dev)?;
    let config = facts.config(plan.filter, plan.config_flags);
    let btf = aya::Btf::from_sys_fs()
        .map_err(|e| EnvError(format!("reading kernel BTF for tp_btf: {}", chain(&e))))?;
    let wants = Wants {
        follow: plan.follows(),
        timeline: plan.config_flags & CONFIG_FULL_TIMELINE != 0,
    };
    let how = Attach {
        ringbuf_bytes: plan.ringbuf_bytes,
        btf: &btf,
        backend: plan.backend,
        wants,
    };
    let mut tracer = Tracer::start(&config, &how).map_err(|e| EnvError(chain(&e)))?;
    let mut info = RunInfo::new(facts.release.clone(), &tracer.selection.probes);
    info.symbols_unreadable = facts.symbols_unreadable.clone();
    let mut problems = tracer.selection.problems();
    problems.extend(unseen_mounts(&tracer.selection, &facts, plan.filter.dev));
    if crate::notify::expected() && !problems.is_empty() {
        // A service is ready only when its verdicts can be trusted.
        return Err(EnvError(format!("not ready: {}", problems.join("; "))).into());
    }
    let engine = Engine::new(EngineConfig {
        coverage: tracer.selection.coverage(),
        path_prefix: plan.path_prefix.clone(),
        ..EngineConfig::default()
    });
    if !tracer.selection.served(WRITE_BEGIN) {
        // Nothing could ever be counted: say so now instead of waiting.
        if let Target::Command(argv) = &target {
            eprintln!(
                "dio-trace: not running {}: without the write_begin probe no write can be judged",
                argv.join(" ")
            );
        }
        reporter.start(&info)?;
        let summary = summarize(engine.tally(), 0, 0, problems);
        reporter.finish(&summary, &info)?;
        return Ok(Outcome {
            summary,
            info,
            child: None,
        });
    }

    let mut kernel_log = if plan.config_flags & CONFIG_DEBUG != 0 {
        Some(KernelLog::take(&mut tracer.ebpf)?)
    } else {
        None
    };
    let ring = RingBuf::try_from(take(&mut tracer, EVENTS_MAP)?).map_err(|e| map_error(EVENTS_MAP, e))?;
    let counters = Counters::new(
        PerCpuArray::try_from(take(&mut tracer, COUNTERS_MAP)?).map_err(|e| map_error(COUNTERS_MAP, e))?,
    );
    let armed: BpfHashMap<MapData, u64, ArmedWrite> =
        BpfHashMap::try_from(take(&mut tracer, ARMED_MAP)?).map_err(|e| map_error(ARMED_MAP, e))?;
    let batches: PerCpuArray<MapData, CpuBatch> =
        PerCpuArray::try_from(take(&mut tracer, BATCH_MAP)?).map_err(|e| map_error(BATCH_MAP, e))?;
    let mut follow: Option<BpfHashMap<MapData, u32, u8>> = if plan.follows() {
        let map = take(&mut tracer, FOLLOW_MAP)?;
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
            BpfHashMap::try_from(take(&mut tracer, CGROUPS_MAP)?).map_err(|e| map_error(CGROUPS_MAP, e))?;
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
    let mut feed = Feed::new(engine, LiveAnnotator::new(facts.mounts.clone(), kallsyms));
    if tracer.batching.is_ok() {
        feed.hold_writes(batch::cpus());
    }
    if let Some(path) = record {
        let header = Header {
            format_version: dio_trace_common::FORMAT_VERSION,
            dio_trace_version: env!("CARGO_PKG_VERSION").into(),
            kernel: info.kernel.clone(),
            started_at: unix_now(),
            probes: info.probes.clone(),
            target: target.describe(),
            symbols_unreadable: info.symbols_unreadable.clone(),
        };
        feed.record_to(TraceWriter::create(path, &header).map_err(|e| UsageError(format!("{e:#}")))?);
    }
    reporter.start(&info)?;
    let (mut child, deadline) = match target {
        Target::Command(argv) => {
            let mut c = spawn_gated(&argv, plan.json)?;
            if let Some(map) = follow.as_mut() {
                map.insert(c.pid(), 1, 0)?;
            }
            c.release()?;
            let c = std::sync::Arc::new(c);
            (Some(tokio::task::spawn_blocking(move || c.wait_blocking())), None)
        }
        Target::Watch(d) => (None, d.map(|d| tokio::time::Instant::now() + d)),
    };

    let mut ring = RingReader::new(ring)?;
    crate::notify::send(&format!(
        "READY=1\nSTATUS=watching; probes: {}",
        info.probe_line()
    ))?;
    let mut tick = tokio::time::interval(TICK);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut child_status = None;
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
    let skipped = tracer.skipped_runs();
    let selection = tracer.selection.clone();
    // Detach first: what the maps hold is then final.
    drop(tracer);
    if let Some(log) = kernel_log.as_mut() {
        log.drain();
    }
    ring.drain(|b| feed.record_shown(b, reporter))?;
    let reading = counters.read();
    feed.counters(&reading, monotonic_ns())?;
    // Settled writes a CPU still held in its batch: they never went
    // through the ring (nor into the kernel's `sent`), they reach user
    // space from here.
    for b in batch::leftovers(&batches).map_err(|e| map_error(BATCH_MAP, e))? {
        feed.record_shown(record_bytes(&b), reporter)?;
    }
    // Writes still in flight (or waiting for a size update that never
    // came) are judged on what they saw, as the engine judges any write
    // the trace ends on.
    for entry in armed.iter() {
        let (_, w) = entry.map_err(|e| map_error(ARMED_MAP, e))?;
        if w.state & ARM_SENT == 0 {
            feed.record(record_bytes(&w.rec))?;
        }
    }
    feed.let_go_shown(u64::MAX, reporter)?;
    feed.finish();
    feed.drain_ready(|w| reporter.write(w))?;

    if feed.undecodable > 0 {
        problems.push(format!(
            "{} records could not be decoded (dio-trace build mismatch?)",
            feed.undecodable
        ));
    }
    problems.extend(kernel_problems(&reading));
    problems.extend(skip_problems(&skipped));
    info.skipped = skipped_by_probe(&skipped);
    // Full timelines send events, not whole writes: nothing to match.
    if !wants.timeline
        && let Some(p) = missing_writes(&reading, feed.writes)
    {
        problems.push(p);
    }
    for fs in Fs::ALL {
        if feed.engine.tally().by_fs[fs.slot()] > 0 {
            problems.extend(selection.fs_problems(fs));
        }
    }
    problems.extend(unjudged_fs(&reading, &facts.fs));
    info.counters = reading;
    if let Some(w) = feed.take_recorder() {
        w.finish(&Trailer {
            counters: reading.named(),
            problems: problems.clone(),
            skipped: info.skipped.clone(),
            ended_at: unix_now(),
        })?;
    }
    let summary = summarize(
        feed.engine.tally(),
        reading.get(Counter::DirectWrites),
        reading.get(Counter::RingbufFull),
        problems,
    );
    reporter.finish(&summary, &info)?;
    Ok(Outcome {
        summary,
        info,
        child: child_status,
    })
}

/// Kernel-side failures that may have hidden a write from the verdict.
fn kernel_problems(r: &crate::collect::counters::Reading) -> Vec<String> {
    let mut p = Vec::new();
    if r.get(Counter::ReadFailed) > 0 {
        p.push(format!(
            "{} kernel memory reads failed in the probes: some writes may be missing",
            r.get(Counter::ReadFailed)
        ));
    }
    if r.get(Counter::FlagsUnknown) > 0 {
        p.push(format!(
            "{} direct writes could not be classified: their ki_flags fit no known layout for their open flags \
             (a kernel dio-trace does not know; `dio-trace info` shows the layouts tried)",
            r.get(Counter::FlagsUnknown)
        ));
    }
    if r.get(Counter::ArmFailed) > 0 {
        p.push(format!(
            "{} counted writes could not be tracked (armed-inode map full)",
            r.get(Counter::ArmFailed)
        ));
    }
    p
}

/// Mounts whose writes the write-start probe cannot see, when it is one
/// filesystem's own function: never a silent miss. Only mounts the run
/// could trace (`--dev`/`--path` keep the others out).
fn unseen_mounts(selection: &crate::probes::select::Selection, facts: &KernelFacts, dev: u32) -> Vec<String> {
    let Some(only) = selection.write_begin_only() else {
        return Vec::new();
    };
    facts
        .mounts
        .supported_mounts()
        .filter(|m| m.fstype != only.name() && (dev == 0 || m.dev == dev))
        .map(|m| {
            format!(
                "direct writes to {} at {} cannot be seen: the write-start probe is {}'s own function here \
                 (iomap's cannot be traced with this backend); try --backend kprobe",
                m.fstype,
                m.mount_point,
                only.name()
            )
        })
        .collect()
}

/// Sync-flavoured direct writes the kernel saw on a filesystem it could
/// not judge: never silently left out.
fn unjudged_fs(r: &crate::collect::counters::Reading, fs: &[FsStatus]) -> Vec<String> {
    let mut p = Vec::new();
    let other = r.get(Counter::OtherFs);
    if other > 0 {
        p.push(format!(
            "{other} sync-flavoured direct writes went to a filesystem dio-trace has no facts for (it knows {}): \
             not judged; --debug names the filesystem",
            Fs::ALL.map(Fs::name).join(", ")
        ));
    }
    let no_facts = r.get(Counter::NoFsFacts);
    if no_facts > 0 {
        let why: Vec<String> = fs.iter().filter_map(FsStatus::missing).collect();
        p.push(format!(
            "{no_facts} sync-flavoured direct writes were not judged: they went to a filesystem whose facts \
             dio-trace could not read ({})",
            why.join("; ")
        ));
    }
    p
}

/// What skipped program runs (`Tracer::skipped_runs`) cost the verdict:
/// always a reason against "ordered"; and where the skipped program saw
/// size updates or syncs, a missing one is no proof of a violation either.
fn skip_problems(skipped: &[(String, u64)]) -> Vec<String> {
    if skipped.is_empty() {
        return Vec::new();
    }
    let total: u64 = skipped.iter().map(|(_, n)| n).sum();
    let each: Vec<String> = skipped.iter().map(|(p, n)| format!("{p} {n}")).collect();
    let mut p = vec![format!(
        "the kernel skipped {total} runs of dio-trace's programs because the same program was already \
         running on that CPU ({}): the writes they would have seen were not judged",
        each.join(", ")
    )];
    let mut blind: Vec<&str> = skipped
        .iter()
        .filter_map(|(prog, _)| probe_of_program(prog))
        .filter(|probe| [SIZE_UPDATE, SYNC_ENTER].contains(probe))
        .collect();
    blind.dedup();
    if !blind.is_empty() {
        p.push(format!(
            "{DOUBTED_VIOLATIONS} the kernel skipped runs of the {} probe, so a size update or sync \
             it did not see may have happened",
            blind.join(" and ")
        ));
    }
    p
}

/// Skipped program runs summed by the probe each program serves (a
/// program the catalog does not name counts under its own name, so no
/// skip goes unreported).
fn skipped_by_probe(skipped: &[(String, u64)]) -> std::collections::BTreeMap<String, u64> {
    let mut by = std::collections::BTreeMap::new();
    for (prog, n) in skipped {
        let probe = probe_of_program(prog).map_or_else(|| prog.clone(), str::to_owned);
        *by.entry(probe).or_insert(0) += n;
    }
    by
}

/// Counted writes that neither arrived nor were reported lost: the armed
/// map (LRU) evicted them to make room for newer ones.
fn missing_writes(r: &crate::collect::counters::Reading, received: u64) -> Option<String> {
    let missing = r
        .get(Counter::Armed)
        .saturating_sub(received + r.get(Counter::WritesLost));
    (missing > 0).then(|| {
        format!(
            "{missing} counted writes were dropped from the kernel's armed-write map before they finished (more than {ARM_MAP_ENTRIES} in flight)"
        )
    })
}

fn map_error(name: &'static str, e: aya::maps::MapError) -> LoadError {
    LoadError::Map {
        name,
        source: Box::new(e),
    }
}

fn take(tracer: &mut Tracer, name: &'static str) -> Result<aya::maps::Map, LoadError> {
    tracer.ebpf.take_map(name).ok_or(LoadError::MissingMap(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{collect::counters::Reading, kernel::btf::Types};
    use dio_trace_common::config::{FS_KNOWN, FsFacts};

    #[test]
    fn skips_are_summed_by_the_probe_they_could_hide() {
        let by = skipped_by_probe(&[
            ("kprobe_iomap_dio_rw".into(), 2),
            ("fentry_iomap_dio_rw".into(), 1),
            ("tp_ext4_sync_file_enter".into(), 4),
            ("not_in_the_catalog".into(), 5),
        ]);
        assert_eq!(by.get(crate::probes::catalog::WRITE_BEGIN), Some(&3));
        assert_eq!(by.get(SYNC_ENTER), Some(&4));
        assert_eq!(by.get("not_in_the_catalog"), Some(&5));
        assert_eq!(by.len(), 3);
    }

    /// An XFS-only host where ext4 was never loaded, and then was: its
    /// writes are counted in the kernel, never judged, and the answer
    /// names ext4 and why (never "ordered").
    #[test]
    fn writes_to_a_filesystem_without_facts_are_named_not_judged() {
        let fs = vec![
            FsStatus {
                fs: Fs::Ext4,
                facts: FsFacts::default(),
                source: Err("ext4 is not in /proc/filesystems".into()),
            },
            FsStatus {
                fs: Fs::Xfs,
                facts: FsFacts {
                    flags: FS_KNOWN,
                    ..FsFacts::default()
                },
                source: Ok(Types::Module),
            },
        ];
        let mut r = Reading::default();
        assert!(unjudged_fs(&r, &fs).is_empty(), "no write there: no reason");
        r.0[Counter::NoFsFacts as usize] = 2;
        let p = unjudged_fs(&r, &fs);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("2 sync-flavoured direct writes were not judged")
                && p[0].contains("(ext4's facts are missing: ext4 is not in /proc/filesystems)"),
            "{p:?}"
        );
        let tally = crate::analysis::engine::Tally {
            ordered: 3,
            ..Default::default()
        };
        let s = summarize(&tally, 5, 0, p);
        assert_eq!(s.overall, crate::analysis::summary::Overall::Inconclusive);
    }
}
