//! The README's test command: everything CI runs, in order, stopping at
//! the first failure. Unit tests, live host tests (real BPF in this kernel),
//! formatting and lints.

use anyhow::Result;

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
    crate::build::cargo_step(
        "unit and live host tests",
        &["test", "-p", "dio-trace", "-p", "dio-trace-common"],
    )?;
    println!("test: all passed");
    Ok(())
}
