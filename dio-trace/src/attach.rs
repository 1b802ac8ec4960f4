//! One owner for every attached program: dropping a [`Tracer`] detaches
//! them all (aya closes each link with its program), so every exit path,
//! error or signal, leaves nothing behind.

use std::{
    collections::HashSet,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, Program, ProgramError, RawTracePoint},
};
use dio_trace_common::{
    config::{CONFIG_FULL_TIMELINE, CONFIG_PROBE_READS, CONFIG_STACKS, Config},
    probe::Mechanism,
};

use crate::{
    collect::batch,
    error::{LoadError, chain},
    loader,
    probes::{
        catalog::Hook,
        select::{Backend, Selection, Wants, select},
    },
};

/// What [`Tracer::start`] needs besides the programs' config.
pub struct Attach<'a> {
    pub ringbuf_bytes: u32,
    pub btf: &'a Btf,
    pub backend: Backend,
    pub wants: Wants,
}

pub struct Tracer {
    pub ebpf: Ebpf,
    pub selection: Selection,
    /// The programs read kernel memory with `bpf_probe_read_kernel` only
    /// (the verifier refused plain BTF loads on this kernel).
    pub probe_reads: bool,
    /// Settled writes leave in per-CPU batches (`collect::batch`); `Err`
    /// says why they leave one by one instead.
    pub batching: Result<(), String>,
}

impl Tracer {
    /// Load the programs with `config` and attach them. Plain BTF loads
    /// come first; if a probe is then left unserved and the verifier
    /// refused one of its programs, the programs load again with probe
    /// reads only (`CONFIG_PROBE_READS`), and the load that serves more
    /// probes is kept.
    pub fn start(config: &Config, how: &Attach) -> Result<Self, LoadError> {
        let first = Self::load(config, how)?;
        let refused = first
            .selection
            .probes
            .iter()
            .any(|p| p.served.is_none() && p.skipped.iter().any(|s| s.contains(VERIFIER_REFUSED)));
        if !refused || config.flags & CONFIG_PROBE_READS != 0 {
            return Ok(first);
        }
        let fallback = Config {
            flags: config.flags | CONFIG_PROBE_READS,
            ..*config
        };
        // Both sets are attached for this moment; nothing reads either yet,
        // and the one not kept detaches as it is dropped.
        let second = Self::load(&fallback, how)?;
        Ok(if second.selection.unserved() < first.selection.unserved() {
            second
        } else {
            first
        })
    }

    fn load(config: &Config, how: &Attach) -> Result<Self, LoadError> {
        let mut ebpf = loader::load(config, how.ringbuf_bytes)?;
        // Before attaching: nothing may fill a batch while it is set up.
        // Not with stacks (a batched write would leave its stacks waiting
        // in user space, thousands of them) nor a full timeline (events
        // leave one by one anyway).
        let batching = if config.flags & (CONFIG_STACKS | CONFIG_FULL_TIMELINE) != 0 {
            Err("--stacks and --full-timeline send each write on its own".into())
        } else {
            batch::enable(&mut ebpf)
        };
        let mut tracer = Self::attach(ebpf, how.btf, how.backend, how.wants);
        tracer.probe_reads = config.flags & CONFIG_PROBE_READS != 0;
        tracer.batching = batching;
        Ok(tracer)
    }

    /// Attach every probe the catalog asks for, each with the best
    /// mechanism `backend` allows and the kernel accepts.
    /// A hook several rows share (`vfs_fsync_range` serves every
    /// filesystem's sync) is attached once and serves each of them.
    pub fn attach(mut ebpf: Ebpf, btf: &Btf, backend: Backend, wants: Wants) -> Self {
        let mut attached: HashSet<&'static str> = HashSet::new();
        let selection = select(backend, wants, |_, hook| {
            if hook.programs.iter().all(|(_, p)| attached.contains(p)) {
                return Ok(());
            }
            attach_hook(&mut ebpf, btf, hook)?;
            attached.extend(hook.programs.iter().map(|(_, p)| *p));
            Ok(())
        });
        Self {
            ebpf,
            selection,
            probe_reads: false,
            batching: Err("not set up".into()),
        }
    }

    /// Program runs the kernel skipped, per program that had any: a
    /// trampoline (fentry/fexit, 5.12+) or tracepoint program (preemptible
    /// on 7.x) already running on a CPU, preempted there, is not run again on that
    /// CPU until it finishes; the kernel counts each such skip in the
    /// program's `recursion_misses` (and, from 6.7, a kprobe program's skip
    /// when another BPF program is active on the CPU). Kernels that do not
    /// count have no such skip for trampolines: before 5.12 they ran the
    /// program nested instead.
    pub fn skipped_runs(&self) -> Vec<(String, u64)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                let fd = p.fd().ok()?.as_fd().as_raw_fd();
                let misses =
                    recursion_misses(&std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?)?;
                (misses > 0).then(|| (name.to_owned(), misses))
            })
            .collect()
    }
}

/// `recursion_misses` from a BPF program's fdinfo (absent before 5.12).
fn recursion_misses(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("recursion_misses:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Load and attach every program of a hook; on any failure, unload the
/// parts already attached so a half hook never emits.
fn attach_hook(ebpf: &mut Ebpf, btf: &Btf, hook: &Hook) -> Result<(), String> {
    for (i, &(mechanism, program)) in hook.programs.iter().enumerate() {
        if let Err(e) = attach_one(ebpf, btf, mechanism, program, hook.target_of(i), hook) {
            // Unload the failed part too: a later hook may load the same
            // program against another target.
            for &(_, done) in &hook.programs[..=i] {
                if let Some(p) = ebpf.program_mut(done) {
                    let _ = unload(p);
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

fn attach_one(
    ebpf: &mut Ebpf,
    btf: &Btf,
    mechanism: Mechanism,
    name: &str,
    target: &str,
    hook: &Hook,
) -> Result<(), String> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} is not in this build"))?;
    let load_err = |e: ProgramError| explain("load", &chain(&e), mechanism, target, hook.since);
    let attach_err = |e: ProgramError| explain("attach", &chain(&e), mechanism, target, hook.since);
    match mechanism {
        Mechanism::Tracepoint => {
            let p: &mut BtfTracePoint = prog.try_into().map_err(|e| chain(&e))?;
            p.load(target, btf).map_err(load_err)?;
            p.attach().map_err(attach_err)?;
        }
        Mechanism::Fentry => {
            let p: &mut FEntry = prog.try_into().map_err(|e| chain(&e))?;
            p.load(target, btf).map_err(load_err)?;
            p.attach().map_err(attach_err)?;
        }
        Mechanism::Fexit => {
            let p: &mut FExit = prog.try_into().map_err(|e| chain(&e))?;
            p.load(target, btf).map_err(load_err)?;
            p.attach().map_err(attach_err)?;
        }
        Mechanism::RawTracepoint => {
            let p: &mut RawTracePoint = prog.try_into().map_err(|e| chain(&e))?;
            p.load().map_err(load_err)?;
            p.attach(target).map_err(attach_err)?;
        }
        Mechanism::Kprobe | Mechanism::Kretprobe => {
            let p: &mut KProbe = prog.try_into().map_err(|e| chain(&e))?;
            p.load().map_err(load_err)?;
            p.attach(target, 0).map_err(attach_err)?;
        }
    }
    Ok(())
}

/// How [`explain`] starts when the verifier rejected a program (EACCES).
const VERIFIER_REFUSED: &str = "the verifier refused the program";

/// The usual causes, said plainly, with the raw error kept for reports.
fn explain(step: &str, raw: &str, mechanism: Mechanism, target: &str, since: &str) -> String {
    let cause = if raw.contains("(os error 13)") {
        VERIFIER_REFUSED.to_owned()
    } else if raw.contains("kprobe/type") {
        "this kernel has no kprobe support (CONFIG_KPROBES off)".to_owned()
    } else if raw.contains("Operation not permitted") {
        format!("the kernel refused {} programs here (EPERM)", mechanism.name())
    } else if raw.contains("os error 524") {
        format!(
            "the kernel cannot attach {} to {} (ENOTSUPP: e.g. more arguments than BPF trampolines take)",
            mechanism.name(),
            target
        )
    } else if let Some(module) = in_loaded_fs_module(target)
        && raw.contains("unknown BTF type")
    {
        format!(
            "{} is {module}'s, and {module} is a module here: aya 0.14 attaches {} programs only to vmlinux's \
             functions and tracepoints (kprobes reach modules)",
            target,
            mechanism.name()
        )
    } else if raw.contains("unknown BTF type")
        || raw.contains("not found")
        || raw.contains("No such file")
        || raw.contains("ENOENT")
    {
        format!("{target} does not exist in this kernel (added in {since}; or inlined)")
    } else {
        format!("{step} failed")
    };
    format!("{cause} [{raw}]")
}

/// The filesystem whose functions or tracepoints `target` names, when it
/// is a loaded module here (`initstate` exists for loadable modules only).
fn in_loaded_fs_module(target: &str) -> Option<&'static str> {
    dio_trace_common::fs::Fs::ALL
        .iter()
        .map(|fs| fs.name())
        .find(|m| target.trim_start_matches('_').starts_with(&format!("{m}_")))
        .filter(|m| std::path::Path::new(&format!("/sys/module/{m}/initstate")).exists())
}

fn unload(p: &mut Program) -> Result<(), ProgramError> {
    match p {
        Program::BtfTracePoint(p) => p.unload(),
        Program::FEntry(p) => p.unload(),
        Program::FExit(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        Program::RawTracePoint(p) => p.unload(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recursion_misses_come_from_fdinfo() {
        let fdinfo = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nrun_time_ns:\t0\nrun_cnt:\t0\nrecursion_misses:\t3\nverified_insns:\t92\n";
        assert_eq!(recursion_misses(fdinfo), Some(3));
        assert_eq!(recursion_misses("prog_type:\t26\n"), None);
    }
}
