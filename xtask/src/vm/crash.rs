//! `cargo xtask vm crash`: the tool's verdict against what survives a crash.
//!
//! Per pattern (O_SYNC, O_DSYNC), two boots on one disk. Boot 1 traces two
//! 4 KiB appends to a new file with dio-trace, then crashes the kernel at
//! once with sysrq. Boot 2 mounts the disk (replaying the journal) and
//! reads the file's size. 8192 bytes: the size update was journaled before
//! the sync ("size-kept"); 4096: it was not ("size-lost"). The verdict and
//! the size must agree: ordered with size-kept, violation with size-lost.
//!
//! Each pattern gets its own crash because any later sync commits the
//! journal, and with it an earlier write's late size update: only the last
//! write before a crash shows the truth. The journal's periodic commit is
//! pushed to 60 s in boot 1 for the same reason.
//!
//! The disk can hold XFS or f2fs instead ([`Setup`]); and the file can get a
//! second hard link before the writes, which makes every f2fs fsync take a
//! checkpoint (`need_do_checkpoint`: `CP_HARDLINK`) instead of writing node
//! pages for roll-forward recovery. The f2fs runs keep the full timeline, so
//! the sync's `cp_reason` is printed with the verdict.

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{Disk, End, Guest, VmOptions, boot};
use crate::initramfs::GuestFile;
use crate::kernel::Kernel;

const PATTERNS: [&str; 2] = ["o-sync-append", "o-dsync-append"];
const BLOCK: u64 = 4096;

/// The disk and file a crash runs on.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// "ext4", "xfs" or "f2fs".
    pub fs: &'static str,
    /// Give the file a second hard link before writing.
    pub hardlink: bool,
}

impl Setup {
    pub const EXT4: Setup = Setup {
        fs: "ext4",
        hardlink: false,
    };

    /// For labels: `f2fs+hardlink`.
    pub fn label(&self) -> String {
        format!("{}{}", self.fs, if self.hardlink { "+hardlink" } else { "" })
    }
}

/// One pattern's verdict and ground truth.
#[derive(Debug)]
pub struct CrashResult {
    pub pattern: &'static str,
    /// f2fs's `cp_reason` at the last sync's exit, when the run saw it.
    pub cp_reason: Option<i64>,
    /// dio-trace's overall verdict ("ordered" | "violation" | "inconclusive").
    pub verdict: String,
    /// Bytes that survived the crash.
    pub size: u64,
}

impl CrashResult {
    pub fn crash(&self) -> &'static str {
        match self.size {
            s if s == 2 * BLOCK => "size-kept",
            s if s == BLOCK => "size-lost",
            _ => "size-unexpected",
        }
    }

    pub fn agrees(&self) -> bool {
        matches!(
            (self.verdict.as_str(), self.crash()),
            ("ordered", "size-kept") | ("violation", "size-lost")
        )
    }
}

fn write_and_crash(pattern: &str, setup: Setup) -> String {
    let commit = if setup.fs == "ext4" {
        "mount -o remount,commit=60 /mnt\n"
    } else {
        ""
    };
    let link = if setup.hardlink {
        "touch /mnt/probe && ln /mnt/probe /mnt/probe-link\n"
    } else {
        ""
    };
    let timeline = if setup.fs == "f2fs" {
        " --full-timeline"
    } else {
        ""
    };
    format!(
        "{commit}{link}\
         dio-trace run --json{timeline} -- dio-trace write --pattern {pattern} --count 2 /mnt/probe >/tmp/out 2>/tmp/err\n\
         echo \"@@EXIT $?\"\n\
         grep '\"type\":\"summary\"' /tmp/out | sed 's/^/@@SUMMARY /'\n\
         grep -o '\"cp_reason\":[0-9-]*' /tmp/out | tail -1 | sed 's/^/@@CP /'\n\
         echo c > /proc/sysrq-trigger\n\
         sleep 5\n\
         echo 'sysrq did not crash the kernel'\n\
         exit 1\n"
    )
}

fn marked<'a>(console: &'a str, marker: &str) -> Option<&'a str> {
    console
        .lines()
        .find_map(|l| l.split(marker).nth(1))
        .map(str::trim)
}

/// Both patterns on `kernel`.
pub fn run(kernel: &Kernel, dio: &GuestFile, opts: &VmOptions, setup: Setup) -> Result<Vec<CrashResult>> {
    PATTERNS
        .iter()
        .map(|p| one(kernel, dio, p, opts, setup))
        .collect()
}

fn one(
    kernel: &Kernel,
    dio: &GuestFile,
    pattern: &'static str,
    opts: &VmOptions,
    setup: Setup,
) -> Result<CrashResult> {
    let disk = Disk::of(setup.fs, 128)?;
    let first = boot(
        &Guest {
            kernel,
            files: std::slice::from_ref(dio),
            script: &write_and_crash(pattern, setup),
            disk: Some(&disk),
        },
        opts,
    )?;
    if !matches!(first.end, End::Panicked) {
        bail!("{pattern}: boot 1 did not crash: {}", first.failure());
    }
    let summary: Value = marked(&first.console, "@@SUMMARY ")
        .and_then(|j| serde_json::from_str(j).ok())
        .with_context(|| {
            format!(
                "{pattern}: boot 1 printed no dio-trace summary: {}",
                first.failure()
            )
        })?;
    let verdict = summary["verdict"].as_str().unwrap_or("missing").to_owned();
    let cp_reason =
        marked(&first.console, "@@CP ").and_then(|c| c.trim_start_matches("\"cp_reason\":").parse().ok());
    let size = super::crash_probe::surviving_size(kernel, &disk, opts)
        .with_context(|| format!("{pattern}: boot 2"))?;
    Ok(CrashResult {
        pattern,
        cp_reason,
        verdict,
        size,
    })
}

/// The overall line: the worst verdict and the worst crash outcome.
pub fn final_line(results: &[CrashResult]) -> String {
    let verdict = if results.iter().any(|r| r.verdict == "violation") {
        "violation"
    } else if results.iter().all(|r| r.verdict == "ordered") {
        "ordered"
    } else {
        "inconclusive"
    };
    let crash = if results.iter().any(|r| r.crash() == "size-lost") {
        "size-lost"
    } else {
        "size-kept"
    };
    format!("verdict={verdict} crash={crash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(verdict: &str, size: u64) -> CrashResult {
        CrashResult {
            pattern: "o-sync-append",
            cp_reason: None,
            verdict: verdict.into(),
            size,
        }
    }

    #[test]
    fn agreement() {
        assert!(r("ordered", 8192).agrees());
        assert!(r("violation", 4096).agrees());
        assert!(
            !r("ordered", 4096).agrees(),
            "a clean verdict with a lost size is the worst outcome"
        );
        assert!(!r("violation", 8192).agrees());
        assert!(!r("inconclusive", 8192).agrees());
        assert_eq!(
            final_line(&[r("violation", 4096), r("violation", 4096)]),
            "verdict=violation crash=size-lost"
        );
        assert_eq!(
            final_line(&[r("ordered", 8192), r("ordered", 8192)]),
            "verdict=ordered crash=size-kept"
        );
    }
}
