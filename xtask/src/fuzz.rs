//! `cargo xtask fuzz`: both fuzz targets (trace reader + replay, record
//! decoder) side by side for a fixed time. Seeds come from
//! dio-trace/fuzz/seeds (traces recorded on real kernels, committed); what
//! libFuzzer finds goes to dio-trace/fuzz/corpus (not committed). Installs
//! cargo-fuzz if it is missing.

use std::process::{Child, Command};

use anyhow::{Context as _, Result, bail};
use clap::Args;

#[derive(Args)]
pub struct FuzzArgs {
    /// Seconds per target (they run at the same time, one per core).
    #[arg(long, default_value_t = 600)]
    seconds: u64,
}

const TARGETS: [&str; 2] = ["trace_reader", "record_decode"];

pub fn run(args: FuzzArgs) -> Result<()> {
    crate::setup::run()?;
    ensure_cargo_fuzz()?;
    let dir = crate::build::workspace().join("dio-trace");
    let children: Vec<(&str, Child)> = TARGETS
        .iter()
        .map(|t| {
            println!("fuzz: {t} for {} s", args.seconds);
            let corpus = dir.join("fuzz/corpus").join(t);
            std::fs::create_dir_all(&corpus)?;
            let child = Command::new("cargo")
                .args(["+nightly", "fuzz", "run", t])
                .arg(&corpus)
                .arg(dir.join("fuzz/seeds").join(t))
                .arg("--")
                .arg(format!("-max_total_time={}", args.seconds))
                .current_dir(&dir)
                .spawn()
                .with_context(|| format!("starting cargo fuzz run {t}"))?;
            Ok((*t, child))
        })
        .collect::<Result<_>>()?;
    let mut failed = Vec::new();
    for (t, mut c) in children {
        if !c.wait()?.success() {
            failed.push(t);
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets found crashes: {} (see dio-trace/fuzz/artifacts)",
            failed.join(", ")
        );
    }
    println!("fuzz: no crashes in {} s per target", args.seconds);
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    println!("fuzz: installing cargo-fuzz (once)");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed");
    }
    Ok(())
}
