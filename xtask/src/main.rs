//! Project tasks: `cargo xtask <command>`. Subcommands only; each lives in
//! its own module.

mod bench;
mod build;
mod demo;
mod dist;
#[cfg(test)]
mod doc_links;
mod fuzz;
mod initramfs;
mod kernel;
mod mutants;
mod setup;
mod test;
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
    /// Install what dio-trace needs (Debian packages, nightly + rust-src,
    /// bpf-linker), build it, and verify this host on a scratch ext4 image.
    Demo,
    /// Install what dio-trace needs, then run every test CI runs.
    Test,
    /// Only install what dio-trace needs, saying what it does.
    Setup,
    /// Boot kernels in QEMU and run dio-trace inside them.
    Vm(vm::VmArgs),
    /// Resolve a kernel spec (download or build it) and print its paths.
    Kernel(kernel::KernelArgs),
    /// Measure what dio-trace costs fio workloads on a scratch ext4, beside
    /// untraced runs and an equivalent bpftrace script (BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Build what hosts install: the static release binary and a .deb with
    /// it, the systemd unit and the alert rules (target/dist/), and check
    /// both (no dynamic dependencies; dpkg -i into a scratch root works).
    Dist,
    /// Fuzz the trace reader and the record decoder (cargo-fuzz, nightly).
    Fuzz(fuzz::FuzzArgs),
    /// Mutation testing (cargo-mutants, installed on first use) over the
    /// engine and the scoring of the QEMU cells; `.cargo/mutants.toml`
    /// says what is mutated and which mutants are equivalent. Run before
    /// each release (too slow for CI).
    Mutants(mutants::MutantsArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo => std::process::exit(demo::run()?),
        Command::Test => test::run(),
        Command::Setup => setup::run(),
        Command::Vm(args) => vm::run(args),
        Command::Kernel(args) => kernel::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Dist => dist::run(),
        Command::Mutants(args) => mutants::run(args),
    }
}
