//! The other filesystems in the matrix: XFS, f2fs and btrfs on the Debian kernels
//! that ship them (XFS as a module everywhere, f2fs in the generic
//! flavours only), each cell a real `dio-trace run` on a scratch disk of
//! that filesystem in the guest.
//!
//! What a cell must show follows from the filesystem's facts (NOTES §8,
//! and the crash ground truth in docs/filesystems.md): XFS logs the size in its
//! `end_io`, before iomap's sync, in every version; f2fs syncs inside
//! `iomap_dio_complete` while `i_size` is old and writes the size after,
//! which a crash survives when the sync writes node pages for roll-forward
//! recovery and does not when it takes a checkpoint (a file with a second
//! hard link always does, a new file's first sync in a new directory too).
//! The kernel's row decides the rest: whether its f2fs raises the size
//! late at all (`f2fs_late_size`: not with the fix of
//! `patches/f2fs-dio-size-in-end-io.patch`), and on `buggy-7.3` XFS's
//! DSYNC writes into new blocks run no sync, as ext4's.

use anyhow::{Context as _, Result};
use dio_trace_common::fs::Fs;

use super::crash::{Parent, Setup};
use super::crash_truth::{self, Layout, Run};
use super::matrix::{
    COUNTED, Score, Want, case_script_in, counted_judged, expected_on, find_case, judged, parse,
};
use super::{Disk, VmOptions, traced};
use crate::initramfs::GuestFile;
use crate::kernel::{self, Cache, Kernel, KernelSpec, Named};

/// One filesystem on one kernel, with the backends to force there.
pub struct FsCell {
    pub kernel: &'static str,
    /// The filesystem, and where each case's file is made.
    pub setup: Setup,
    /// Also run `dio-trace verify` on the disk, every counted pattern
    /// expected as the cases are. Not on f2fs: there the answer depends on
    /// each fsync's path, and verify's 8-writer pattern makes its files in
    /// a new directory, whose first fsyncs take a checkpoint
    /// (`CP_NODE_NEED_CP`) and are rightly violations.
    pub verify: bool,
    pub backends: &'static [&'static str],
    /// Last, load ext4 under a running `watch` and append to a file on it
    /// ([`late_ext4_script`]): a module loaded after dio-trace started is
    /// not picked up, so those writes must be counted as not judged and
    /// the answer must say why, never "ordered". Only where ext4 is a
    /// module.
    pub late_ext4: bool,
    /// First, while the disk is fresh: `dio-trace verify --crash` runs,
    /// every counted write judged against its replay (`crash_truth`).
    pub crash: &'static [Run],
}

/// Where each filesystem is checked: the kernels that ship it, through
/// kprobes (every Debian kernel has them), and through tracepoints where
/// iomap has its own (6.4+; XFS's are then raw tracepoints of a module).
/// f2fs's sync path (`cp_reason`) comes from its tracepoint only, so its
/// cells run `auto` (kprobes, and that tracepoint): a forced kprobe or
/// fentry backend leaves f2fs writes inconclusive, which is the honest
/// answer there.
///
/// On the generic kernels ext4 is a module, and these guests never load it
/// ([`ext4_stayed_out`]): each of those cells is also a host without ext4,
/// where dio-trace must start and judge the filesystem it has. 6.1's XFS
/// cell is on the generic flavour for that reason (XFS on cloud kernels,
/// ext4 built in, is checked on 6.12 and 7.3, and by 6.1's XFS crash cell).
pub const FS_CELLS: &[FsCell] = &[
    FsCell {
        kernel: "debian-6.1-generic",
        setup: Setup::on("xfs"),
        verify: true,
        backends: &["kprobe"],
        late_ext4: false,
        crash: XFS_TRUTH,
    },
    FsCell {
        kernel: "debian-6.12",
        setup: Setup::on("xfs"),
        verify: true,
        backends: &["kprobe", "tracepoint"],
        late_ext4: false,
        crash: XFS_TRUTH,
    },
    FsCell {
        kernel: "debian-7.3",
        setup: Setup::on("xfs"),
        verify: true,
        backends: &["kprobe", "tracepoint"],
        late_ext4: false,
        crash: XFS_TRUTH,
    },
    // The O_DSYNC regression on the other iomap filesystem.
    FsCell {
        kernel: "buggy-7.3",
        setup: Setup::on("xfs"),
        verify: true,
        backends: &["kprobe", "tracepoint"],
        late_ext4: false,
        crash: XFS_TRUTH,
    },
    FsCell {
        kernel: "debian-6.1-generic",
        setup: Setup::on("f2fs"),
        verify: false,
        backends: &["auto"],
        late_ext4: true,
        crash: F2FS_ROOT_TRUTH,
    },
    FsCell {
        kernel: "debian-6.1-generic",
        setup: Setup::on("f2fs").hardlinked(),
        verify: false,
        backends: &["auto"],
        late_ext4: false,
        crash: &[],
    },
    FsCell {
        kernel: "debian-6.12-generic",
        setup: Setup::on("f2fs"),
        verify: false,
        backends: &["auto"],
        late_ext4: false,
        crash: F2FS_ROOT_TRUTH,
    },
    FsCell {
        kernel: "debian-6.12-generic",
        setup: Setup::on("f2fs").hardlinked(),
        verify: false,
        backends: &["auto"],
        late_ext4: false,
        crash: &[],
    },
    // btrfs, a module in Debian's generic kernels, mounted nodatacow (its
    // direct writes stay direct). No `verify` on the virtio disk: whether
    // its async O_DSYNC appends sync depends on the disk's FUA; the crash
    // truth's log-writes device has FUA, and its table says what follows.
    // 5.10's btrfs takes IOCB_DSYNC off before iomap and syncs after it:
    // its writes are classified by the file's flags and the stub btrfs
    // leaves in journal_info (ext4 built in here).
    FsCell {
        kernel: "debian-5.10",
        setup: Setup::on("btrfs"),
        verify: false,
        backends: &["kprobe"],
        late_ext4: false,
        crash: BTRFS_TRUTH,
    },
    FsCell {
        kernel: "debian-6.1-generic",
        setup: Setup::on("btrfs"),
        verify: false,
        backends: &["kprobe"],
        late_ext4: false,
        crash: BTRFS_TRUTH,
    },
    FsCell {
        kernel: "debian-6.12-generic",
        setup: Setup::on("btrfs"),
        verify: false,
        backends: &["kprobe", "tracepoint"],
        late_ext4: false,
        crash: BTRFS_TRUTH,
    },
    FsCell {
        kernel: "debian-7.3-generic",
        setup: Setup::on("btrfs"),
        verify: false,
        backends: &["kprobe", "tracepoint"],
        late_ext4: false,
        crash: BTRFS_TRUTH,
    },
    // The f2fs fix: the same package as shipped and with f2fs.ko patched,
    // each sync path.
    FsCell {
        kernel: "debian-7.3-generic",
        setup: F2FS_LINKED,
        verify: false,
        backends: &["auto"],
        late_ext4: false,
        crash: F2FS_TRUTH,
    },
    FsCell {
        kernel: "debian-7.3-generic",
        setup: F2FS_NEW_DIR,
        verify: false,
        backends: &["auto"],
        late_ext4: false,
        crash: &[],
    },
    FsCell {
        kernel: "debian-7.3-generic",
        setup: F2FS_SYNCED_DIR,
        verify: false,
        backends: &["auto"],
        late_ext4: false,
        crash: &[],
    },
    FsCell {
        kernel: "f2fs-fix-7.3",
        setup: F2FS_LINKED,
        verify: false,
        backends: &["auto"],
        late_ext4: false,
        crash: F2FS_TRUTH,
    },
    FsCell {
        kernel: "f2fs-fix-7.3",
        setup: F2FS_NEW_DIR,
        verify: false,
        backends: &["auto"],
        late_ext4: false,
        crash: &[],
    },
    FsCell {
        kernel: "f2fs-fix-7.3",
        setup: F2FS_SYNCED_DIR,
        verify: false,
        backends: &["auto"],
        late_ext4: false,
        crash: &[],
    },
];

/// Per-write crash truth on btrfs: every counted pattern it can show in
/// the root (verify skips writes into fallocated space there).
const BTRFS_TRUTH: &[Run] = &[Run::on("btrfs", Layout::Root, &[])];

/// Per-write crash truth on XFS (every XFS cell's kernel: fixed 6.1, 6.12
/// and 7.3, and `buggy-7.3`'s O_DSYNC regression): every counted pattern
/// in the root.
const XFS_TRUTH: &[Run] = &[Run::on("xfs", Layout::Root, &[])];
/// On f2fs (6.1 and 6.12 generic): every counted pattern in the root
/// (roll-forward, and the concurrent writers' new directory).
const F2FS_ROOT_TRUTH: &[Run] = &[Run::on("f2fs", Layout::Root, &[])];
/// On the f2fs pair: each sync path, O_SYNC and O_DSYNC, single and
/// concurrent writers; then every counted pattern in the root.
const F2FS_TRUTH: &[Run] = &[
    Run::on("f2fs", Layout::Hardlinked, F2FS_PATH_PATTERNS),
    Run::on("f2fs", Layout::NewDir, F2FS_PATH_PATTERNS),
    Run::on("f2fs", Layout::Root, &[]),
];
const F2FS_PATH_PATTERNS: &[&str] = &["o-sync-append", "o-dsync-append", "concurrent-o-sync-append"];

/// f2fs's three sync paths: every fsync takes a checkpoint (a second hard
/// link), the first one does (a new directory), none does (a directory
/// made and synced first: roll-forward).
const F2FS_LINKED: Setup = Setup::on("f2fs").hardlinked();
const F2FS_NEW_DIR: Setup = Setup::on("f2fs").in_dir(Parent::New);
const F2FS_SYNCED_DIR: Setup = Setup::on("f2fs").in_dir(Parent::Synced);

/// Crash ground truth beyond ext4 (`cargo xtask vm crash --fs`): XFS, and
/// f2fs with a sync that rolls forward and one that takes a checkpoint.
pub const CRASH_CELLS: &[(&str, Setup)] = &[
    ("debian-6.1", Setup::on("xfs")),
    ("buggy-7.3", Setup::on("xfs")),
    ("debian-6.1-generic", Setup::on("f2fs")),
    ("debian-6.1-generic", Setup::on("f2fs").hardlinked()),
    ("debian-6.12-generic", Setup::on("f2fs").hardlinked()),
    ("debian-7.3-generic", F2FS_LINKED),
    ("debian-7.3-generic", F2FS_NEW_DIR),
    ("debian-7.3-generic", F2FS_SYNCED_DIR),
    ("f2fs-fix-7.3", F2FS_LINKED),
    ("f2fs-fix-7.3", F2FS_NEW_DIR),
    ("f2fs-fix-7.3", F2FS_SYNCED_DIR),
];

/// Every crash cell (of the `only` kernels, where given): the verdict and
/// the crash must agree, and the crash must be what the row's facts say.
pub fn crash(opts: &VmOptions, only: &Pick, score: &mut Score) -> Result<()> {
    let cache = Cache::from_env()?;
    let dio: GuestFile = traced::dio_trace_file()?;
    let chosen_cells: Vec<_> = CRASH_CELLS.iter().filter(|(k, s)| only.takes(k, s.fs)).collect();
    let resolved = chosen_cells
        .iter()
        .map(|(name, _)| {
            kernel::resolve(
                &KernelSpec::Named(kernel::named::find(name).expect("a named kernel")),
                &cache,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let cells: Vec<_> = resolved
        .iter()
        .zip(&chosen_cells)
        .map(|(k, (_, s))| (k, *s))
        .collect();
    for ((name, setup), results) in chosen_cells
        .iter()
        .zip(super::crash::run_all(&cells, &dio, opts)?)
    {
        let row = kernel::named::find(name).expect("a named kernel");
        for r in results {
            let cp = r
                .cp_reason
                .map(|c| format!(", sync cp_reason {c}"))
                .unwrap_or_default();
            let want = want(row, *setup, r.pattern);
            let lost = matches!(want, Want::Violation(_));
            let why = r.disagreement().or_else(|| {
                (lost == (r.crash() == "size-kept")).then(|| {
                    format!(
                        "the row's facts want {want:?}, and the crash {} that",
                        if lost { "does not show" } else { "contradicts" }
                    )
                })
            });
            score.record(
                why,
                format_args!(
                    "crash {name} {} {}: verdict {} with {} after the crash ({}){cp}",
                    setup.label(),
                    r.pattern,
                    r.verdict,
                    r.left(),
                    r.crash()
                ),
            );
        }
    }
    Ok(())
}

/// Which cells to run: those of these kernels and filesystems (every one
/// where a list is empty).
#[derive(Clone, Copy, Debug, Default)]
pub struct Pick<'a> {
    pub kernels: &'a [String],
    pub fs: &'a [String],
}

impl Pick<'_> {
    fn takes(&self, kernel: &str, fs: &str) -> bool {
        let any = |list: &[String], x: &str| list.is_empty() || list.iter().any(|k| k == x);
        any(self.kernels, kernel) && any(self.fs, fs)
    }
}

/// What a filesystem's counted writes of `pattern` must show on `row`'s
/// kernel in `setup`: f2fs's sync before its size write is a violation
/// where the row's f2fs raises the size late and the sync takes a
/// checkpoint; otherwise the kernel's own facts decide (the O_DSYNC
/// regression is iomap's, so XFS has it where ext4 does).
pub fn want(row: &Named, setup: Setup, pattern: &str) -> Want {
    let synced_first = SYNCED_FIRST.contains(&pattern);
    if setup.fs == "f2fs" && setup.checkpoints(synced_first) && row.f2fs_late_size {
        return Want::Violation("sync_before_size_update");
    }
    // In a new directory the workload's own fsync takes the checkpoint,
    // so the counted write is the first to roll forward after it: f2fs
    // does not wait for its node page (`f2fs_unwaited_first`).
    if setup.fs == "f2fs"
        && setup.parent == Parent::New
        && !setup.hardlink
        && synced_first
        && row.f2fs_unwaited_first
    {
        return Want::Unjudged;
    }
    expected_on(row, setup.fs, pattern)
}

/// (pattern, `--count`, writes the kernel makes).
const PATTERNS: [(&str, u64, u64); 4] = [
    ("o-sync-append", 3, 3),
    ("o-dsync-append", 3, 3),
    ("o-append-dsync", 3, 3),
    (INTO_FALLOCATED, 3, 3),
];
/// Writes into unwritten extents, which f2fs does not have and btrfs does
/// not show: their cells skip the pattern.
const INTO_FALLOCATED: &str = "o-dsync-into-fallocated";
/// Patterns whose file `dio-trace write` makes, writes and fsyncs before
/// the counted writes: in a new directory that fsync takes the checkpoint,
/// and the counted writes' syncs roll forward.
const SYNCED_FIRST: &[&str] = &["o-append-dsync", INTO_FALLOCATED];

/// The patterns a cell of `fs` runs.
fn patterns(fs: &str) -> impl Iterator<Item = (&'static str, u64, u64)> {
    // f2fs has no unwritten extents; btrfs has, and tells iomap nothing of
    // them (`Fs::shows_new_blocks`).
    let skip = fs == "f2fs" || Fs::from_name(fs).is_some_and(|f| !f.shows_new_blocks());
    PATTERNS
        .into_iter()
        .filter(move |(p, _, _)| !skip || *p != INTO_FALLOCATED)
}

/// Printed last by each cell's guest: is ext4 registered with the kernel,
/// is its module loaded.
const EXT4_LINE: &str = "@@EXT4";

/// Why a cell on `row`'s kernel did not run without ext4 as it must, from
/// the guest's [`EXT4_LINE`]; `None` where it did, or where ext4 is built
/// in (nothing to check).
pub fn ext4_stayed_out(row: &Named, console: &str) -> Option<Option<String>> {
    if !row.ext4_module {
        return None;
    }
    let seen = console
        .lines()
        .find_map(|l| l.split(&format!("{EXT4_LINE} ")).nth(1))
        .map(str::trim);
    Some(match seen {
        Some("absent no-module") => None,
        Some(other) => Some(format!(
            "ext4 was loaded in the guest ({other}): the cell would pass on a host with ext4"
        )),
        None => Some("the guest did not say whether ext4 was loaded".into()),
    })
}

/// The late ext4 step's parts in the guest: its image, its modules (in
/// load order, one name a line) and how many O_SYNC appends it makes.
const LATE_IMAGE: &str = "/late-ext4.img";
const LATE_MODULES: &str = "/etc/dio-trace/late-modules";
const LATE_WRITES: u64 = 2;
/// What the late ext4 step prints: `@@LATE <watch's exit>`, its summary.
const LATE_EXIT: &str = "@@LATE ";
const LATE_SUMMARY: &str = "@@LATESUMMARY ";

/// A `watch` starts on a host without ext4; once it is attached, ext4
/// (and the loop driver) are loaded, an ext4 image is mounted and appended
/// to with O_SYNC, and the watch is stopped.
fn late_ext4_script() -> String {
    format!(
        "dio-trace watch --json >/tmp/late.out 2>/tmp/late.err &\n\
         w=$!\n\
         i=0\n\
         until grep -q '\"type\":\"start\"' /tmp/late.out || [ $i -ge 600 ]; do sleep 0.1; i=$((i + 1)); done\n\
         for m in $(cat {LATE_MODULES}); do [ -e /sys/module/$m ] || insmod /lib/modules/late/$m.ko || echo \"@@ERR insmod $m\"; done\n\
         mkdir -p /late && mount -t ext4 -o loop {LATE_IMAGE} /late || echo '@@ERR mount {LATE_IMAGE}'\n\
         dio-trace write --pattern o-sync-append --count {LATE_WRITES} /late/f\n\
         kill -INT $w\n\
         wait $w\n\
         echo \"{LATE_EXIT}$?\"\n\
         grep '\"type\":\"summary\"' /tmp/late.out | sed 's/^/{LATE_SUMMARY}/'\n\
         sed 's/^/@@ERR /' /tmp/late.err | head -5\n"
    )
}

/// The host files the late ext4 step needs: ext4's and loop's modules
/// (with what they depend on) and an ext4 image. The directory holds them
/// for as long as it lives.
fn late_ext4_files(kernel: &Kernel) -> Result<(tempfile::TempDir, Disk, Vec<GuestFile>)> {
    let dir = tempfile::tempdir()?;
    let modules = kernel
        .modules
        .as_deref()
        .context("the late ext4 step needs a kernel with ext4 as a module")?;
    let mut files = Vec::new();
    let mut names = Vec::new();
    for m in kernel::modules::load_order(modules, &["loop", "ext4"], &[])? {
        let host = dir.path().join(format!("{}.ko", m.name));
        std::fs::write(&host, &m.bytes)?;
        files.push(GuestFile {
            host,
            guest: format!("/lib/modules/late/{}.ko", m.name),
        });
        names.push(m.name);
    }
    let list = dir.path().join("late-modules");
    std::fs::write(&list, names.join("\n"))?;
    files.push(GuestFile {
        host: list,
        guest: LATE_MODULES.into(),
    });
    let image = Disk::of("ext4", 16)?;
    files.push(GuestFile {
        host: image.path().to_owned(),
        guest: LATE_IMAGE.into(),
    });
    Ok((dir, image, files))
}

/// Why the late ext4 step did not show what it must: `watch` exits 3 (not
/// judged, never ordered), every one of its appends counted in the kernel
/// as a write to a filesystem without facts, none judged, and the answer
/// naming ext4's missing facts.
pub fn late_ext4_judged(console: &str) -> Option<String> {
    let marked = |m: &str| console.lines().find_map(|l| l.split(m).nth(1)).map(str::trim);
    let exit = marked(LATE_EXIT);
    let Some(sum) = marked(LATE_SUMMARY).and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
    else {
        return Some(format!("no summary from the watch (exit {exit:?})"));
    };
    let ok = exit == Some("3")
        && sum["counters"]["no_fs_facts"] == LATE_WRITES
        && sum["counted"] == 0
        && sum["verdict"] == "inconclusive"
        && sum["reasons"].to_string().contains("ext4's facts are missing");
    (!ok).then(|| {
        format!(
            "want exit 3, {LATE_WRITES} writes no_fs_facts, none counted, a reason naming ext4's missing facts; \
             got exit {exit:?}, no_fs_facts {}, counted {}, verdict {}, reasons {}",
            sum["counters"]["no_fs_facts"], sum["counted"], sum["verdict"], sum["reasons"]
        )
    })
}

/// The crash-truth runs (on the fresh disk, which is then mounted again),
/// the cases (each file in its own directory where the setup asks for
/// one), then (`verify`) `dio-trace verify` on the same disk: every
/// pattern, judged as on ext4.
fn script(setup: Setup, backends: &[&str], verify: bool, late_ext4: bool, crash: &[Run]) -> String {
    let mut s = String::from("set +e\n");
    if !crash.is_empty() {
        s += &crash_truth::script("", crash);
        s += &format!(
            "mount {} \"$disk\" /mnt || echo '@@ERR remount'\n",
            super::disk::mount_args(setup.fs)
        );
    }
    if verify {
        s += &super::verify::script("");
    }
    // Each backend's cases, then the first backend's again with their
    // ordered writes counted in the kernel (`--show problems`).
    let counted = backends.first().map(|b| (COUNTED, *b, " --show problems"));
    for (label, b, extra) in backends.iter().map(|b| (*b, *b, "")).chain(counted) {
        for (p, count, _) in patterns(setup.fs) {
            let (mkdir, dir) = setup.folder(&format!("{label}-{p}.d"));
            s += &mkdir;
            if setup.hardlink {
                s += &format!("touch {dir}/{label}-{p} && ln {dir}/{label}-{p} {dir}/{label}-{p}.link\n");
            }
            s += &case_script_in(&dir, label, b, extra, p, setup.writes(count));
        }
    }
    s += &format!(
        "echo \"{EXT4_LINE} $(grep -qw ext4 /proc/filesystems && echo registered || echo absent) \
         $([ -e /sys/module/ext4 ] && echo module-loaded || echo no-module)\"\n"
    );
    if Fs::from_name(setup.fs).is_some_and(|f| f.direct_mount_opt().is_some()) {
        s += &plain_mount_script(setup.fs);
    }
    if late_ext4 {
        s += &late_ext4_script();
    }
    s + "exit 0\n"
}

/// What the plain-mount step prints: `@@PLAIN <exit>`, its summary.
const PLAIN_EXIT: &str = "@@PLAIN ";
const PLAIN_SUMMARY: &str = "@@PLAINSUMMARY ";
/// Its O_SYNC appends.
const PLAIN_WRITES: u64 = 2;

/// The disk mounted again with `fs`'s defaults (btrfs: checksummed
/// files, not the `nodatacow` the cases run on), and appended to.
fn plain_mount_script(fs: &str) -> String {
    format!(
        "disk=${{disk:-$(awk '$2 == \"/mnt\" {{ print $1 }}' /proc/mounts)}}\n\
         umount /mnt; mount -t {fs} \"$disk\" /mnt || echo '@@ERR plain mount'\n\
         dio-trace run --json -- dio-trace write --pattern o-sync-append --count {PLAIN_WRITES} /mnt/plain \
         >/tmp/plain.out 2>/tmp/plain.err\n\
         echo \"{PLAIN_EXIT}$?\"\n\
         grep '\"type\":\"summary\"' /tmp/plain.out | sed 's/^/{PLAIN_SUMMARY}/'\n"
    )
}

/// Why the plain-mount step did not show what `row` says: where its btrfs
/// writes checksummed files' direct writes through the page cache
/// (`btrfs_csum_buffered`), each append counted as that, none judged,
/// exit 3 and the answer saying so (never "no size-extending sync direct
/// write was seen"); elsewhere each judged ordered.
pub fn plain_mount_judged(row: &Named, console: &str) -> Option<String> {
    let marked = |m: &str| console.lines().find_map(|l| l.split(m).nth(1)).map(str::trim);
    let exit = marked(PLAIN_EXIT);
    let Some(sum) = marked(PLAIN_SUMMARY).and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
    else {
        return Some(format!("no summary from the plain mount's run (exit {exit:?})"));
    };
    let (fell_back, counted, ordered) = (
        sum["counters"]["buffered_fallback"].as_u64(),
        sum["counted"].as_u64(),
        sum["ordered"].as_u64(),
    );
    let reasons = sum["reasons"].to_string();
    let fine = if row.btrfs_csum_buffered {
        exit == Some("3")
            && fell_back == Some(PLAIN_WRITES)
            && counted == Some(0)
            && reasons.contains("no direct write reached the kernel's direct I/O")
            && !reasons.contains("no size-extending sync direct write was seen")
    } else {
        exit == Some("0") && fell_back == Some(0) && counted == Some(PLAIN_WRITES) && ordered == counted
    };
    (!fine).then(|| {
        format!(
            "want {} of {PLAIN_WRITES}, got exit {exit:?}, buffered_fallback {fell_back:?}, counted {counted:?}, \
             ordered {ordered:?}, reasons {reasons}",
            if row.btrfs_csum_buffered { "buffered" } else { "judged ordered" }
        )
    })
}

/// Every cell (of the `only` kernels, where given); prints a PASS/FAIL
/// line per case into `score`.
pub fn run(opts: &VmOptions, only: &Pick, score: &mut Score) -> Result<()> {
    let cache = Cache::from_env()?;
    let dio: GuestFile = traced::dio_trace_file()?;
    let mut jobs = Vec::new();
    for cell in FS_CELLS.iter().filter(|c| only.takes(c.kernel, c.setup.fs)) {
        let spec = KernelSpec::Named(kernel::named::find(cell.kernel).expect("a named kernel"));
        let kernel = kernel::resolve(&spec, &cache)?;
        let late = if cell.late_ext4 {
            Some(late_ext4_files(&kernel)?)
        } else {
            None
        };
        jobs.push((cell, spec, kernel, late));
    }
    let outcomes = super::side_by_side::map(&jobs, |(cell, _, kernel, late)| {
        traced::boot_with_dio_and(
            cell.setup.fs,
            kernel,
            &dio,
            late.as_ref().map_or(&[][..], |(_, _, files)| files),
            &script(cell.setup, cell.backends, cell.verify, cell.late_ext4, cell.crash),
            opts,
        )
    });
    for ((cell, spec, _, _), outcome) in jobs.iter().zip(outcomes) {
        let outcome = outcome?;
        let seen = parse(&outcome.console);
        let row = spec.row().expect("a named kernel");
        for run in cell.crash {
            crash_truth::score(cell.kernel, row, run, &outcome.console, score);
        }
        if cell.verify {
            let label = format!("{} {}", cell.kernel, cell.setup.fs);
            let plain = Setup::on(cell.setup.fs);
            let counted = |p: &str| super::verify::verdict_label(want(row, plain, p));
            super::verify::score_patterns(&label, &outcome, super::verify::COUNT, &counted, score);
        }
        for b in cell.backends {
            for (p, count, writes) in patterns(cell.setup.fs) {
                let case_def = (p, cell.setup.writes(count), cell.setup.writes(writes));
                let case = find_case(&seen, b, p);
                let want = want(row, cell.setup, p);
                let why = judged(want, b, case_def, case, &outcome);
                score.record(
                    why,
                    format_args!("{} {} {b} {p}: {want:?}", cell.kernel, cell.setup.label()),
                );
            }
        }
        if let Some(b) = cell.backends.first() {
            for (p, count, writes) in patterns(cell.setup.fs) {
                let case_def = (p, cell.setup.writes(count), cell.setup.writes(writes));
                let want = want(row, cell.setup, p);
                let why = counted_judged(want, b, case_def, &seen, &outcome);
                score.record(
                    why,
                    format_args!(
                        "{} {} {COUNTED} {p}: {want:?}, as when sent",
                        cell.kernel,
                        cell.setup.label()
                    ),
                );
            }
        }
        if let Some(why) = ext4_stayed_out(row, &outcome.console) {
            score.record(
                why,
                format_args!(
                    "{} {}: ext4 never loaded (a host without ext4)",
                    cell.kernel,
                    cell.setup.label()
                ),
            );
        }
        if Fs::from_name(cell.setup.fs).is_some_and(|f| f.direct_mount_opt().is_some()) {
            score.record(
                plain_mount_judged(row, &outcome.console),
                format_args!(
                    "{} {}: sync direct appends on a plain mount (checksummed files): {}",
                    cell.kernel,
                    cell.setup.label(),
                    if row.btrfs_csum_buffered {
                        "written buffered, named so"
                    } else {
                        "direct, judged"
                    }
                ),
            );
        }
        if cell.late_ext4 {
            let why = late_ext4_judged(&outcome.console)
                .map(|why| format!("{why}; the guest's last lines:\n{}", outcome.tail(12)));
            score.record(
                why,
                format_args!(
                    "{} {}: ext4 loaded under a running watch: its writes not judged, the answer says why",
                    cell.kernel,
                    cell.setup.label()
                ),
            );
        }
        println!(
            "xtask: {} on {}: {:.1} s in QEMU",
            cell.setup.label(),
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
            assert!(["xfs", "f2fs", "btrfs"].contains(&c.setup.fs));
        }
        for (k, _) in CRASH_CELLS {
            assert!(kernel::named::find(k).is_some(), "{k}");
        }
        let row = |n| kernel::named::find(n).unwrap();
        let (xfs, f2fs) = (Setup::on("xfs"), Setup::on("f2fs"));
        let fixed = row("debian-6.1-generic");
        assert_eq!(want(fixed, xfs, "o-sync-append"), Want::Ordered);
        assert_eq!(want(fixed, f2fs, "o-dsync-append"), Want::Ordered);
        assert_eq!(
            want(fixed, f2fs.hardlinked(), "o-sync-append"),
            Want::Violation("sync_before_size_update")
        );
        let dsync = row("buggy-7.3");
        assert_eq!(want(dsync, xfs, "o-sync-append"), Want::Ordered);
        assert_eq!(
            want(dsync, xfs, "o-dsync-append"),
            Want::Violation("sync_missing")
        );
        assert_eq!(
            want(dsync, xfs, INTO_FALLOCATED),
            Want::Violation("sync_missing_new_extent")
        );
        assert!(patterns("f2fs").all(|(p, _, _)| p != INTO_FALLOCATED));
        assert!(patterns("btrfs").all(|(p, _, _)| p != INTO_FALLOCATED));
        assert_eq!(want(fixed, Setup::on("btrfs"), "o-dsync-append"), Want::Ordered);
        // ext4's bug on 5.10 is ext4's: btrfs there is ordered.
        let buggy_ext4 = row("debian-5.10");
        assert_eq!(
            want(buggy_ext4, Setup::on("btrfs"), "o-sync-append"),
            Want::Ordered
        );
        assert_eq!(
            super::super::matrix::expected_on(buggy_ext4, "ext4", "o-sync-append"),
            Want::Violation("sync_before_size_update")
        );
        // Each filesystem runs on a generic kernel without ext4.
        for fs in ["xfs", "f2fs", "btrfs"] {
            assert!(
                FS_CELLS
                    .iter()
                    .any(|c| c.setup.fs == fs && row(c.kernel).ext4_module)
            );
        }
    }

    #[test]
    fn the_plain_mount_step_wants_what_the_row_says() {
        let row = |n| kernel::named::find(n).unwrap();
        let (buffered, direct) = (row("debian-6.12-generic"), row("debian-7.3-generic"));
        assert!(buffered.btrfs_csum_buffered && !direct.btrfs_csum_buffered);
        let console = |exit: u8, fell_back: u64, counted: u64, reason: &str| {
            format!(
                "{PLAIN_EXIT}{exit}\n{PLAIN_SUMMARY}{}\n",
                serde_json::json!({"counters": {"buffered_fallback": fell_back}, "counted": counted,
                    "ordered": counted, "reasons": [reason]})
            )
        };
        let named = "no direct write reached the kernel's direct I/O: btrfs wrote 2";
        assert_eq!(plain_mount_judged(buffered, &console(3, 2, 0, named)), None);
        assert_eq!(plain_mount_judged(direct, &console(0, 0, 2, "")), None);
        for bad in [
            console(3, 1, 0, named),
            console(0, 2, 0, named),
            console(3, 2, 0, "no size-extending sync direct write was seen"),
            console(0, 0, 2, ""),
            String::new(),
        ] {
            assert!(plain_mount_judged(buffered, &bad).is_some(), "{bad}");
        }
        for bad in [
            console(3, 2, 0, named),
            console(0, 0, 1, ""),
            console(0, 1, 2, ""),
        ] {
            assert!(plain_mount_judged(direct, &bad).is_some(), "{bad}");
        }
        assert!(script(Setup::on("btrfs"), &[], false, false, &[]).contains(PLAIN_EXIT));
        assert!(!script(Setup::on("xfs"), &[], false, false, &[]).contains(PLAIN_EXIT));
    }

    #[test]
    fn a_checkpointing_f2fs_sync_loses_the_size_unless_the_row_has_the_fix() {
        let row = |n| kernel::named::find(n).unwrap();
        let (stock, fixed) = (row("debian-7.3-generic"), row("f2fs-fix-7.3"));
        // The pre-fsync of an O_APPEND file takes the new directory's
        // checkpoint; its counted write rolls forward, the first after
        // that checkpoint: f2fs does not wait for its node page, except
        // with the second patch.
        assert_eq!(want(stock, F2FS_NEW_DIR, "o-append-dsync"), Want::Unjudged);
        assert_eq!(want(fixed, F2FS_NEW_DIR, "o-append-dsync"), Want::Ordered);
        assert_eq!(
            want(stock, F2FS_LINKED, "o-append-dsync"),
            Want::Violation("sync_before_size_update")
        );
        for p in ["o-sync-append", "o-dsync-append"] {
            for setup in [F2FS_LINKED, F2FS_NEW_DIR] {
                assert_eq!(
                    want(stock, setup, p),
                    Want::Violation("sync_before_size_update"),
                    "{} {p}",
                    setup.label()
                );
                assert_eq!(want(fixed, setup, p), Want::Ordered, "{} {p}", setup.label());
            }
            assert_eq!(want(stock, F2FS_SYNCED_DIR, p), Want::Ordered);
            assert_eq!(want(fixed, F2FS_NEW_DIR, p), Want::Ordered);
            assert_eq!(want(fixed, F2FS_SYNCED_DIR, p), Want::Ordered);
        }
        // Both kernels cover every sync path, in QEMU and in a crash.
        for k in ["debian-7.3-generic", "f2fs-fix-7.3"] {
            for setup in [F2FS_LINKED, F2FS_NEW_DIR, F2FS_SYNCED_DIR] {
                assert!(FS_CELLS.iter().any(|c| c.kernel == k && c.setup == setup));
                assert!(CRASH_CELLS.contains(&(k, setup)));
            }
        }
        // A new directory's case makes one write: the only fair trial.
        let s = script(F2FS_NEW_DIR, &["auto"], false, false, &[]);
        assert!(s.contains("mkdir /mnt/auto-o-sync-append.d\n"), "{s}");
        assert!(
            s.contains("--count 1 /mnt/auto-o-sync-append.d/auto-o-sync-append"),
            "{s}"
        );
        assert!(patterns("xfs").any(|(p, _, _)| p == INTO_FALLOCATED));
    }

    #[test]
    fn ext4_must_stay_out_where_it_is_a_module() {
        let generic = kernel::named::find("debian-6.1-generic").unwrap();
        let cloud = kernel::named::find("debian-6.12").unwrap();
        let line = |seen: &str| format!("noise\n{EXT4_LINE} {seen}\n");
        assert_eq!(ext4_stayed_out(generic, &line("absent no-module")), Some(None));
        assert!(matches!(
            ext4_stayed_out(generic, &line("registered module-loaded")),
            Some(Some(_))
        ));
        assert!(matches!(ext4_stayed_out(generic, "no line"), Some(Some(_))));
        assert_eq!(ext4_stayed_out(cloud, &line("registered no-module")), None);
        // The guest's own echo prints the two words one space apart.
        let echo = script(Setup::on("xfs"), &[], false, false, &[]);
        let echo = echo.lines().find(|l| l.contains(EXT4_LINE)).unwrap();
        assert!(echo.contains("echo absent) $("), "{echo}");
        let s = script(Setup::on("f2fs"), &["auto"], false, true, F2FS_ROOT_TRUTH);
        // Crash truth copies the fresh disk first; the cases write it after.
        let (truth, remount, case) = (
            s.find("--crash --fresh-fs").unwrap(),
            s.find("mount -t f2fs \"$disk\" /mnt").unwrap(),
            s.find("dio-trace run").unwrap(),
        );
        assert!(truth < remount && remount < case, "{s}");
        assert!(
            s.find(EXT4_LINE) < s.find("insmod"),
            "ext4 is checked before it is loaded"
        );
        for c in FS_CELLS.iter().filter(|c| c.late_ext4) {
            assert!(
                kernel::named::find(c.kernel).is_some_and(|r| r.ext4_module),
                "{}",
                c.kernel
            );
        }
    }

    #[test]
    fn ext4_loaded_late_must_be_named_never_judged() {
        let console = |exit: u32, no_facts: u64, counted: u64, verdict: &str, reason: &str| {
            format!(
                "{LATE_EXIT}{exit}\n{LATE_SUMMARY}{{\"counted\":{counted},\"verdict\":\"{verdict}\",\
                 \"counters\":{{\"no_fs_facts\":{no_facts}}},\"reasons\":[\"{reason}\"]}}\n"
            )
        };
        let why = "2 sync-flavoured direct writes were not judged: ... (ext4's facts are missing: ...)";
        assert_eq!(late_ext4_judged(&console(3, 2, 0, "inconclusive", why)), None);
        assert!(
            late_ext4_judged(&console(0, 0, 2, "ordered", "")).is_some(),
            "a false clean"
        );
        assert!(
            late_ext4_judged(&console(3, 1, 0, "inconclusive", why)).is_some(),
            "a write missing"
        );
        assert!(late_ext4_judged(&console(3, 2, 0, "inconclusive", "no write")).is_some());
        assert!(late_ext4_judged("nothing").is_some());
        assert!(patterns("xfs").any(|(p, _, _)| p == INTO_FALLOCATED));
    }
}
