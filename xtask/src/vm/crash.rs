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
    /// setup says (nothing for the root), and that directory. On f2fs they
    /// end with one O_SYNC write to a file of its own in the root, which
    /// rolls forward: the first sync to roll forward after a checkpoint
    /// (the mount, `sync`) numbers its node page 0 and f2fs waits for
    /// none of it (`EVENT_NODES_WAITED`), which dio-trace rightly calls
    /// inconclusive. These cells check the size's order, so the case's own
    /// writes must not be that first sync; `verify --crash` checks the
    /// unwaited sync itself, write by write (`crash_truth`).
    pub fn folder(&self, name: &str) -> (String, String) {
        let prime = if self.fs == "f2fs" {
            format!("dio-trace write --pattern o-sync-append --count 1 /mnt/{name}.prime >/dev/null 2>&1\n")
        } else {
            String::new()
        };
        match self.parent {
            Parent::Root => (prime, "/mnt".into()),
            Parent::New => (format!("{prime}mkdir /mnt/{name}\n"), format!("/mnt/{name}")),
            Parent::Synced => (
                format!("mkdir /mnt/{name} && sync\n{prime}"),
                format!("/mnt/{name}"),
            ),
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
        match self.outcome() {
            // This harness's name for it since before the shared rule.
            Outcome::Kept => "size-kept",
            o => o.name(),
        }
    }

    /// The shared classification: every block the run wrote, all of it data.
    fn outcome(&self) -> Outcome {
        classify(
            self.survived,
            Expect {
                size: self.writes * BLOCK,
                data: self.writes * BLOCK,
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
        (!agrees(&self.verdict, self.outcome())).then(|| "the verdict and the crash disagree".to_owned())
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

/// The patterns a crash of `setup` runs: f2fs's skip the writes into
/// fallocated space.
fn patterns(setup: Setup) -> impl Iterator<Item = &'static str> {
    PATTERNS
        .into_iter()
        .filter(move |p| setup.fs != "f2fs" || *p != INTO_FALLOCATED)
}

/// Every pattern for `setup` on `kernel`.
pub fn run(kernel: &Kernel, dio: &GuestFile, opts: &VmOptions, setup: Setup) -> Result<Vec<CrashResult>> {
    run_all(&[(kernel, setup)], dio, opts).map(|mut all| all.remove(0))
}

/// [`run`] for each (kernel, setup), every pattern of every one side by
/// side (a pattern's two boots share a disk, so they stay in order); the
/// results in the order asked.
pub fn run_all(
    cells: &[(&Kernel, Setup)],
    dio: &GuestFile,
    opts: &VmOptions,
) -> Result<Vec<Vec<CrashResult>>> {
    let jobs: Vec<(usize, &Kernel, Setup, &'static str)> = cells
        .iter()
        .enumerate()
        .flat_map(|(i, (kernel, setup))| patterns(*setup).map(move |p| (i, *kernel, *setup, p)))
        .collect();
    let results = super::side_by_side::map(&jobs, |(_, kernel, setup, p)| one(kernel, dio, p, opts, *setup));
    let mut out: Vec<Vec<CrashResult>> = cells.iter().map(|_| Vec::new()).collect();
    for ((i, ..), r) in jobs.iter().zip(results) {
        out[*i].push(r?);
    }
    Ok(out)
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
    let mut result = boot1(pattern, setup, &first)?;
    let path = format!("{}/probe", setup.folder(DIR).1);
    result.survived = survivors(kernel, &disk, opts, &path).with_context(|| format!("{pattern}: boot 2"))?;
    Ok(result)
}

/// What boot 1 reported (the file not yet read: `survived` is Missing
/// until boot 2 says otherwise); an error when it did not crash or
/// printed no summary.
fn boot1(pattern: &'static str, setup: Setup, first: &super::Outcome) -> Result<CrashResult> {
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
    Ok(CrashResult {
        pattern,
        writes: setup.writes(WRITES),
        cp_reason,
        verdict,
        exit,
        counted,
        survived: Survived::Missing,
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

    // Found by `cargo xtask mutants` (issue 23): sizes at and past the
    // edges of the two written blocks.
    #[test]
    fn a_partial_or_oversized_file_is_named_for_what_it_is() {
        let left = |size, data| {
            CrashResult {
                survived: Survived::File { size, data },
                ..r("violation", 0)
            }
            .crash()
        };
        assert_eq!(left(0, 0), "size-lost");
        assert_eq!(left(BLOCK, BLOCK), "size-lost");
        assert_eq!(left(6000, 6000), "size-lost", "a torn second block");
        assert_eq!(left(2 * BLOCK - 1, 2 * BLOCK - 1), "size-lost");
        assert_eq!(left(2 * BLOCK, 2 * BLOCK), "size-kept");
        assert_eq!(left(2 * BLOCK, BLOCK), "data-lost");
        assert_eq!(left(3 * BLOCK, 3 * BLOCK), "unexpected", "more than was written");
        assert_eq!(left(3 * BLOCK, 0), "unexpected");
        let over = CrashResult {
            survived: Survived::File {
                size: 3 * BLOCK,
                data: 3 * BLOCK,
            },
            ..r("ordered", 0)
        };
        assert!(!over.agrees(), "an unexpected file agrees with no verdict");
    }

    #[test]
    fn setups_are_labelled_and_f2fs_skips_unwritten_extents() {
        assert_eq!(Setup::EXT4.label(), "ext4");
        let f2fs = |hardlink: bool| {
            if hardlink {
                Setup::on("f2fs").hardlinked()
            } else {
                Setup::on("f2fs")
            }
        };
        assert_eq!(f2fs(true).label(), "f2fs+hardlink");
        assert_eq!(f2fs(false).label(), "f2fs");
        let of = |s| patterns(s).collect::<Vec<_>>();
        assert_eq!(of(Setup::EXT4), PATTERNS);
        assert_eq!(of(Setup::on("xfs")), PATTERNS);
        for hardlink in [false, true] {
            assert_eq!(of(f2fs(hardlink)), ["o-sync-append", "o-dsync-append"]);
        }
    }

    #[test]
    fn boot_1_writes_twice_then_crashes_with_the_setups_options() {
        let ext4 = write_and_crash("o-dsync-append", Setup::EXT4, "");
        assert!(ext4.starts_with("mount -o remount,commit=60 /mnt\n"), "{ext4}");
        assert!(ext4.contains(&format!("--pattern o-dsync-append --count {WRITES} /mnt/probe")));
        assert!(!ext4.contains("--full-timeline") && !ext4.contains("ln "));
        for marker in [
            "echo \"@@EXIT $?\"",
            "@@SUMMARY",
            "@@CP",
            "echo c > /proc/sysrq-trigger",
        ] {
            assert!(ext4.contains(marker), "{marker} missing: {ext4}");
        }
        let f2fs = write_and_crash("o-sync-append", Setup::on("f2fs").hardlinked(), "");
        assert!(!f2fs.contains("commit=60"), "ext4's mount option on f2fs: {f2fs}");
        assert!(f2fs.contains("dio-trace run --json --full-timeline -- "));
        assert!(f2fs.contains("ln /mnt/probe /mnt/probe-link\n"));
        let xfs = write_and_crash("o-sync-append", Setup::on("xfs"), "");
        assert!(!xfs.contains("commit=60") && !xfs.contains("--full-timeline"));
    }

    #[test]
    fn boot_1_is_read_from_its_markers_and_must_crash() {
        let outcome = |end, console: &str| super::super::Outcome {
            end,
            console: console.into(),
            elapsed: std::time::Duration::ZERO,
            streamed: true,
        };
        let console = "[ 0.5] noise\n@@EXIT 1\n@@SUMMARY {\"verdict\":\"violation\",\"counted\":2}\n@@CP \"cp_reason\":3\n[ 1.0] sysrq: Trigger a crash\n";
        let got = boot1("o-sync-append", Setup::EXT4, &outcome(End::Panicked, console)).unwrap();
        assert_eq!(got.verdict, "violation");
        assert_eq!(got.exit, Some(1));
        assert_eq!(got.counted, Some(2));
        assert_eq!(got.cp_reason, Some(3));
        assert_eq!(got.survived, Survived::Missing);
        let plain = console.replace("@@CP \"cp_reason\":3\n", "");
        assert_eq!(
            boot1("o-sync-append", Setup::EXT4, &outcome(End::Panicked, &plain))
                .unwrap()
                .cp_reason,
            None
        );
        assert!(
            boot1("o-sync-append", Setup::EXT4, &outcome(End::Exited(1), console)).is_err(),
            "a boot that did not crash tells nothing about what survives"
        );
        let silent = console.replace("@@SUMMARY", "@@NOTHING");
        assert!(boot1("o-sync-append", Setup::EXT4, &outcome(End::Panicked, &silent)).is_err());
    }
}
