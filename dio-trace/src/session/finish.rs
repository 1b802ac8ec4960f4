//! Phase 4: detach, take what the kernel still held (records in the ring,
//! settled writes in per-CPU batches, writes still armed), add every reason
//! against "ordered", and summarize.

use super::{
    Outcome,
    attached::map_error,
    problems::{kernel_problems, missing_writes, skip_problems, skipped_by_probe, unjudged_fs},
    running::Running,
    unix_now,
};
use crate::{
    analysis::summary::{summarize, went_buffered},
    collect::{batch::BATCH_MAP, decode::record_bytes, feed::monotonic_ns},
    loader::ARMED_MAP,
    report::Reporter,
    trace::Trailer,
};
use dio_trace_common::{arm::ARM_SENT, counters::Counter, fs::Fs};

impl Running {
    /// End the run: `child` is how the traced command ended (run only).
    pub fn finish(
        self,
        child: Option<std::process::ExitStatus>,
        reporter: &mut dyn Reporter,
    ) -> anyhow::Result<Outcome> {
        let Running {
            tracer,
            mut info,
            mut problems,
            wants,
            mut feed,
            mut ring,
            counters,
            mut ordered,
            armed,
            batches,
            mut kernel_log,
            fs,
            ..
        } = self;
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
        if let Some(o) = ordered.as_mut() {
            feed.ordered_counted(&o.grew(), reporter)?;
        }
        // Settled writes a CPU still held in its batch: they never went
        // through the ring (nor into the kernel's `sent`), they reach user
        // space from here.
        for b in crate::collect::batch::leftovers(&batches).map_err(|e| map_error(BATCH_MAP, e))? {
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
        problems.extend(unjudged_fs(&reading, &fs));
        let counted = feed.engine.tally().counted();
        if let Some((reason, true)) = went_buffered(reading.get(Counter::BufferedFallback), counted) {
            problems.push(reason);
        } else if counted == 0 {
            // Nothing judged, and direct writes btrfs wrote through the
            // page cache could not be counted: say so, not just "none seen".
            for s in fs.iter().filter(|s| s.source.is_ok()) {
                problems.extend(selection.uncounted(s.fs).into_iter().map(|p| {
                    format!(
                        "{} may have written sync direct writes through the page cache, uncounted: {p}",
                        s.fs.name()
                    )
                }));
            }
        }
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
        Ok(Outcome { summary, info, child })
    }
}
