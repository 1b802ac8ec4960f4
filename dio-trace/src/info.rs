//! `dio-trace info`: the facts a bug report needs, and which mechanism each
//! probe gets here (attached for real, then detached).

use dio_trace_common::record::SETTLED_BATCH;
use std::path::Path;

use crate::{
    attach::{Attach, Tracer},
    error::{EnvError, chain},
    exit::Exit,
    kernel::{btf::Types, dev_string, facts::KernelFacts},
    probes::{
        catalog::CATALOG,
        select::{Backend, Wants},
    },
};

pub fn print(backend: Backend, btf_file: Option<&Path>) -> anyhow::Result<Exit> {
    let facts = KernelFacts::gather(btf_file)?;
    println!("kernel:        {}", facts.release);
    println!("btf:           {}", crate::kernel::btf::VMLINUX_BTF);
    for st in &facts.fs {
        let name = st.fs.name();
        let from = match &st.source {
            Ok(Types::Vmlinux) if st.facts.disk_size == 0 => "nothing of its own to read".to_owned(),
            Ok(Types::Vmlinux) => format!("vmlinux ({name} built in)"),
            Ok(Types::Module) => format!(
                "{} ({name} is a module)",
                crate::kernel::btf::module_btf(name).display()
            ),
            Ok(Types::File(p)) => format!("{} (--btf)", p.display()),
            Err(why) => format!("NONE: its writes are counted, never judged: {why}"),
        };
        println!(
            "{:<15}{} ({from})",
            format!("{name} facts:"),
            st.fs.disk_size_field()
        );
    }
    println!("tracefs:       {}", facts.tracefs.display());
    println!(
        "symbols:       {}",
        match &facts.symbols_unreadable {
            None => "kernel stacks and callers named from /proc/kallsyms (modules too)".to_owned(),
            Some(why) => format!("stacks and callers stay unnamed: {why}"),
        }
    );
    println!("ki_flags:      {}", facts.iocb_source);
    for (i, b) in facts.iocb.iter().enumerate() {
        println!(
            "  layout {i}:    direct={:#x} dsync={:#x} sync={:#x} append={:#x}",
            b.direct, b.dsync, b.sync, b.append
        );
    }
    println!(
        "open flags:    O_DIRECT={:#x} O_DSYNC={:#x} __O_SYNC={:#x} (UAPI: what the kernel derives ki_flags from)",
        facts.open.direct, facts.open.dsync, facts.open.sync
    );
    println!("offsets:       {:?}", facts.offsets);
    let mounts: Vec<String> = facts
        .mounts
        .supported_mounts()
        .map(|m| format!("{} {} ({})", m.fstype, m.mount_point, dev_string(m.dev)))
        .collect();
    println!(
        "mounts:        {}",
        if mounts.is_empty() {
            "none of ext4, xfs, f2fs".into()
        } else {
            mounts.join(", ")
        }
    );

    let config = facts.config(Default::default(), 0);
    let btf = aya::Btf::from_sys_fs().map_err(|e| EnvError(chain(&e)))?;
    let all = Wants {
        follow: true,
        timeline: true,
    };
    let how = Attach {
        ringbuf_bytes: 1 << 16,
        btf: &btf,
        backend,
        wants: all,
    };
    let tracer = Tracer::start(&config, &how).map_err(|e| EnvError(chain(&e)))?;
    println!(
        "kernel reads:  {}",
        if tracer.probe_reads {
            "bpf_probe_read_kernel only (the verifier refused plain BTF loads)"
        } else {
            "plain loads through BTF-typed pointers (tp_btf, fentry/fexit), probe reads elsewhere"
        }
    );
    match &tracer.batching {
        Ok(()) => println!(
            "batching:      settled writes leave {SETTLED_BATCH} to a record per CPU, flushed every second"
        ),
        Err(why) => println!("batching:      off, each write leaves alone ({why})"),
    }
    println!(
        "ordered:       counted in the kernel, not sent, by runs that show only problems \
         (watch, watch --metrics, run --show problems); sent one by one by record, --show all, \
         --stacks, --full-timeline, --perfetto and --path (the start line says which)"
    );
    println!(
        "probes (--backend {backend:?}; prefixed ones are that filesystem's, the rest ext4's or shared):"
    );
    for p in &tracer.selection.probes {
        let about = CATALOG
            .iter()
            .find(|s| s.name == p.name)
            .map(|s| s.about)
            .unwrap_or("");
        match p.served {
            Some((m, target)) => println!("  {:<16} {:<10} {target:<24} {about}", p.name, m.name()),
            None => println!("  {:<16} {:<10} {:<24} {about}", p.name, "-", "unavailable"),
        }
        for s in &p.skipped {
            println!("  {:<16}   skipped {s}", "");
        }
    }
    let problems = tracer.selection.problems();
    let mut judged = Vec::new();
    for (st, cov) in facts
        .fs
        .iter()
        .map(|st| (st, tracer.selection.coverage().of(st.fs)))
    {
        let ok = st.source.is_ok() && cov.size_update && cov.sync;
        if ok {
            judged.push(st.fs.name());
        } else {
            let mut why: Vec<String> = st.missing().into_iter().collect();
            why.extend(tracer.selection.fs_problems(st.fs));
            println!(
                "note: {} writes would be inconclusive here: {}",
                st.fs.name(),
                why.join("; ")
            );
        }
    }
    drop(tracer);
    if problems.is_empty() {
        println!(
            "ready: every probe the verdict needs is served (judged: {})",
            judged.join(", ")
        );
        Ok(Exit::Ordered)
    } else {
        for p in &problems {
            eprintln!("dio-trace: {p}");
        }
        Ok(Exit::Inconclusive)
    }
}
