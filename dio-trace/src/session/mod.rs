//! A live tracing session, in four phases. Each is a type that owns what
//! the next one needs, so a new feature adds a phase or a field, not lines
//! in the middle of one long function (docs/how-it-works.md follows the
//! same order):
//!
//! 1. **facts**: [`KernelFacts::gather`] reads what the verdict rests on
//!    from the running kernel (BTF, flag layouts, mounts, each
//!    filesystem's facts);
//! 2. **attached** ([`attached::Attached`]): the programs loaded with the
//!    configuration those facts give, attached probe by probe, and what the
//!    run already knows it cannot see;
//! 3. **running** ([`running::Running`]): the maps taken, the feed (the
//!    engine, the path annotator, the recorder), the traced command
//!    started; the tick loop until it exits, a signal or the deadline;
//! 4. **finish** (`finish.rs`): detach, take what the kernel still held,
//!    add every reason against "ordered" (`problems.rs`), summarize.
//!
//! The [`crate::attach::Tracer`] is dropped on every path out, detaching all.

mod attached;
mod finish;
mod problems;
mod running;

use std::{path::Path, time::Duration};

use crate::{
    analysis::Summary,
    kernel::facts::KernelFacts,
    plan::Plan,
    report::{Reporter, RunInfo},
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
    let attached = attached::Attached::start(plan, &facts)?;
    if !attached.can_count() {
        return attached.nothing_countable(&target, reporter);
    }
    let mut running = running::Running::open(attached, plan, facts, &target, record)?;
    reporter.start(&running.info)?;
    let child = running.run(target, plan.json, reporter).await?;
    running.finish(child, reporter)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
