//! Booting kernels in QEMU with a one-shot userspace.
//!
//! A boot is: resolve a kernel, build an initramfs holding busybox, the
//! caller's static binaries and a script, start QEMU (TCG: nested KVM does
//! not work on the project's machines, NOTES §3), read the serial console
//! until the guest reports the script's exit status or panics or the time
//! runs out. An optional ext4 scratch disk can outlive one boot, which is
//! what crash tests need.
//!
//! CLI: `cargo xtask vm {run,verify,matrix,crash,crash-probe,shell}`. Other
//! xtask code calls [`boot`] or [`run_script`].

mod cli;
mod console;
pub mod crash;
mod crash_probe;
pub mod crash_truth;
pub mod disk;
mod fixtures;
pub mod fs_cells;
pub mod matrix;
mod qemu;
pub mod side_by_side;
pub mod traced;
pub mod verify;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};

pub use cli::{VmArgs, run};
pub use console::{End, Outcome};
pub use crash_probe::crash_probe;
pub use disk::Disk;

use crate::initramfs::{self, GuestFile};
use crate::kernel::Kernel;
use crate::kernel::host::progress;

/// How much of the console to show while the guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleMode {
    /// Echo every console line to stdout as it arrives.
    Stream,
    /// Show nothing; failures carry the last lines in their error.
    Quiet,
}

/// Knobs of one boot.
#[derive(Clone, Debug)]
pub struct VmOptions {
    /// Kill the guest after this long.
    pub timeout: Duration,
    pub console: ConsoleMode,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Extra kernel command-line words.
    pub append: Vec<String>,
    /// How the scratch disk is attached.
    pub disk_bus: DiskBus,
}

/// How QEMU attaches the scratch disk. The two differ in what a DSYNC
/// direct write may skip (NOTES §9): virtio-blk has a volatile write
/// cache and no FUA, so every such write needs a flush; NVMe has both, so
/// a pure overwrite may go out as a FUA write with no sync at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DiskBus {
    /// virtio-blk (`/dev/vda`): write cache, no FUA.
    #[default]
    Virtio,
    /// NVMe (`/dev/nvme0n1`): volatile write cache with FUA.
    Nvme,
}

impl Default for VmOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            console: ConsoleMode::Stream,
            memory_mib: 1024,
            cpus: 2,
            append: Vec::new(),
            disk_bus: DiskBus::Virtio,
        }
    }
}

/// What to boot and run.
pub struct Guest<'a> {
    pub kernel: &'a Kernel,
    /// Static binaries and other files for the guest.
    pub files: &'a [GuestFile],
    /// Shell script run once the guest is up; its status is the result.
    pub script: &'a str,
    /// Scratch disk, mounted on `/mnt` in the guest.
    pub disk: Option<&'a Disk>,
}

/// How many times a guest is booted when its kernel dies before `/init`.
const BOOT_ATTEMPTS: u32 = 3;

/// Boots `guest` and reports how it ended. A kernel that dies before it
/// runs `/init` ran nothing of ours, so that boot is repeated (loudly, at
/// most [`BOOT_ATTEMPTS`] boots in all); anything after `/init` started is
/// the result.
pub fn boot(guest: &Guest<'_>, opts: &VmOptions) -> Result<Outcome> {
    let work = tempfile::tempdir().context("creating a temporary directory for the initramfs")?;
    let initrd: PathBuf = work.path().join("initramfs.cpio.gz");
    let spec = initramfs::Spec {
        kernel: guest.kernel,
        files: guest.files,
        script: guest.script,
        mount_disk: guest.disk.map(Disk::fs),
    };
    initramfs::build(&spec, &initrd).context("building the initramfs")?;
    let qemu = qemu::Boot {
        kernel: guest.kernel,
        initrd: &initrd,
        disk: guest.disk.map(Disk::path),
        opts,
    };
    let mut attempt = 1;
    loop {
        let outcome = qemu::run(&qemu)?;
        if attempt == BOOT_ATTEMPTS || !outcome.died_before_init() {
            return Ok(outcome);
        }
        progress(format_args!(
            "RETRY: the kernel died in its own boot, before /init ran (boot {attempt} of {BOOT_ATTEMPTS}); \
             nothing of the test had run; console tail:\n{}",
            outcome.tail(8)
        ));
        attempt += 1;
    }
}

/// Boots `guest` and returns the script's exit status and the full console
/// text. Fails (with the console's last lines) if the guest did not get to
/// report a status: init error, panic, timeout.
pub fn run_script(guest: &Guest<'_>, opts: &VmOptions) -> Result<(i32, String)> {
    let outcome = boot(guest, opts)?;
    let code = outcome.exit_code()?;
    Ok((code, outcome.console))
}
