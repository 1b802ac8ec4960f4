//! The README's test command: everything CI runs, in order. Formatting,
//! lints, unit tests, live host tests (real BPF in this kernel), then the
//! kernel matrix and the crash checks in QEMU guests. The last line is
//! `vm: N passed, M failed` over the guest cases.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::kernel::KernelSpec;
use crate::vm::{crash, matrix, matrix::Score, traced};

/// How long each stage took. Printed as a table before the closing line
/// (and when a stage fails), so that a slow run, a cold CI run above all,
/// says where its time went.
#[derive(Default)]
struct Stages(Vec<(&'static str, Duration)>);

impl Stages {
    fn time<T>(&mut self, name: &'static str, stage: impl FnOnce() -> Result<T>) -> Result<T> {
        let start = Instant::now();
        let out = stage();
        self.0.push((name, start.elapsed()));
        out
    }

    fn table(&self) -> String {
        let total: Duration = self.0.iter().map(|(_, d)| *d).sum();
        let mut t = String::from("test: time per stage\n| stage | time |\n|---|---|\n");
        for (name, d) in self.0.iter().chain([&("total", total)]) {
            let s = d.as_secs();
            t += &format!("| {name} | {} min {:02} s |\n", s / 60, s % 60);
        }
        t
    }
}

pub fn run() -> Result<()> {
    let mut stages = Stages::default();
    let result = stages_of_the_run(&mut stages);
    print!("{}", stages.table());
    let score = result?;
    println!("vm: {} passed, {} failed", score.passed, score.failed);
    if score.failed > 0 {
        bail!("{} guest cases failed", score.failed);
    }
    Ok(())
}

fn stages_of_the_run(stages: &mut Stages) -> Result<Score> {
    stages.time("setup", crate::setup::run)?;
    stages.time("formatting", || {
        crate::build::cargo_step("formatting", &["fmt", "--all", "--check"])
    })?;
    stages.time("lints", || {
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
        crate::build::ebpf_lints()
    })?;
    stages.time("unit and live host tests", || {
        crate::build::cargo_step(
            "unit and live host tests",
            &["test", "-p", "dio-trace", "-p", "dio-trace-common", "-p", "xtask"],
        )
    })?;
    stages.time("dist", || {
        println!("test: dist (static binary, .deb installed into a scratch root)");
        let d = crate::dist::build()?;
        crate::dist::check(&d)
    })?;

    let opts = matrix::quiet_options();
    let kernels = matrix::kernels();
    let cache = crate::kernel::Cache::from_env()?;
    stages.time("kernels (download or build, then cached)", || {
        println!("test: kernels of the matrix (downloaded or built once, then cached)");
        crate::kernel::named::NAMED
            .iter()
            .try_for_each(|k| crate::kernel::resolve(&KernelSpec::Named(k), &cache).map(drop))
    })?;
    let mut score = stages.time("kernel matrix in QEMU", || {
        println!("test: kernel matrix in QEMU");
        matrix::run(&kernels, &opts)
    })?;
    stages.time("verify in QEMU", || {
        crate::vm::verify::run(&kernels, &opts, &mut score)
    })?;
    stages.time("XFS, f2fs and btrfs in QEMU", || {
        println!("test: XFS, f2fs and btrfs in QEMU");
        crate::vm::fs_cells::run(&opts, &Default::default(), &mut score)
    })?;
    stages.time("crash ground truth in QEMU", || {
        println!("test: crash ground truth in QEMU");
        let dio = traced::dio_trace_file()?;
        let specs: Vec<&KernelSpec> = kernels
            .iter()
            .filter(|k| k.row().is_some_and(|r| r.crash))
            .collect();
        let resolved = specs
            .iter()
            .map(|spec| crate::kernel::resolve(spec, &cache))
            .collect::<Result<Vec<_>>>()?;
        let cells: Vec<_> = resolved.iter().map(|k| (k, crash::Setup::EXT4)).collect();
        for (spec, results) in specs.iter().zip(crash::run_all(&cells, &dio, &opts)?) {
            for r in results {
                let line = format!(
                    "{spec} {}: verdict {} with {} after the crash ({})",
                    r.pattern,
                    r.verdict,
                    r.left(),
                    r.crash()
                );
                score.record(r.disagreement(), format_args!("crash {line}"));
            }
        }
        crate::vm::fs_cells::crash(&opts, &Default::default(), &mut score)
    })?;
    Ok(score)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_table_times_each_stage_and_fails_with_it() {
        let mut stages = Stages::default();
        assert_eq!(stages.time("one", || Ok(7)).unwrap(), 7);
        assert!(stages.time("two", || -> Result<()> { bail!("no") }).is_err());
        let t = stages.table();
        assert!(t.contains("| one | 0 min 00 s |") && t.contains("| two |"), "{t}");
        assert!(t.trim_end().ends_with("| total | 0 min 00 s |"), "{t}");
    }
}
