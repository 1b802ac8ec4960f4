//! Report formats, peers behind one trait. The engine never formats; a
//! reporter never judges.

pub mod human;
pub mod ndjson;

use std::collections::BTreeMap;

use crate::{
    analysis::{Summary, engine::WriteReport},
    collect::counters::Reading,
    probes::select::ProbeStatus,
};

/// Facts about the run that every format shows.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    /// Kernel release the events came from.
    pub kernel: String,
    pub probes: Vec<ProbeStatus>,
    /// Kernel counters at the end (zero for replays without them).
    pub counters: Reading,
}

impl RunInfo {
    /// probe name -> "mechanism:target", or None when unavailable.
    pub fn probe_map(&self) -> BTreeMap<&'static str, Option<String>> {
        self.probes
            .iter()
            .map(|p| (p.name, p.served.map(|(m, t)| format!("{}:{t}", m.name()))))
            .collect()
    }
}

/// Which writes the human view prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Show {
    /// Every counted write, one line each (violations with their timeline).
    All,
    /// Only violations and writes that could not be judged.
    Problems,
}

pub trait Reporter {
    /// Probes are attached; tracing starts.
    fn start(&mut self, info: &RunInfo) -> std::io::Result<()>;
    /// A write was closed with a verdict.
    fn write(&mut self, w: &WriteReport) -> std::io::Result<()>;
    /// The run ended.
    fn finish(&mut self, summary: &Summary, info: &RunInfo) -> std::io::Result<()>;
}

/// Mechanisms that produced a write's events ("tracepoint", "fentry+kprobe").
pub fn backend_of(w: &WriteReport) -> String {
    let mut names: Vec<&str> = std::iter::once(&w.begin)
        .chain(&w.events)
        .map(|e| e.mechanism.name())
        .collect();
    names.sort_unstable();
    names.dedup();
    names.join("+")
}
