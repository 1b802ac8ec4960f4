//! One owner for every attached program: dropping a [`Tracer`] detaches
//! them all (aya closes each link with its program), so every exit path,
//! error or signal, leaves nothing behind.

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, Program, ProgramError},
};
use dio_trace_common::probe::Mechanism;

use crate::{
    error::chain,
    probes::{
        catalog::Hook,
        select::{Backend, Selection, Wants, select},
    },
};

pub struct Tracer {
    pub ebpf: Ebpf,
    pub selection: Selection,
}

impl Tracer {
    /// Attach every probe the catalog asks for, each with the best
    /// mechanism `backend` allows and the kernel accepts.
    pub fn attach(mut ebpf: Ebpf, btf: &Btf, backend: Backend, wants: Wants) -> Self {
        let selection = select(backend, wants, |_, hook| attach_hook(&mut ebpf, btf, hook));
        Self { ebpf, selection }
    }
}

/// Load and attach every program of a hook; on any failure, unload the
/// parts already attached so a half hook never emits.
fn attach_hook(ebpf: &mut Ebpf, btf: &Btf, hook: &Hook) -> Result<(), String> {
    for (i, &(mechanism, program)) in hook.programs.iter().enumerate() {
        if let Err(e) = attach_one(ebpf, btf, mechanism, program, hook) {
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
    hook: &Hook,
) -> Result<(), String> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} is not in this build"))?;
    let load_err = |e: ProgramError| explain("load", &chain(&e), mechanism, hook);
    let attach_err = |e: ProgramError| explain("attach", &chain(&e), mechanism, hook);
    match mechanism {
        Mechanism::Tracepoint => {
            let p: &mut BtfTracePoint = prog.try_into().map_err(|e| chain(&e))?;
            p.load(hook.target, btf).map_err(load_err)?;
            p.attach().map_err(attach_err)?;
        }
        Mechanism::Fentry => {
            let p: &mut FEntry = prog.try_into().map_err(|e| chain(&e))?;
            p.load(hook.target, btf).map_err(load_err)?;
            p.attach().map_err(attach_err)?;
        }
        Mechanism::Fexit => {
            let p: &mut FExit = prog.try_into().map_err(|e| chain(&e))?;
            p.load(hook.target, btf).map_err(load_err)?;
            p.attach().map_err(attach_err)?;
        }
        Mechanism::Kprobe | Mechanism::Kretprobe => {
            let p: &mut KProbe = prog.try_into().map_err(|e| chain(&e))?;
            p.load().map_err(load_err)?;
            p.attach(hook.target, 0).map_err(attach_err)?;
        }
    }
    Ok(())
}

/// The usual causes, said plainly, with the raw error kept for reports.
fn explain(step: &str, raw: &str, mechanism: Mechanism, hook: &Hook) -> String {
    let cause = if raw.contains("kprobe/type") {
        "this kernel has no kprobe support (CONFIG_KPROBES off)".to_owned()
    } else if raw.contains("Operation not permitted") {
        format!("the kernel refused {} programs here (EPERM)", mechanism.name())
    } else if raw.contains("os error 524") {
        format!(
            "the kernel cannot attach {} to {} (ENOTSUPP: e.g. more arguments than BPF trampolines take)",
            mechanism.name(),
            hook.target
        )
    } else if raw.contains("unknown BTF type")
        || raw.contains("not found")
        || raw.contains("No such file")
        || raw.contains("ENOENT")
    {
        format!(
            "{} does not exist in this kernel (added in {}; or inlined)",
            hook.target, hook.since
        )
    } else {
        format!("{step} failed")
    };
    format!("{cause} [{raw}]")
}

fn unload(p: &mut Program) -> Result<(), ProgramError> {
    match p {
        Program::BtfTracePoint(p) => p.unload(),
        Program::FEntry(p) => p.unload(),
        Program::FExit(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        _ => Ok(()),
    }
}
