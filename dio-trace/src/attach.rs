//! One owner for every attached program: dropping a [`Tracer`] detaches
//! them all (aya closes each link with its program), so every exit path,
//! error or signal, leaves nothing behind.

use aya::{Btf, Ebpf, programs::BtfTracePoint};
use dio_trace_common::probe::Mechanism;

use crate::{
    error::chain,
    probes::{
        catalog::Hook,
        select::{Backend, Selection, select},
    },
};

pub struct Tracer {
    pub ebpf: Ebpf,
    pub selection: Selection,
}

impl Tracer {
    /// Attach every probe the catalog asks for, each with the best
    /// mechanism `backend` allows and the kernel accepts.
    pub fn attach(mut ebpf: Ebpf, btf: &Btf, backend: Backend, follow: bool) -> Self {
        let selection = select(backend, follow, |_, hook| attach_hook(&mut ebpf, btf, hook));
        Self { ebpf, selection }
    }
}

fn attach_hook(ebpf: &mut Ebpf, btf: &Btf, hook: &Hook) -> Result<(), String> {
    let prog = ebpf
        .program_mut(hook.program)
        .ok_or_else(|| format!("program {} is not in this build", hook.program))?;
    match hook.mechanism {
        Mechanism::Tracepoint => {
            let p: &mut BtfTracePoint = prog.try_into().map_err(|e| chain(&e))?;
            p.load(hook.target, btf).map_err(|e| {
                format!(
                    "load failed (kernel older than {}, or without this tracepoint): {}",
                    hook.since,
                    chain(&e)
                )
            })?;
            p.attach().map_err(|e| format!("attach failed: {}", chain(&e)))?;
            Ok(())
        }
        m => Err(format!("{} programs are not built in this version", m.name())),
    }
}
