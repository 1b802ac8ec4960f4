//! The ground-truth test of NOTES §4, without any tracing: append 4 KiB
//! twice with O_DIRECT|O_SYNC to a new file, crash the kernel at once with
//! sysrq, boot again on the same disk and read the file size. A fixed
//! kernel journaled each new size before the write returned and keeps
//! 8192 bytes; a buggy one synced before the size update and keeps 4096.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::{Disk, End, Guest, VmOptions, boot, run_script};
use crate::initramfs::GuestFile;
use crate::kernel::Kernel;
use crate::kernel::cache::{Cache, hash_parts};
use crate::kernel::host::{self, ensure_packages, progress};

/// Source of the guest helper that does the appends.
const DIO_APPEND_C: &str = include_str!("../../guest/dio-append.c");
/// Bytes per append; two appends are made.
const BLOCK: u64 = 4096;
/// Printed by the second boot's script with the surviving size.
const SIZE_MARKER: &str = "crash-probe-size=";

/// Boot 1: appends, then crash before anything else can sync.
const WRITE_AND_CRASH: &str = r#"set -e
echo "crash-probe: two O_DIRECT|O_SYNC appends of 4096 bytes to /mnt/probe"
dio-append /mnt/probe 2 4096
echo "crash-probe: crashing the kernel now"
echo c > /proc/sysrq-trigger
sleep 5
echo "crash-probe: sysrq did not crash the kernel"
exit 1
"#;

/// Boot 2: mounting replays the journal; report what survived.
const READ_SIZE: &str = "stat -c 'crash-probe-size=%s' /mnt/probe\n";

/// Runs the two boots on `kernel` and returns the file size that survived.
pub fn crash_probe(kernel: &Kernel, cache: &Cache, opts: &VmOptions) -> Result<u64> {
    let helper = dio_append(cache)?;
    let files = [GuestFile {
        host: helper,
        guest: "/bin/dio-append".into(),
    }];
    let disk = Disk::ext4(128)?;

    progress(format_args!(
        "crash-probe boot 1 of 2 ({}): append, then crash",
        kernel.spec
    ));
    let first = boot(
        &Guest {
            kernel,
            files: &files,
            script: WRITE_AND_CRASH,
            disk: Some(&disk),
        },
        opts,
    )?;
    match &first.end {
        End::Panicked => {}
        End::Exited(code) => bail!(
            "boot 1 did not crash (script exited with {code}): {}",
            first.failure()
        ),
        _ => bail!("boot 1 failed: {}", first.failure()),
    }
    if !first.console.contains(&format!("size now {}", 2 * BLOCK)) {
        bail!(
            "boot 1 crashed before both appends completed: {}",
            first.failure()
        );
    }

    progress(format_args!(
        "crash-probe boot 2 of 2 ({}): remount and measure",
        kernel.spec
    ));
    surviving_size(kernel, &disk, opts)
}

/// Boot `kernel` on `disk` after a crash: mounting replays the journal;
/// returns the size of /mnt/probe that survived.
pub fn surviving_size(kernel: &Kernel, disk: &Disk, opts: &VmOptions) -> Result<u64> {
    let (code, console) = run_script(
        &Guest {
            kernel,
            files: &[],
            script: READ_SIZE,
            disk: Some(disk),
        },
        opts,
    )?;
    if code != 0 {
        bail!("boot 2 could not stat /mnt/probe (status {code})");
    }
    parse_size(&console).context("boot 2 printed no file size")
}

/// The surviving size from the second boot's console.
fn parse_size(console: &str) -> Option<u64> {
    console
        .lines()
        .find_map(|l| l.split(SIZE_MARKER).nth(1)?.trim().parse().ok())
}

/// What a surviving size says about the kernel.
pub fn verdict(size: u64) -> &'static str {
    match size {
        s if s == 2 * BLOCK => "the size update was journaled before the sync: fixed ordering",
        s if s == BLOCK => "the last size update was lost: the kernel syncs before journaling the size (bug)",
        _ => "unexpected size: neither the fixed (8192) nor the buggy (4096) outcome",
    }
}

/// The guest helper, built with `gcc -static` once per source version.
fn dio_append(cache: &Cache) -> Result<PathBuf> {
    let key = hash_parts(&[DIO_APPEND_C.as_bytes()]);
    let dir = cache.entry(
        format!("guest-bin/dio-append-{}", &key[..16]),
        "dio-append helper",
        |dir| {
            ensure_packages(&["gcc", "libc6-dev"])?;
            compile(dir)
        },
    )?;
    Ok(dir.join("dio-append"))
}

fn compile(dir: &Path) -> Result<()> {
    let src = dir.join("dio-append.c");
    std::fs::write(&src, DIO_APPEND_C).context("writing dio-append.c")?;
    progress("compiling guest/dio-append.c (gcc -static)");
    host::output(
        Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
            .arg(dir.join("dio-append"))
            .arg(&src),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_found_among_kernel_lines() {
        let console = "[ 1.0] EXT4-fs (vda): recovery complete\ncrash-probe-size=4096\nDIO-TRACE-VM-EXIT=0\n";
        assert_eq!(parse_size(console), Some(4096));
        assert_eq!(parse_size("nothing"), None);
    }

    #[test]
    fn verdicts_name_the_bug() {
        assert!(verdict(4096).contains("bug"));
        assert!(verdict(8192).contains("fixed"));
        assert!(verdict(0).contains("unexpected"));
    }
}
