//! `dio-trace check`: a trace file through the same feed and engine that
//! watch live. Only the annotations come from the file instead of kallsyms
//! and mountinfo.

use std::{collections::HashMap, sync::Arc};

use crate::{
    analysis::{Engine, EngineConfig, Summary, summary::summarize},
    collect::{
        counters::Reading,
        feed::{Annotator, Feed},
    },
    probes::catalog,
    report::{Reporter, RunInfo},
    trace::reader::{Frame, Trace},
};
use dio_trace_common::counters::Counter;

/// Names and paths as the recording saw them.
#[derive(Default)]
pub struct Recorded {
    symbols: HashMap<u64, Arc<str>>,
    paths: HashMap<(u32, u64), Option<Arc<str>>>,
    cgroups: HashMap<u64, Option<Arc<str>>>,
}

impl Annotator for Recorded {
    fn symbol(&mut self, addr: u64) -> Option<Arc<str>> {
        self.symbols.get(&addr).cloned()
    }

    fn cgroup(&mut self, id: u64) -> Option<Arc<str>> {
        self.cgroups.get(&id).cloned().flatten()
    }

    fn path(
        &mut self,
        dev: u32,
        ino: u64,
        _tgid: u32,
        _names: &[String],
        _complete: bool,
    ) -> Option<Arc<str>> {
        self.paths.get(&(dev, ino)).cloned().flatten()
    }
}

/// Replay `trace`, reporting each write as live tracing would.
pub fn replay(
    trace: &Trace,
    path_prefix: Option<String>,
    reporter: &mut dyn Reporter,
) -> anyhow::Result<(Summary, RunInfo)> {
    let served = |name: &str| trace.header.probes.get(name).is_some_and(Option::is_some);
    let engine = Engine::new(EngineConfig {
        coverage: catalog::coverage(served),
        path_prefix,
        ..EngineConfig::default()
    });
    let mut info = RunInfo {
        kernel: trace.header.kernel.clone(),
        probes: trace.header.probes.clone(),
        counters: Reading::from_named(&trace.trailer.counters),
        symbols_unreadable: trace.header.symbols_unreadable.clone(),
        skipped: trace.trailer.skipped.clone(),
        // A recording keeps every write.
        ordered_counted: false,
    };
    reporter.start(&info)?;
    let mut feed = Feed::new(engine, Recorded::default());
    for frame in &trace.frames {
        match frame {
            Frame::Symbol { addr, name } => {
                feed.annotator_mut()
                    .symbols
                    .insert(*addr, Arc::from(name.as_str()));
            }
            Frame::Path { dev, ino, path } => {
                feed.annotator_mut()
                    .paths
                    .insert((*dev, *ino), path.as_deref().map(Arc::from));
            }
            Frame::Cgroup { id, path } => {
                feed.annotator_mut()
                    .cgroups
                    .insert(*id, path.as_deref().map(Arc::from));
            }
            Frame::Record(bytes) => {
                feed.record(bytes)?;
                // Live tracing closes lingering writes on a clock; replay
                // uses the newest kernel time seen.
                let now = feed.engine.last_ts();
                feed.tick(now);
            }
            Frame::Lost { records, ts_ns } => feed.lost(*records, *ts_ns)?,
        }
        feed.drain_ready(|w| reporter.write(w))?;
    }
    feed.finish();
    feed.drain_ready(|w| reporter.write(w))?;
    let mut problems = trace.trailer.problems.clone();
    if feed.undecodable > 0 {
        problems.push(format!("{} records could not be decoded", feed.undecodable));
    }
    info.counters = Reading::from_named(&trace.trailer.counters);
    let summary = summarize(
        feed.engine.tally(),
        info.counters.get(Counter::DirectWrites),
        info.counters.get(Counter::RingbufFull),
        problems,
    );
    reporter.finish(&summary, &info)?;
    Ok((summary, info))
}
