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
/// Printed with the count of the file's non-zero bytes: the data that
/// survived (writers write non-zero bytes; an unwritten extent reads zeros).
const DATA_MARKER: &str = "crash-probe-data=";
/// Printed when the file itself did not survive.
const MISSING_MARKER: &str = "crash-probe-file=missing";

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

/// Boot 2: mounting replays the journal; report what is left of `path`.
/// A missing file is an outcome to report, not an error.
fn read_size(path: &str) -> String {
    format!(
        "if [ -e {path} ]; then\n\
             stat -c 'crash-probe-size=%s' {path}\n\
             echo \"crash-probe-data=$(tr -d '\\000' < {path} | wc -c)\"\n\
         else\n\
             echo crash-probe-file=missing\n\
         fi\n"
    )
}

/// What a file had after the crash and the remount (shared with
/// `dio-trace verify --crash`).
pub use dio_trace_common::crash::Survived;

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
    match survivors(kernel, &disk, opts, "/mnt/probe")? {
        Survived::File { size, .. } => Ok(size),
        // Reported as 0 bytes: the file's creation was not committed either.
        Survived::Missing => Ok(0),
    }
}

/// Boot `kernel` on `disk` after a crash: mounting replays the journal;
/// returns what is left of `path` (`/mnt/...`).
pub fn survivors(kernel: &Kernel, disk: &Disk, opts: &VmOptions, path: &str) -> Result<Survived> {
    let (code, console) = run_script(
        &Guest {
            kernel,
            files: &[],
            script: &read_size(path),
            disk: Some(disk),
        },
        opts,
    )?;
    if code != 0 {
        bail!("boot 2 could not read {path} (status {code})");
    }
    parse_survivors(&console).context("boot 2 printed neither the file's size nor that it is missing")
}

/// What the second boot's console says survived.
fn parse_survivors(console: &str) -> Option<Survived> {
    if console.lines().any(|l| l.trim() == MISSING_MARKER) {
        return Some(Survived::Missing);
    }
    let value = |marker: &str| {
        console
            .lines()
            .find_map(|l| l.split(marker).nth(1)?.trim().parse().ok())
    };
    Some(Survived::File {
        size: value(SIZE_MARKER)?,
        data: value(DATA_MARKER)?,
    })
}

/// What a surviving size says about the kernel.
pub fn verdict(size: u64) -> &'static str {
    match size {
        s if s == 2 * BLOCK => "the size update was journaled before the sync: fixed ordering",
        s if s == BLOCK => "the last size update was lost: the kernel syncs before journaling the size (bug)",
        0 => "nothing survived (0 bytes, or no file at all): no sync committed the writes (bug)",
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
    fn survivors_are_found_among_kernel_lines() {
        let console = "[ 1.0] EXT4-fs (vda): recovery complete\ncrash-probe-size=8192\ncrash-probe-data=4096\nDIO-TRACE-VM-EXIT=0\n";
        assert_eq!(
            parse_survivors(console),
            Some(Survived::File {
                size: 8192,
                data: 4096
            })
        );
        assert_eq!(
            parse_survivors("x\ncrash-probe-file=missing\n"),
            Some(Survived::Missing)
        );
        assert_eq!(parse_survivors("nothing"), None);
    }

    #[test]
    fn verdicts_name_the_bug() {
        assert!(verdict(4096).contains("bug"));
        assert!(verdict(8192).contains("fixed"));
        assert!(verdict(0).contains("nothing survived"));
        assert!(verdict(12288).contains("unexpected"));
    }
}
