//! Project tasks: `cargo xtask <command>`. Subcommands only; each lives in
//! its own module.

mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "dio-trace's build, VM and kernel tooling")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot kernels in QEMU and run dio-trace inside them.
    Vm(vm::VmArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Vm(args) => vm::run(args),
    }
}
