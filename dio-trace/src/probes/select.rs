//! Apply the catalog: for each probe, the first mechanism the kernel
//! accepts (within the forced backend, if any), with the reason for every
//! one it skipped. A probe the verdict needs that attaches nowhere is named
//! in the summary and keeps the answer from being "ordered".

use dio_trace_common::{fs::Fs, probe::Mechanism};

use super::catalog::{CATALOG, Need, ProbeSpec};
use crate::analysis::Coverage;

/// `--backend`: restrict every probe to one mechanism family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The best each probe can get: kprobes, then tracepoints, then
    /// fentry/fexit (in order of how rarely the kernel skips them).
    Auto,
    Fentry,
    Kprobe,
    Tracepoint,
}

impl Backend {
    pub fn allows(self, m: Mechanism) -> bool {
        match self {
            Backend::Auto => true,
            Backend::Fentry => matches!(m, Mechanism::Fentry | Mechanism::Fexit),
            Backend::Kprobe => matches!(m, Mechanism::Kprobe | Mechanism::Kretprobe),
            Backend::Tracepoint => matches!(m, Mechanism::Tracepoint | Mechanism::RawTracepoint),
        }
    }
}

/// How one probe ended up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeStatus {
    pub name: &'static str,
    pub fs: Option<Fs>,
    pub need: Need,
    /// The mechanism and target that serve it, if any did.
    pub served: Option<(Mechanism, &'static str)>,
    /// The one filesystem the serving hook sees, if it sees only one.
    pub served_only: Option<Fs>,
    /// Why each candidate was passed over.
    pub skipped: Vec<String>,
}

/// The outcome of selection for a whole run.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub probes: Vec<ProbeStatus>,
}

impl Selection {
    /// Probes asked for that nothing serves.
    pub fn unserved(&self) -> usize {
        self.probes.iter().filter(|p| p.served.is_none()).count()
    }

    pub fn served(&self, name: &str) -> bool {
        self.probes.iter().any(|p| p.name == name && p.served.is_some())
    }

    pub fn coverage(&self) -> Coverage {
        super::catalog::coverage(|name| self.served(name))
    }

    /// Problems that keep any run from being "ordered": the probes every
    /// filesystem needs (write start, completion, following).
    pub fn problems(&self) -> Vec<String> {
        self.unserved_where(|p| p.fs.is_none())
    }

    /// The filesystem the write-start probe is limited to, when its hook
    /// is one filesystem's own function (ext4's `write_iter` where fentry
    /// cannot reach iomap's): writes to the others are not seen at all.
    pub fn write_begin_only(&self) -> Option<Fs> {
        self.probes
            .iter()
            .find(|p| p.name == super::catalog::WRITE_BEGIN)
            .and_then(|p| p.served_only)
    }

    /// Problems of one filesystem's own probes: they matter once a write
    /// to it was judged (a filesystem nobody wrote to needs no probes, and
    /// its writes are inconclusive by [`Self::coverage`] anyway).
    pub fn fs_problems(&self, fs: Fs) -> Vec<String> {
        self.unserved_where(|p| p.fs == Some(fs))
    }

    /// Counting probes of `fs` that could not attach ([`Need::Count`]):
    /// the writes they would have named (not judged either way).
    pub fn uncounted(&self, fs: Fs) -> Vec<String> {
        self.probes
            .iter()
            .filter(|p| p.served.is_none() && p.need == Need::Count && p.fs == Some(fs))
            .map(|p| format!("probe {} could not attach: {}", p.name, p.skipped.join("; ")))
            .collect()
    }

    fn unserved_where(&self, keep: impl Fn(&ProbeStatus) -> bool) -> Vec<String> {
        self.probes
            .iter()
            .filter(|p| p.served.is_none() && matches!(p.need, Need::Required | Need::Verdict | Need::Follow))
            .filter(|p| keep(p))
            .map(|p| format!("probe {} could not attach: {}", p.name, p.skipped.join("; ")))
            .collect()
    }
}

/// Which optional families a run needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wants {
    /// Following processes (`run`, `--pid`).
    pub follow: bool,
    /// Timeline-only probes (`--full-timeline`).
    pub timeline: bool,
}

/// Walk the catalog. `try_attach` loads and attaches one hook, returning
/// why not on failure; it is the only thing that touches the kernel.
pub fn select(
    backend: Backend,
    wants: Wants,
    mut try_attach: impl FnMut(&ProbeSpec, &super::catalog::Hook) -> Result<(), String>,
) -> Selection {
    let mut probes = Vec::new();
    for spec in CATALOG {
        if (spec.need == Need::Follow && !wants.follow) || (spec.need == Need::Timeline && !wants.timeline) {
            continue;
        }
        let mut status = ProbeStatus {
            name: spec.name,
            fs: spec.fs,
            need: spec.need,
            served: None,
            served_only: None,
            skipped: Vec::new(),
        };
        for hook in spec.hooks {
            // Following processes is plumbing, not a fact: any backend may use it.
            if spec.need != Need::Follow && !backend.allows(hook.mechanism) {
                continue;
            }
            match try_attach(spec, hook) {
                Ok(()) => {
                    status.served = Some((hook.mechanism, hook.target));
                    status.served_only = hook.only;
                    break;
                }
                Err(why) => status
                    .skipped
                    .push(format!("{} {}: {why}", hook.mechanism.name(), hook.target)),
            }
        }
        if status.served.is_none() && status.skipped.is_empty() {
            status
                .skipped
                .push(format!("no {backend:?} hook exists for it in this version"));
        }
        probes.push(status);
    }
    Selection { probes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::catalog::{SIZE_UPDATE, WRITE_BEGIN};

    #[test]
    fn a_probe_that_attaches_nowhere_is_a_problem() {
        let sel = select(Backend::Auto, Wants::default(), |spec, _| {
            if spec.name == SIZE_UPDATE {
                Err("no such tracepoint".into())
            } else {
                Ok(())
            }
        });
        assert!(sel.served(WRITE_BEGIN));
        assert!(!sel.coverage().of(Fs::Ext4).size_update);
        assert!(sel.coverage().of(Fs::Xfs).size_update);
        assert!(sel.problems().is_empty(), "ext4's own probe");
        let problems = sel.fs_problems(Fs::Ext4);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("no such tracepoint"), "{problems:?}");
    }

    #[test]
    fn a_forced_backend_uses_only_its_mechanisms() {
        let mut tried = Vec::new();
        let all = Wants {
            follow: true,
            timeline: true,
        };
        let sel = select(Backend::Kprobe, all, |_, hook| {
            tried.push(hook.mechanism);
            Ok(())
        });
        assert!(tried.iter().all(|m| matches!(
            m,
            Mechanism::Kprobe | Mechanism::Kretprobe | Mechanism::Tracepoint
        )));
        // sync_exit has no kprobe hook: named as unavailable, not dropped.
        let exit = sel.probes.iter().find(|p| p.name == "sync_exit").unwrap();
        assert!(exit.served.is_none() && exit.skipped[0].contains("no Kprobe hook"));
        // Following forks is not a fact probe: it keeps its tracepoint.
        assert!(sel.served("follow_fork"));
    }

    #[test]
    fn auto_falls_back_in_catalog_order() {
        let sel = select(Backend::Auto, Wants::default(), |_, hook| match hook.mechanism {
            Mechanism::Fentry | Mechanism::Fexit => Ok(()),
            _ => Err("EPERM".into()),
        });
        let begin = sel.probes.iter().find(|p| p.name == WRITE_BEGIN).unwrap();
        assert_eq!(begin.served.unwrap().0, Mechanism::Fentry);
        assert_eq!(
            sel.write_begin_only(),
            None,
            "iomap's own function sees every filesystem"
        );
        // Where fentry cannot reach iomap, ext4's write_iter stands in: it
        // sees ext4 only, and the selection says so.
        let sel = select(Backend::Fentry, Wants::default(), |_, hook| {
            if hook.target.contains("iomap") {
                Err("ENOTSUPP".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(sel.write_begin_only(), Some(Fs::Ext4));
        assert_eq!(
            begin.skipped.len(),
            3,
            "kprobes, then the tracepoint, were tried first: {:?}",
            begin.skipped
        );
    }

    /// Programs that run with preemption disabled come first: with
    /// everything available, every fact probe is a kprobe (the only
    /// exceptions, the sync exits and f2fs's sync count, have no kprobe
    /// hook), and tracepoints come next.
    #[test]
    fn auto_prefers_what_the_kernel_never_skips() {
        let all = Wants {
            follow: false,
            timeline: true,
        };
        let sel = select(Backend::Auto, all, |_, _| Ok(()));
        for p in &sel.probes {
            let (m, _) = p.served.unwrap();
            let want = if p.name.ends_with("sync_exit") || p.name == crate::probes::catalog::F2FS_SYNC_COUNT {
                Mechanism::Tracepoint
            } else {
                Mechanism::Kprobe
            };
            assert!(
                m == want || (m == Mechanism::Kretprobe && want == Mechanism::Kprobe),
                "{p:?}"
            );
        }
        let sel = select(Backend::Auto, all, |_, hook| match hook.mechanism {
            Mechanism::Kprobe | Mechanism::Kretprobe => Err("CONFIG_KPROBES off".into()),
            _ => Ok(()),
        });
        let begin = sel.probes.iter().find(|p| p.name == WRITE_BEGIN).unwrap();
        assert_eq!(begin.served.unwrap().0, Mechanism::Tracepoint);
    }

    #[test]
    fn optional_families_only_when_asked() {
        let names = |follow, timeline| {
            select(Backend::Auto, Wants { follow, timeline }, |_, _| Ok(()))
                .probes
                .len()
        };
        assert_eq!(names(true, false), names(false, false) + 1);
        assert_eq!(
            names(false, true),
            names(false, false) + 2,
            "sync_exit and inode_extension"
        );
    }
}
