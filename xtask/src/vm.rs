//! QEMU kernel runner (to be written).
use clap::Args;

#[derive(Args)]
pub struct VmArgs {}

pub fn run(_args: VmArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
