//! `cargo xtask vm ...` subcommands.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use super::crash_probe::verdict;
use super::{ConsoleMode, Disk, Guest, VmOptions, boot, crash_probe};
use crate::initramfs::GuestFile;
use crate::kernel::{self, Cache, KernelSpec};

#[derive(Args)]
pub struct VmArgs {
    #[command(subcommand)]
    command: VmCommand,
}

#[derive(Subcommand)]
enum VmCommand {
    /// Boot a kernel and run a shell command in the guest; exits with the
    /// command's status.
    Run(RunArgs),
    /// Append 4 KiB twice with O_DIRECT|O_SYNC, crash, reboot on the same
    /// disk and print the surviving size (fixed: 8192, buggy: 4096).
    CrashProbe(CrashProbeArgs),
}

/// Options every boot takes.
#[derive(Args)]
struct BootArgs {
    /// debian-6.1, debian-6.12, buggy-6.1, or a path to a bzImage or linux-image .deb.
    #[arg(long)]
    kernel: KernelSpec,
    /// Seconds before the guest is killed (per boot).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Show the console only if the boot fails.
    #[arg(long)]
    quiet: bool,
    /// Extra kernel command-line word (repeatable).
    #[arg(long = "append", value_name = "WORD")]
    append: Vec<String>,
}

impl BootArgs {
    fn options(&self) -> VmOptions {
        VmOptions {
            timeout: Duration::from_secs(self.timeout),
            console: if self.quiet {
                ConsoleMode::Quiet
            } else {
                ConsoleMode::Stream
            },
            append: self.append.clone(),
            ..VmOptions::default()
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    boot: BootArgs,
    /// Static binary to copy into the guest's /bin (repeatable).
    #[arg(long = "binary", value_name = "HOST_PATH")]
    binaries: Vec<PathBuf>,
    /// Attach a fresh 128 MiB ext4 scratch disk, mounted on /mnt.
    #[arg(long)]
    disk: bool,
    /// Shell command run in the guest (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Args)]
struct CrashProbeArgs {
    #[command(flatten)]
    boot: BootArgs,
    /// Fail unless this many bytes survive (8192 fixed, 4096 buggy).
    #[arg(long, value_name = "BYTES")]
    expect: Option<u64>,
}

/// Entry point of `cargo xtask vm`.
pub fn run(args: VmArgs) -> Result<()> {
    match args.command {
        VmCommand::Run(a) => vm_run(a),
        VmCommand::CrashProbe(a) => vm_crash_probe(a),
    }
}

fn vm_run(args: RunArgs) -> Result<()> {
    // Check the binaries first: resolving the kernel may build one.
    let files = args
        .binaries
        .iter()
        .map(GuestFile::in_bin)
        .collect::<Result<Vec<_>>>()?;
    let cache = Cache::from_env()?;
    let kernel = kernel::resolve(&args.boot.kernel, &cache)?;
    let disk = if args.disk { Some(Disk::ext4(128)?) } else { None };
    let script = format!("{}\n", args.command.join(" "));
    let outcome = boot(
        &Guest {
            kernel: &kernel,
            files: &files,
            script: &script,
            disk: disk.as_ref(),
        },
        &args.boot.options(),
    )?;
    let code = outcome.exit_code()?;
    if args.boot.quiet {
        println!("{}", outcome.script_output());
    }
    match code {
        0 => Ok(()),
        code => std::process::exit(code),
    }
}

fn vm_crash_probe(args: CrashProbeArgs) -> Result<()> {
    let cache = Cache::from_env()?;
    let kernel = kernel::resolve(&args.boot.kernel, &cache)?;
    let size = crash_probe(&kernel, &cache, &args.boot.options())?;
    println!(
        "crash-probe: {}: {size} bytes survived; {}",
        args.boot.kernel,
        verdict(size)
    );
    match args.expect {
        Some(want) if want != size => bail!("expected {want} bytes to survive, found {size}"),
        _ => Ok(()),
    }
}
