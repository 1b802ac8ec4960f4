//! Report formats, peers behind one trait. The engine never formats; a
//! reporter never judges.

pub mod human;
pub mod junit;
pub mod ndjson;
pub mod output;
pub mod perfetto;
pub mod svg;

use std::collections::BTreeMap;

use crate::{
    analysis::{Summary, Verdict, engine::WriteReport},
    collect::{counters::Reading, ordered::OrderedCount},
    probes::select::ProbeStatus,
};

/// Facts about the run that every format shows.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    /// Kernel release the events came from.
    pub kernel: String,
    /// Probe name -> "mechanism:target", or None when it did not attach.
    pub probes: BTreeMap<String, Option<String>>,
    /// Kernel counters at the end.
    pub counters: Reading,
    /// Why kernel addresses (stack frames, callers) cannot be named, if so:
    /// reports say it once.
    pub symbols_unreadable: Option<String>,
    /// Program runs the kernel skipped (`recursion_misses`), by probe. The
    /// reasons say it in words; this says which step a skip could have
    /// hidden, so a harness can excuse a short count only by the skips
    /// that could cause one.
    pub skipped: BTreeMap<String, u64>,
    /// Ordered writes are counted in the kernel, not sent one by one
    /// (a run that shows only problems): reports say which.
    pub ordered_counted: bool,
}

impl RunInfo {
    pub fn new(kernel: String, probes: &[ProbeStatus]) -> Self {
        Self {
            kernel,
            probes: probes
                .iter()
                .map(|p| {
                    (
                        p.name.to_owned(),
                        p.served.map(|(m, t)| format!("{}:{t}", m.name())),
                    )
                })
                .collect(),
            counters: Reading::default(),
            symbols_unreadable: None,
            skipped: BTreeMap::new(),
            ordered_counted: false,
        }
    }

    /// What happens to an ordered write, for the start line: "counted"
    /// (in the kernel) or "sent" (one record each).
    pub fn ordered_writes(&self) -> &'static str {
        if self.ordered_counted { "counted" } else { "sent" }
    }

    /// `name=mechanism:target ...` for one-line displays.
    pub fn probe_line(&self) -> String {
        self.probes
            .iter()
            .map(|(n, s)| format!("{n}={}", s.as_deref().unwrap_or("unavailable")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Several reporters fed the same stream (`check --json --junit F`).
pub struct Tee<'a>(pub Vec<&'a mut dyn Reporter>);

impl Reporter for Tee<'_> {
    fn start(&mut self, info: &RunInfo) -> std::io::Result<()> {
        self.0.iter_mut().try_for_each(|r| r.start(info))
    }
    fn write(&mut self, w: &WriteReport) -> std::io::Result<()> {
        self.0.iter_mut().try_for_each(|r| r.write(w))
    }
    fn counters(&mut self, r: &Reading) -> std::io::Result<()> {
        self.0.iter_mut().try_for_each(|x| x.counters(r))
    }
    fn ordered_counted(&mut self, c: &OrderedCount, cgroup: Option<&str>) -> std::io::Result<()> {
        self.0.iter_mut().try_for_each(|x| x.ordered_counted(c, cgroup))
    }
    fn finish(&mut self, s: &Summary, info: &RunInfo) -> std::io::Result<()> {
        self.0.iter_mut().try_for_each(|r| r.finish(s, info))
    }
}

/// How a reporter shows writes: which ones, and whether kernel addresses
/// may appear (`--raw-addresses`; off by default, KASLR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub show: Show,
    pub raw_addresses: bool,
}

impl From<Show> for View {
    fn from(show: Show) -> Self {
        View {
            show,
            raw_addresses: false,
        }
    }
}

/// Which writes a reporter prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Show {
    /// Every counted write, one line each (violations with their timeline).
    All,
    /// Only violations and writes that could not be judged; the kernel
    /// counts ordered writes instead of sending them (same summary)
    Problems,
}

impl Show {
    /// Does this setting print a write with this verdict?
    pub fn shows(self, verdict: &Verdict) -> bool {
        self == Show::All || !matches!(verdict, Verdict::Ordered | Verdict::Failed(_))
    }
}

pub trait Reporter {
    /// Probes are attached; tracing starts.
    fn start(&mut self, info: &RunInfo) -> std::io::Result<()>;
    /// A write was closed with a verdict.
    fn write(&mut self, w: &WriteReport) -> std::io::Result<()>;
    /// The kernel's counters, read again (every second while tracing).
    fn counters(&mut self, _reading: &Reading) -> std::io::Result<()> {
        Ok(())
    }
    /// Ordered writes the kernel counted instead of sending, in a run that
    /// shows no ordered write (`CONFIG_COUNT_ORDERED`); `cgroup`: the
    /// writers' cgroup path. What a reporter would count of as many
    /// ordered [`WriteReport`]s with these labels.
    fn ordered_counted(&mut self, _count: &OrderedCount, _cgroup: Option<&str>) -> std::io::Result<()> {
        Ok(())
    }
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
