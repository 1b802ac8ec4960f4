//! `cargo xtask bench` (issue 5): what tracing costs a direct-I/O workload.
//!
//! Three fio workloads run on a scratch ext4 loop device, each under three
//! conditions: untraced, under `dio-trace watch`, and under
//! `xtask/bench/dio-ordering.bt` (the same ordering check in bpftrace maps,
//! the baseline of NOTES §6). All of it happens in one invocation and the
//! ratios are taken within it: IOPS from different runs of a shared 2-core
//! VM do not compare.
//!
//! The conditions are interleaved within each repetition and their order is
//! rotated from one repetition to the next, so slow drift of the machine
//! (other builds, the backing file growing) spreads over all three instead
//! of weighing on one.

mod fio;
mod host;
mod report;
mod scratch;
mod tracer;

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use fio::Workload;
use report::{Machine, Sample};
use scratch::ScratchFs;
use tracer::{Condition, Tools};

/// Sparse scratch image; only what fio writes takes disk space.
const MIN_IMAGE_BYTES: u64 = 4 << 30;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Seconds each fio run lasts ("10" or "10s").
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    runtime: u32,
    /// How many times each (workload, condition) runs; shows the spread.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Workloads to run, comma-separated: a (O_DIRECT|O_SYNC appends),
    /// b (O_DIRECT overwrites, libaio, iodepth 16), c (16 O_SYNC appenders).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c")]
    workloads: Vec<Workload>,
    /// Print the table but leave BENCHMARKS.md alone.
    #[arg(long)]
    no_write: bool,
    /// Run dio-trace with `--stacks`: a kernel stack at the size update and
    /// the sync of every counted write (by default only writes that are not
    /// ordered take them, and on a fixed kernel none is). Compare with a
    /// run without it for what stacks cost.
    #[arg(long)]
    stacks: bool,
    /// The bpftrace baseline. `xtask/bench/dio-ordering-new-extent.bt` adds
    /// the check a default `watch` also makes of sync writes into new or
    /// unwritten blocks, with its mapping probe: the same work as dio-trace.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_SCRIPT)]
    script: PathBuf,
}

/// The baseline of NOTES §6: the size-ordering check alone.
const DEFAULT_SCRIPT: &str = "xtask/bench/dio-ordering.bt";

/// `10`, `10s`: whole seconds, at least one.
fn parse_secs(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .strip_suffix('s')
        .unwrap_or(s)
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if n == 0 {
        return Err("the runtime must be at least 1 second".into());
    }
    Ok(n)
}

pub fn run(args: BenchArgs) -> Result<()> {
    // Before anything is built or mounted: a mistyped --script fails at once.
    let script = script_path(&args.script)?;
    host::require_root()?;
    host::require_tools()?;
    let _stats = host::BpfStats::enable()?;
    println!("bench: building dio-trace (release)");
    crate::build::release()?;
    let machine = Machine::probe().context("reading this machine's facts")?;
    host::stop_on_signals()?;

    let fs = ScratchFs::create(image_bytes(args.runtime)).context("making the scratch ext4")?;
    println!(
        "bench: scratch ext4 on {} at {}",
        fs.device(),
        fs.mount().display()
    );
    let tools = Tools {
        dio_trace: crate::build::release_binary(),
        script,
        logs: fs.work_dir().to_path_buf(),
        stacks: args.stacks,
    };
    let runner = fio::Runner::new(fs.mount(), fs.work_dir(), args.runtime);
    prepare(&args.workloads, &runner)?;
    let samples = measure(&args, &runner, &tools)?;
    drop(fs);

    let setup = report::Setup {
        command: command_line(),
        machine: machine.finished(),
        runtime: args.runtime,
        repeat: args.repeat,
    };
    publish(&report::section(&setup, &samples), args.no_write)
}

/// Lay out workload b's file and run each workload once untimed, so no
/// measured run pays for a fresh filesystem.
fn prepare(workloads: &[Workload], runner: &fio::Runner) -> Result<()> {
    if workloads.contains(&Workload::B) {
        println!("bench: laying out the file workload b overwrites");
        runner.prepare_overwrites()?;
    }
    for &workload in workloads {
        println!("bench: warming up workload {} (untimed)", workload.name());
        host::settle()?;
        runner.warm_up(workload)?;
    }
    Ok(())
}

/// Print the section; unless told not to, put it into BENCHMARKS.md.
fn publish(section: &str, no_write: bool) -> Result<()> {
    println!("\n{section}");
    if no_write {
        println!("bench: --no-write: BENCHMARKS.md left alone");
        return Ok(());
    }
    let path = crate::build::workspace().join("BENCHMARKS.md");
    report::write_section(&path, section)?;
    println!("bench: results written to {}", path.display());
    Ok(())
}

/// Every (repetition, workload, condition) once, conditions rotated.
fn measure(args: &BenchArgs, runner: &fio::Runner, tools: &Tools) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for rep in 0..args.repeat {
        for &workload in &args.workloads {
            for condition in Condition::rotated(rep as usize) {
                host::check_interrupted()?;
                host::settle()?;
                let sample = run_one(runner, tools, workload, condition)
                    .with_context(|| format!("workload {} {}", workload.name(), condition.name()))?;
                println!(
                    "bench: repeat {}/{} workload {} {:<9} {:>9.0} IOPS",
                    rep + 1,
                    args.repeat,
                    workload.name(),
                    condition.name(),
                    sample.iops
                );
                samples.push(sample);
            }
        }
    }
    Ok(samples)
}

/// One fio run under one condition. The tracer is attached before fio
/// starts and stopped after it ends, so the whole run is traced.
fn run_one(runner: &fio::Runner, tools: &Tools, workload: Workload, condition: Condition) -> Result<Sample> {
    let tracer = tools.start(condition)?;
    // On a fio error `tracer` is dropped, which stops it too.
    let iops = runner.run(workload)?;
    let facts = tracer.map(tracer::Running::stop).transpose()?;
    Ok(Sample {
        workload,
        condition,
        iops,
        facts,
    })
}

/// Room for the largest append run plus workload b's file, at least
/// [`MIN_IMAGE_BYTES`].
fn image_bytes(runtime: u32) -> u64 {
    (2 * fio::append_bytes(runtime) + (2 << 30)).max(MIN_IMAGE_BYTES)
}

/// `script` as given, or from the workspace's root when relative (cargo
/// runs xtask there, but the user may type it from anywhere).
fn script_path(script: &std::path::Path) -> Result<PathBuf> {
    let path = if script.is_absolute() || script.is_file() {
        script.to_path_buf()
    } else {
        crate::build::workspace().join(script)
    };
    if !path.is_file() {
        bail!(
            "the bpftrace baseline {} is missing: give --script a bpftrace file that prints \"dio-ordering: tracing\" from BEGIN",
            path.display()
        );
    }
    Ok(path)
}

/// What the user typed after `cargo xtask`, for the record in BENCHMARKS.md.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_baselines_are_found_from_the_workspace_and_a_missing_one_is_named() {
        for script in [DEFAULT_SCRIPT, "xtask/bench/dio-ordering-new-extent.bt"] {
            let path = script_path(std::path::Path::new(script)).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.contains("dio-ordering: tracing"),
                "{script} prints no ready line"
            );
        }
        let why = format!(
            "{:#}",
            script_path(std::path::Path::new("no/such.bt")).unwrap_err()
        );
        assert!(why.contains("no/such.bt") && why.contains("--script"), "{why}");
    }

    #[test]
    fn runtime_takes_plain_or_suffixed_seconds() {
        assert_eq!(parse_secs("10"), Ok(10));
        assert_eq!(parse_secs("5s"), Ok(5));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("1m").is_err());
    }

    #[test]
    fn image_holds_two_append_runs() {
        assert_eq!(image_bytes(10), MIN_IMAGE_BYTES);
        assert!(image_bytes(600) >= 2 * fio::append_bytes(600));
    }
}
