//! The main job on this host: set up, build, and run `dio-trace verify` on
//! a scratch ext4 image (every write pattern, one verdict each).

use std::process::Command;

use anyhow::{Context as _, Result};

pub fn run() -> Result<i32> {
    crate::setup::for_demo()?;
    println!("demo: building dio-trace (release)");
    crate::build::release()?;
    let bin = crate::build::release_binary();
    println!("demo: {} verify", bin.display());
    let status = Command::new(&bin)
        .arg("verify")
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    Ok(status.code().unwrap_or(4))
}
