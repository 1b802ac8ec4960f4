//! `dio-trace info`: the facts a bug report needs, and which mechanism each
//! probe gets here (attached for real, then detached).

use std::path::Path;

use crate::{
    attach::{Attach, Tracer},
    error::{EnvError, chain},
    exit::Exit,
    kernel::{btf::Ext4Types, dev_string, facts::KernelFacts},
    probes::{
        catalog::CATALOG,
        select::{Backend, Wants},
    },
};

pub fn print(backend: Backend, btf_file: Option<&Path>) -> anyhow::Result<Exit> {
    let facts = KernelFacts::gather(btf_file)?;
    println!("kernel:        {}", facts.release);
    println!("btf:           {}", crate::kernel::btf::VMLINUX_BTF);
    let ext4 = match &facts.ext4_types {
        Ext4Types::Vmlinux => "vmlinux (ext4 built in)".to_owned(),
        Ext4Types::Module => format!("{} (ext4 is a module)", crate::kernel::btf::EXT4_MODULE_BTF),
        Ext4Types::File(p) => format!("{} (--btf)", p.display()),
    };
    println!("ext4 types:    {ext4}");
    println!("tracefs:       {}", facts.tracefs.display());
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
