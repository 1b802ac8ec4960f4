//! The other filesystems in the matrix: XFS and f2fs on the Debian kernels
//! that ship them (XFS as a module everywhere, f2fs in the generic
//! flavours only), each cell a real `dio-trace run` on a scratch disk of
//! that filesystem in the guest.
//!
//! What a cell must show follows from the filesystem's facts (NOTES §8,
//! and the crash ground truth in the README): XFS logs the size in its
//! `end_io`, before iomap's sync, in every version; f2fs syncs inside
//! `iomap_dio_complete` while `i_size` is old and writes the size after.

use anyhow::Result;

use super::matrix::{Score, Want, judge, parse};
use super::{VmOptions, traced};
use crate::initramfs::GuestFile;
use crate::kernel::{self, Cache, KernelSpec};

/// One filesystem on one kernel, with the backends to force there.
pub struct FsCell {
    pub kernel: &'static str,
    pub fs: &'static str,
    pub backends: &'static [&'static str],
}

/// Where each filesystem is checked: the kernels that ship it, through
/// kprobes (every Debian kernel has them), and through tracepoints where
/// iomap has its own (6.4+; XFS's are then raw tracepoints of a module).
pub const FS_CELLS: &[FsCell] = &[
    FsCell {
        kernel: "debian-6.1",
        fs: "xfs",
        backends: &["kprobe"],
    },
    FsCell {
        kernel: "debian-6.12",
        fs: "xfs",
        backends: &["kprobe", "tracepoint"],
    },
    FsCell {
        kernel: "debian-7.3",
        fs: "xfs",
        backends: &["kprobe", "tracepoint"],
    },
    FsCell {
        kernel: "debian-6.1-generic",
        fs: "f2fs",
        backends: &["kprobe"],
    },
    FsCell {
        kernel: "debian-6.12-generic",
        fs: "f2fs",
        backends: &["kprobe"],
    },
];

/// The order a filesystem's direct writes complete in, as its code has it.
pub fn want(fs: &str) -> Want {
    match fs {
        "f2fs" => Want::Violation,
        _ => Want::Ordered,
    }
}

/// (pattern, `--count`, writes the kernel makes).
const PATTERNS: [(&str, u64, u64); 3] = [
    ("o-sync-append", 3, 3),
    ("o-dsync-append", 3, 3),
    ("o-append-dsync", 3, 3),
];

fn script(backends: &[&str]) -> String {
    let mut s = String::from("set +e\n");
    for b in backends {
        for (p, count, _) in PATTERNS {
            s += &format!(
                "dio-trace run --backend {b} --json -- dio-trace write --pattern {p} --count {count} /mnt/{b}-{p} >/tmp/out 2>/tmp/err\n\
                 echo \"@@CASE {b} {p} $?\"\n\
                 grep '\"type\":\"summary\"' /tmp/out | sed 's/^/@@SUMMARY /'\n\
                 echo \"@@SBSU $(grep '\"type\":\"violation\"' /tmp/out | grep -c '\"kind\":\"sync_before_size_update\"')\"\n\
                 sed 's/^/@@ERR /' /tmp/err | head -5\n"
            );
        }
    }
    s + "exit 0\n"
}

/// Every cell; prints a PASS/FAIL line per case into `score`.
pub fn run(opts: &VmOptions, score: &mut Score) -> Result<()> {
    let cache = Cache::from_env()?;
    let dio: GuestFile = traced::dio_trace_file()?;
    for cell in FS_CELLS {
        let spec = KernelSpec::Named(kernel::named::find(cell.kernel).expect("a named kernel"));
        let kernel = kernel::resolve(&spec, &cache)?;
        let outcome = traced::boot_with_dio_on(cell.fs, &kernel, &dio, &script(cell.backends), opts)?;
        let seen = parse(&outcome.console);
        for b in cell.backends {
            for case_def @ (p, _, _) in PATTERNS {
                let case = seen
                    .iter()
                    .find(|((sb, sp), _)| sb == b && sp == p)
                    .map(|(_, s)| s);
                let why = match case {
                    Some(s) => judge(want(cell.fs), b, case_def, s),
                    None => Some(format!(
                        "the guest did not report this case: {}",
                        outcome.failure()
                    )),
                };
                score.record(
                    why,
                    format_args!("{} {} {b} {p}: {:?}", cell.kernel, cell.fs, want(cell.fs)),
                );
            }
        }
        println!(
            "xtask: {} on {}: {:.1} s in QEMU",
            cell.fs,
            cell.kernel,
            outcome.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_name_real_kernels() {
        for c in FS_CELLS {
            assert!(kernel::named::find(c.kernel).is_some(), "{}", c.kernel);
            assert!(["xfs", "f2fs"].contains(&c.fs));
        }
        assert_eq!(want("xfs"), Want::Ordered);
    }
}
