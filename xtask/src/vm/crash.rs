//! `cargo xtask vm crash`: the tool's verdict against what survives a crash.
//!
//! Per pattern (O_SYNC and O_DSYNC appends, O_DSYNC writes into fallocated
//! space), two boots on one disk. Boot 1 traces two 4 KiB writes to a new
//! file with dio-trace, then crashes the kernel at once with sysrq. Boot 2
//! mounts the disk (replaying the journal) and reads what is left of the
//! file: 8192 bytes of written (non-zero) data is "size-kept"; less size
//! is "size-lost" (the size update was not journaled before the sync);
//! the size but not the data is "data-lost" (an unwritten extent's
//! conversion was never committed: it reads as zeros); no file at all is
//! "file-lost" (nothing was committed, not even its creation). The verdict
//! and the outcome must agree: ordered with size-kept, violation with any
//! loss.
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
use dio_trace_common::crash::{Expect, Outcome, agrees, classify};
use serde_json::Value;

use super::crash_probe::{Survived, survivors};
use super::{Disk, End, Guest, VmOptions, boot};
use crate::initramfs::GuestFile;
use crate::kernel::Kernel;

/// Each leaves a file of two written 4 KiB blocks when every write was
/// made durable.
const PATTERNS: [&str; 3] = ["o-sync-append", "o-dsync-append", INTO_FALLOCATED];
/// Writes into unwritten extents: f2fs has none (its fallocated blocks
/// are plain new ones), so its setups run the appends only.
const INTO_FALLOCATED: &str = "o-dsync-into-fallocated";
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
    /// What was left of the file after the crash.
    pub survived: Survived,
}

impl CrashResult {
    pub fn crash(&self) -> &'static str {
        match self.outcome() {
            // This harness's name for it since before the shared rule.
            Outcome::Kept => "size-kept",
            o => o.name(),
        }
    }

    /// The shared classification: two written blocks, all of them data.
    fn outcome(&self) -> Outcome {
        classify(
            self.survived,
            Expect {
                size: 2 * BLOCK,
                data: 2 * BLOCK,
            },
        )
    }

    /// "8192 bytes, 4096 of them written data" or "no file".
    pub fn left(&self) -> String {
        match self.survived {
            Survived::Missing => "no file".into(),
            Survived::File { size, data } => format!("{size} bytes, {data} of them written data"),
        }
    }

    pub fn agrees(&self) -> bool {
        agrees(&self.verdict, self.outcome())
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

/// Every pattern for `setup` on `kernel`.
pub fn run(kernel: &Kernel, dio: &GuestFile, opts: &VmOptions, setup: Setup) -> Result<Vec<CrashResult>> {
    PATTERNS
        .iter()
        .filter(|p| setup.fs != "f2fs" || **p != INTO_FALLOCATED)
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
    let survived = survivors(kernel, &disk, opts).with_context(|| format!("{pattern}: boot 2"))?;
    Ok(CrashResult {
        pattern,
        cp_reason,
        verdict,
        survived,
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
    let worst = ["file-lost", "data-lost", "size-lost", "unexpected"];
    let crash = worst
        .into_iter()
        .find(|w| results.iter().any(|r| r.crash() == *w))
        .unwrap_or("size-kept");
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
            survived: Survived::File { size, data: size },
        }
    }

    #[test]
    fn every_outcome_is_reported() {
        let with = |verdict: &str, survived| CrashResult {
            pattern: INTO_FALLOCATED,
            cp_reason: None,
            verdict: String::from(verdict),
            survived,
        };
        let gone = with("violation", Survived::Missing);
        assert_eq!((gone.crash(), gone.agrees()), ("file-lost", true));
        assert_eq!(gone.left(), "no file");
        let zeros = with("violation", Survived::File { size: 8192, data: 0 });
        assert_eq!((zeros.crash(), zeros.agrees()), ("data-lost", true));
        let hidden = with(
            "ordered",
            Survived::File {
                size: 8192,
                data: 4096,
            },
        );
        assert_eq!((hidden.crash(), hidden.agrees()), ("data-lost", false));
        assert!(!with("ordered", Survived::Missing).agrees());
        assert_eq!(
            final_line(&[r("ordered", 8192), gone]),
            "verdict=violation crash=file-lost"
        );
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
