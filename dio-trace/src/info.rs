//! `dio-trace info`: the facts a bug report needs, and which mechanism each
//! probe gets here (attached for real, then detached).

use crate::{
    attach::{Attach, Tracer},
    error::{EnvError, chain},
    exit::Exit,
    kernel::{dev_string, facts::KernelFacts},
    probes::{
        catalog::CATALOG,
        select::{Backend, Wants},
    },
};

pub fn print(backend: Backend) -> anyhow::Result<Exit> {
    let facts = KernelFacts::gather()?;
    println!("kernel:        {}", facts.release);
    println!("btf:           {}", crate::kernel::btf::VMLINUX_BTF);
    println!("tracefs:       {}", facts.tracefs.display());
    println!(
        "ki_flags bits: direct={:#x} dsync={:#x} sync={:#x} (from {:?})",
        facts.iocb.direct, facts.iocb.dsync, facts.iocb.sync, facts.iocb_source
    );
    println!("offsets:       {:?}", facts.offsets);
    let ext4: Vec<String> = facts
        .mounts
        .ext4_mounts()
        .map(|m| format!("{} ({})", m.mount_point, dev_string(m.dev)))
        .collect();
    println!(
        "ext4 mounts:   {}",
        if ext4.is_empty() {
            "none".into()
        } else {
            ext4.join(", ")
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
    println!("probes (--backend {backend:?}):");
    for p in &tracer.selection.probes {
        let about = CATALOG
            .iter()
            .find(|s| s.name == p.name)
            .map(|s| s.about)
            .unwrap_or("");
        match p.served {
            Some((m, target)) => println!("  {:<13} {:<10} {target:<24} {about}", p.name, m.name()),
            None => println!("  {:<13} {:<10} {:<24} {about}", p.name, "-", "unavailable"),
        }
        for s in &p.skipped {
            println!("  {:<13}   skipped {s}", "");
        }
    }
    let problems = tracer.selection.problems();
    drop(tracer);
    if problems.is_empty() {
        println!("ready: every probe the verdict needs is served");
        Ok(Exit::Ordered)
    } else {
        for p in &problems {
            eprintln!("dio-trace: {p}");
        }
        Ok(Exit::Inconclusive)
    }
}
