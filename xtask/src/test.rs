//! The README's test command: everything CI runs, in order. Formatting,
//! lints, unit tests, live host tests (real BPF in this kernel), then the
//! kernel matrix and the crash checks in QEMU guests. The last line is
//! `vm: N passed, M failed` over the guest cases.

use anyhow::{Result, bail};

use crate::vm::{crash, matrix, traced};

pub fn run() -> Result<()> {
    crate::setup::run()?;
    crate::build::cargo_step("formatting", &["fmt", "--all", "--check"])?;
    crate::build::cargo_step(
        "lints",
        &[
            "clippy",
            "--all-targets",
            "-p",
            "dio-trace",
            "-p",
            "dio-trace-common",
            "-p",
            "xtask",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    crate::build::ebpf_lints()?;
    crate::build::cargo_step(
        "unit and live host tests",
        &["test", "-p", "dio-trace", "-p", "dio-trace-common", "-p", "xtask"],
    )?;

    println!("test: dist (static binary, .deb installed into a scratch root)");
    let d = crate::dist::build()?;
    crate::dist::check(&d)?;

    println!("test: kernel matrix in QEMU (kernels are downloaded or built once, then cached)");
    let opts = matrix::quiet_options();
    let kernels = matrix::kernels();
    let mut score = matrix::run(&kernels, &opts)?;
    crate::vm::verify::run(&kernels, &opts, &mut score)?;
    println!("test: XFS and f2fs in QEMU");
    crate::vm::fs_cells::run(&opts, &mut score, &[])?;

    println!("test: crash ground truth in QEMU");
    let cache = crate::kernel::Cache::from_env()?;
    let dio = traced::dio_trace_file()?;
    for spec in kernels.iter().filter(|k| k.row().is_some_and(|r| r.crash)) {
        let kernel = crate::kernel::resolve(spec, &cache)?;
        for r in crash::run(&kernel, &dio, &opts, crash::Setup::EXT4)? {
            let line = format!(
                "{spec} {}: verdict {} with {} after the crash ({})",
                r.pattern,
                r.verdict,
                r.left(),
                r.crash()
            );
            if r.agrees() {
                score.passed += 1;
                println!("PASS crash {line}");
            } else {
                score.failed += 1;
                println!("FAIL crash {line}: the verdict and the crash disagree");
            }
        }
    }
    crate::vm::fs_cells::crash(&opts, &mut score, &[])?;
    println!("vm: {} passed, {} failed", score.passed, score.failed);
    if score.failed > 0 {
        bail!("{} guest cases failed", score.failed);
    }
    Ok(())
}
