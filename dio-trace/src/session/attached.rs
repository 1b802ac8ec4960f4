//! Phase 2: the programs loaded and attached, and what the run knows before
//! any write that it cannot see (a probe no mechanism served, a mount the
//! write-start probe is blind to).

use aya::maps::MapError;

use super::{Outcome, Target, problems::unseen_mounts};
use crate::{
    analysis::{Engine, EngineConfig, summary::summarize},
    attach::{Attach, Tracer},
    error::{EnvError, LoadError, chain},
    kernel::facts::KernelFacts,
    plan::Plan,
    probes::{catalog::WRITE_BEGIN, select::Wants},
    report::{Reporter, RunInfo},
};
use dio_trace_common::config::CONFIG_FULL_TIMELINE;

pub(super) struct Attached {
    pub tracer: Tracer,
    pub info: RunInfo,
    /// Reasons against "ordered" known before any write.
    pub problems: Vec<String>,
    pub engine: Engine,
    pub wants: Wants,
}

impl Attached {
    /// Load with the configuration `facts` give for `plan`, and attach.
    pub fn start(plan: &Plan, facts: &KernelFacts) -> anyhow::Result<Self> {
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
        let tracer = Tracer::start(&config, &how).map_err(|e| EnvError(chain(&e)))?;
        let mut info = RunInfo::new(facts.release.clone(), &tracer.selection.probes);
        info.symbols_unreadable = facts.symbols_unreadable.clone();
        info.ordered_counted = plan.counts_ordered();
        let mut problems = tracer.selection.problems();
        problems.extend(unseen_mounts(&tracer.selection, facts, plan.filter.dev));
        if crate::notify::expected() && !problems.is_empty() {
            // A service is ready only when its verdicts can be trusted.
            return Err(EnvError(format!("not ready: {}", problems.join("; "))).into());
        }
        let engine = Engine::new(EngineConfig {
            coverage: tracer.selection.coverage(),
            path_prefix: plan.path_prefix.clone(),
            ..EngineConfig::default()
        });
        Ok(Self {
            tracer,
            info,
            problems,
            engine,
            wants,
        })
    }

    /// Without the write_begin probe no write can ever be counted.
    pub fn can_count(&self) -> bool {
        self.tracer.selection.served(WRITE_BEGIN)
    }

    /// Say so now instead of waiting, and end with what is known.
    pub fn nothing_countable(self, target: &Target, reporter: &mut dyn Reporter) -> anyhow::Result<Outcome> {
        if let Target::Command(argv) = target {
            eprintln!(
                "dio-trace: not running {}: without the write_begin probe no write can be judged",
                argv.join(" ")
            );
        }
        reporter.start(&self.info)?;
        let summary = summarize(self.engine.tally(), 0, 0, self.problems);
        reporter.finish(&summary, &self.info)?;
        Ok(Outcome {
            summary,
            info: self.info,
            child: None,
        })
    }

    /// The map `name`, taken out of the loaded object.
    pub fn take(&mut self, name: &'static str) -> Result<aya::maps::Map, LoadError> {
        self.tracer.ebpf.take_map(name).ok_or(LoadError::MissingMap(name))
    }
}

pub(super) fn map_error(name: &'static str, e: MapError) -> LoadError {
    LoadError::Map {
        name,
        source: Box::new(e),
    }
}
