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
//! pages for roll-forward recovery, or be made in a new directory, which
//! makes its first fsync take one (`CP_NODE_NEED_CP`, the parent is not
//! checkpointed yet), or in a directory made and synced first (roll-forward
//! again). The f2fs runs keep the full timeline, so the sync's `cp_reason`
//! is printed with the verdict.

use anyhow::{Context as _, Result, bail};
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
/// Writes each pattern makes in boot 1 (`--count 2`), but see
/// [`Setup::writes`].
const WRITES: u64 = 2;

/// The directory the file is made in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parent {
    /// The root, made (and on f2fs checkpointed) by mkfs.
    Root,
    /// A directory made just before the file: on f2fs its first fsync
    /// takes a checkpoint (`cp_reason` 7, the parent is not checkpointed).
    New,
    /// A directory made and `sync`ed before the file: f2fs fsyncs roll
    /// forward.
    Synced,
}

/// The disk and file a crash (or an fs cell) runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// "ext4", "xfs" or "f2fs".
    pub fs: &'static str,
    /// Give the file a second hard link before writing.
    pub hardlink: bool,
    pub parent: Parent,
}

impl Setup {
    pub const EXT4: Setup = Setup::on("ext4");

    /// A new file in the root of a fresh `fs`.
    pub const fn on(fs: &'static str) -> Self {
        Self {
            fs,
            hardlink: false,
            parent: Parent::Root,
        }
    }

    /// The same with a second hard link to the file.
    pub const fn hardlinked(self) -> Self {
        Self {
            hardlink: true,
            ..self
        }
    }

    /// The same with the file in a directory of this kind.
    pub const fn in_dir(self, parent: Parent) -> Self {
        Self { parent, ..self }
    }

    /// For labels: `f2fs+hardlink`, `f2fs+newdir`.
    pub fn label(&self) -> String {
        let dir = match self.parent {
            Parent::Root => "",
            Parent::New => "+newdir",
            Parent::Synced => "+synceddir",
        };
        format!("{}{}{dir}", self.fs, if self.hardlink { "+hardlink" } else { "" })
    }

    /// Shell lines that make the file's directory `/mnt/<name>` as the
    /// setup says (nothing for the root), and that directory.
    pub fn folder(&self, name: &str) -> (String, String) {
        match self.parent {
            Parent::Root => (String::new(), "/mnt".into()),
            Parent::New => (format!("mkdir /mnt/{name}\n"), format!("/mnt/{name}")),
            Parent::Synced => (format!("mkdir /mnt/{name} && sync\n"), format!("/mnt/{name}")),
        }
    }

    /// Does the f2fs fsync of the first counted write take a checkpoint
    /// (`need_do_checkpoint`) rather than roll forward? `synced_first`:
    /// the workload fsyncs the file before its counted writes, and that
    /// fsync takes a new directory's checkpoint.
    pub fn checkpoints(&self, synced_first: bool) -> bool {
        self.hardlink || (self.parent == Parent::New && !synced_first)
    }

    /// Writes to make where `usual` would be made: one in a new directory,
    /// whose first fsync alone takes a checkpoint; the next rolls forward
    /// and recovers the earlier write's blocks too, hiding its loss (NOTES
    /// §8), so only the first write is a fair trial.
    pub fn writes(&self, usual: u64) -> u64 {
        if self.parent == Parent::New { 1 } else { usual }
    }
}

/// One pattern's verdict and ground truth.
#[derive(Debug)]
pub struct CrashResult {
    pub pattern: &'static str,
    /// Writes boot 1 made (each [`BLOCK`] bytes).
    pub writes: u64,
    /// f2fs's `cp_reason` at the last sync's exit, when the run saw it.
    pub cp_reason: Option<i64>,
    /// dio-trace's overall verdict ("ordered" | "violation" | "inconclusive").
    pub verdict: String,
    /// dio-trace's exit status in boot 1.
    pub exit: Option<i32>,
    /// Writes dio-trace counted in boot 1 (None: the summary lacks it).
    pub counted: Option<u64>,
    /// What was left of the file after the crash.
    pub survived: Survived,
}

impl CrashResult {
    pub fn crash(&self) -> &'static str {
        match self.survived {
            Survived::Missing => "file-lost",
            Survived::File { size, .. } if size < self.writes * BLOCK => "size-lost",
            Survived::File { size, data } if size == self.writes * BLOCK && data < size => "data-lost",
            Survived::File { size, data } if size == self.writes * BLOCK && data == size => "size-kept",
            Survived::File { .. } => "unexpected",
        }
    }

    /// "8192 bytes, 4096 of them written data" or "no file".
    pub fn left(&self) -> String {
        match self.survived {
            Survived::Missing => "no file".into(),
            Survived::File { size, data } => format!("{size} bytes, {data} of them written data"),
        }
    }

    /// Why the verdict and the crash do not agree, or None where they do:
    /// ordered with size-kept, violation with any loss. Boot 1 must have
    /// been a fair trial first: both writes counted, and dio-trace's exit
    /// status the one its verdict has. A workload that stopped after one
    /// write leaves a short file, which would "agree" with a wrong
    /// violation.
    pub fn disagreement(&self) -> Option<String> {
        let want_exit = match self.verdict.as_str() {
            "ordered" => Some(0),
            "violation" => Some(1),
            _ => None,
        };
        if self.counted != Some(self.writes) {
            return Some(format!(
                "boot 1 counted {:?} of the {} writes it made",
                self.counted, self.writes
            ));
        }
        if want_exit.is_none() || self.exit != want_exit {
            return Some(format!(
                "dio-trace said {} and exited {:?} in boot 1",
                self.verdict, self.exit
            ));
        }
        let agree = matches!(
            (self.verdict.as_str(), self.crash()),
            ("ordered", "size-kept") | ("violation", "size-lost" | "data-lost" | "file-lost")
        );
        (!agree).then(|| "the verdict and the crash disagree".to_owned())
    }

    pub fn agrees(&self) -> bool {
        self.disagreement().is_none()
    }
}

/// Boot 1's script; `btf`: dio-trace's ` --btf FILE` where the kernel
/// needs it.
fn write_and_crash(pattern: &str, setup: Setup, btf: &str) -> String {
    let commit = if setup.fs == "ext4" {
        "mount -o remount,commit=60 /mnt\n"
    } else {
        ""
    };
    let (mkdir, dir) = setup.folder(DIR);
    let link = if setup.hardlink {
        format!("touch {dir}/probe && ln {dir}/probe {dir}/probe-link\n")
    } else {
        String::new()
    };
    let writes = setup.writes(WRITES);
    let timeline = if setup.fs == "f2fs" {
        " --full-timeline"
    } else {
        ""
    };
    format!(
        "{commit}{mkdir}{link}\
         dio-trace run{btf} --json{timeline} -- dio-trace write --pattern {pattern} --count {writes} {dir}/probe >/tmp/out 2>/tmp/err\n\
         echo \"@@EXIT $?\"\n\
         grep '\"type\":\"summary\"' /tmp/out | sed 's/^/@@SUMMARY /'\n\
         grep -o '\"cp_reason\":[0-9-]*' /tmp/out | tail -1 | sed 's/^/@@CP /'\n\
         echo c > /proc/sysrq-trigger\n\
         sleep 5\n\
         echo 'sysrq did not crash the kernel'\n\
         exit 1\n"
    )
}

/// The directory a crash's file goes in, when not the root.
const DIR: &str = "dir";

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
    let files = super::traced::guest_files(kernel, dio);
    let first = boot(
        &Guest {
            kernel,
            files: &files,
            script: &write_and_crash(pattern, setup, &super::traced::btf_arg(kernel)),
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
    let exit = marked(&first.console, "@@EXIT ").and_then(|c| c.parse().ok());
    let counted = summary["counted"].as_u64();
    let cp_reason =
        marked(&first.console, "@@CP ").and_then(|c| c.trim_start_matches("\"cp_reason\":").parse().ok());
    let path = format!("{}/probe", setup.folder(DIR).1);
    let survived = survivors(kernel, &disk, opts, &path).with_context(|| format!("{pattern}: boot 2"))?;
    Ok(CrashResult {
        pattern,
        writes: setup.writes(WRITES),
        cp_reason,
        verdict,
        exit,
        counted,
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

    fn exit_of(verdict: &str) -> Option<i32> {
        match verdict {
            "ordered" => Some(0),
            "violation" => Some(1),
            _ => Some(3),
        }
    }

    fn r(verdict: &str, size: u64) -> CrashResult {
        CrashResult {
            pattern: "o-sync-append",
            writes: WRITES,
            cp_reason: None,
            verdict: verdict.into(),
            exit: exit_of(verdict),
            counted: Some(WRITES),
            survived: Survived::File { size, data: size },
        }
    }

    #[test]
    fn every_outcome_is_reported() {
        let with = |verdict: &str, survived| CrashResult {
            pattern: INTO_FALLOCATED,
            writes: WRITES,
            cp_reason: None,
            verdict: String::from(verdict),
            exit: exit_of(verdict),
            counted: Some(WRITES),
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

    #[test]
    fn one_write_in_a_new_directory_is_judged_alone() {
        let newdir = Setup::on("f2fs").in_dir(Parent::New);
        assert_eq!((newdir.writes(WRITES), newdir.checkpoints(false)), (1, true));
        assert!(!newdir.checkpoints(true));
        assert_eq!(newdir.label(), "f2fs+newdir");
        let synced = Setup::on("f2fs").in_dir(Parent::Synced);
        assert_eq!((synced.writes(WRITES), synced.checkpoints(false)), (2, false));
        assert!(synced.folder("d").0.contains("sync"));
        assert!(Setup::on("f2fs").hardlinked().checkpoints(true));
        assert_eq!(Setup::on("xfs").folder("d"), (String::new(), "/mnt".into()));
        let one = |verdict: &str, size| CrashResult {
            writes: 1,
            counted: Some(1),
            ..r(verdict, size)
        };
        assert_eq!(one("ordered", 4096).crash(), "size-kept");
        assert!(one("ordered", 4096).agrees());
        assert_eq!(one("violation", 0).crash(), "size-lost");
        assert!(one("violation", 0).agrees());
        assert!(!one("ordered", 0).agrees());
    }

    #[test]
    fn a_boot_that_made_one_write_of_two_fails() {
        // The workload stopped after one write: a short file, and a
        // violation that would otherwise "agree" with it.
        let short = CrashResult {
            counted: Some(1),
            ..r("violation", 4096)
        };
        assert!(!short.agrees());
        assert!(short.disagreement().unwrap().contains("counted Some(1)"));
        assert!(
            !CrashResult {
                counted: None,
                ..r("ordered", 8192)
            }
            .agrees()
        );
        // dio-trace died after its summary: its status is not the verdict's.
        let died = CrashResult {
            exit: Some(101),
            ..r("violation", 4096)
        };
        assert!(!died.agrees());
        assert!(
            !CrashResult {
                exit: None,
                ..r("ordered", 8192)
            }
            .agrees()
        );
    }
}
