//! `dio-trace verify --crash` in the guests: per-write crash truth from a
//! dm-log-writes replay, run in the same boot as the matrix's `verify`
//! (its pattern lines are scored as before) on kernels whose row says
//! they ship dm-log-writes, and on the XFS and f2fs disks of the
//! filesystem cells. Every counted write must be what our tables say
//! ([`allowed`]: the row's facts, [`matrix::expected`], and on f2fs each
//! fsync's path, write by write): a violation that was lost, or ordered
//! and kept; and exactly `COUNT` writes per writer of each counted pattern
//! ([`matrix::shape`]) must be reported, no fewer and no more. verify's
//! own exit status must match (1 where a write must be a violation, 0
//! where every write is ordered; 5, a disagreement, always fails).

use std::collections::BTreeMap;

use dio_trace_common::fs::Fs;
use serde_json::Value;

use super::matrix::{self, Score, Want};
use super::verify;
use crate::kernel::Named;

/// Writes per writer of each pattern: two replays per pattern keep the
/// boot short (TCG) and still show a write that follows another.
pub const COUNT: u32 = 2;

/// Where a run's files go (`dio-trace verify --layout`): on f2fs this
/// picks each fsync's path (NOTES §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The filesystem's root: f2fs's fsyncs roll forward.
    Root,
    /// A new directory per pattern: f2fs's first fsync takes a checkpoint.
    NewDir,
    /// A second hard link per file: every f2fs fsync takes a checkpoint.
    Hardlinked,
}

impl Layout {
    fn arg(self) -> &'static str {
        match self {
            Layout::Root => "root",
            Layout::NewDir => "new-dir",
            Layout::Hardlinked => "hardlinked",
        }
    }
}

/// One `dio-trace verify --crash` in a guest, on the fresh disk of `fs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub fs: &'static str,
    pub layout: Layout,
    /// Only these counted patterns; every counted one where empty.
    pub patterns: &'static [&'static str],
}

impl Run {
    /// The matrix's run: ext4, every counted pattern in the root. Its lines
    /// carry no tag, as the plain verify's do ([`verify::score_patterns`]
    /// reads its pattern lines too).
    pub const EXT4: Run = Run::on("ext4", Layout::Root, &[]);

    pub const fn on(fs: &'static str, layout: Layout, patterns: &'static [&'static str]) -> Self {
        Self { fs, layout, patterns }
    }

    /// `f2fs+hardlinked`, for case names.
    pub fn label(&self) -> String {
        match self.layout {
            Layout::Root => self.fs.to_owned(),
            l => format!("{}+{}", self.fs, l.arg()),
        }
    }

    /// What its console lines carry after `@@V` and `@@VEXIT`.
    fn tag(&self) -> String {
        if *self == Run::EXT4 {
            String::new()
        } else {
            format!(":{}", self.label())
        }
    }

    /// The counted patterns it runs, with their writers: verify skips
    /// writes into fallocated space where iomap cannot see new blocks
    /// (`Fs::shows_new_blocks`: btrfs).
    fn counted(&self) -> Vec<(&'static str, u64)> {
        let sees_new_blocks = Fs::from_name(self.fs).is_none_or(Fs::shows_new_blocks);
        verify::counted_patterns()
            .filter(|(p, _)| self.patterns.is_empty() || self.patterns.contains(p))
            .filter(|(p, _)| sees_new_blocks || !p.contains("into-fallocated"))
            .collect()
    }

    /// verify's arguments beyond [`verify_line`]'s.
    fn args(&self) -> String {
        let mut a = format!("--fs {} --layout {}", self.fs, self.layout.arg());
        for p in self.patterns {
            a += &format!(" --pattern {p}");
        }
        a
    }
}

/// The guest script for `runs`, one after another in one boot: the disk
/// init mounted on /mnt is the fresh filesystem each starts from (the
/// guests have no mkfs), left unmounted; verify's NDJSON goes to the
/// console with `@@V<tag> `, its exit status with `@@VEXIT<tag>`.
pub fn script(btf: &str, runs: &[Run]) -> String {
    let mut s = String::new();
    for run in runs {
        let tag = run.tag();
        // Not `dio-trace ... | sed`: `$?` would be sed's status.
        s += &format!(
            "{}{} --json >/tmp/verify.out 2>/tmp/verify.err\n\
             rc=$?\n\
             sed 's/^/@@V{tag} /' /tmp/verify.out\n\
             echo \"@@VEXIT{tag} $rc\"\n\
             tail -5 /tmp/verify.err\n",
            verify_line(btf, COUNT),
            run.args()
        );
    }
    s
}

/// The guest lines that run `dio-trace verify --crash` on the fresh disk
/// init mounted on /mnt (found once, unmounted: it is only copied; `$disk`
/// names it afterwards), open-ended for more arguments.
pub fn verify_line(btf: &str, count: u32) -> String {
    format!(
        "disk=${{disk:-$(awk '$2 == \"/mnt\" {{ print $1 }}' /proc/mounts)}}\n\
         umount /mnt 2>/dev/null\n\
         dio-trace verify{btf} --crash --fresh-fs \"$disk\" --count {count} "
    )
}

/// Writes a counted pattern makes under crash truth: `COUNT` per writer
/// (verify's own table says how many writers).
fn writes(pattern: &str) -> u32 {
    let writers = verify::counted_patterns()
        .find(|(p, _)| *p == pattern)
        .map_or(1, |(_, w)| w);
    COUNT * writers as u32
}

/// What one write may show: each verdict it may have, with the crashes
/// that verdict may meet.
type Allowed = &'static [(&'static str, &'static [&'static str])];

const LOST: &[&str] = &["size-lost", "data-lost", "file-lost"];
const LOST_OR_KEPT: &[&str] = &["size-lost", "data-lost", "file-lost", "kept"];
const ORDERED: Allowed = &[("ordered", &["kept"])];
const VIOLATION: Allowed = &[("violation", LOST)];
/// Writers sharing a journal may close each other's windows: a violation
/// there may be kept (dio-trace calls it `hidden`), never an ordered
/// write lost.
const VIOLATION_SHARED: Allowed = &[("violation", LOST_OR_KEPT)];
/// An f2fs roll-forward among writers syncing side by side: ordered and
/// kept, or unjudged whatever the crash (another sync may hold an earlier
/// link of the node chain, `EVENT_SYNC_ALONE`).
const ROLL_FORWARD_SHARED: Allowed = &[("ordered", &["kept"]), ("inconclusive", LOST_OR_KEPT)];
/// The same where f2fs waits for every numbered node page
/// (`f2fs_waits_all_numbered`): kept, and ordered where dio-trace saw the
/// wait cover every page (unjudged where another sync numbered one
/// between f2fs's reading and its wait).
const ROLL_FORWARD_ALL_WAITED: Allowed = &[("ordered", &["kept"]), ("inconclusive", &["kept"])];
/// The first f2fs sync that rolls forward after a checkpoint (or the
/// mount) numbers its node page 0, and f2fs then waits for none of it
/// before its flush: ordered and kept where dio-trace sees it waited,
/// else unjudged whatever the crash (`EVENT_NODES_WAITED`; lost in 2 of 3
/// runs on Debian's 6.1).
const FIRST_ROLL_FORWARD: Allowed = &[("ordered", &["kept"]), ("inconclusive", LOST_OR_KEPT)];
/// The first writes of f2fs's concurrent writers: each fsync takes the new
/// directory's checkpoint, unless another's checkpoint came first and it
/// rolls forward.
const FIRST_OF_MANY_STOCK: Allowed = &[
    ("violation", LOST_OR_KEPT),
    ("ordered", &["kept"]),
    ("inconclusive", LOST_OR_KEPT),
];

/// btrfs's async O_DSYNC appends on a FUA device
/// (`Named::btrfs_async_dsync_unsynced`): iomap writes them FUA and
/// syncs nothing, so a crash loses them; unless the I/O finished before
/// `__iomap_dio_rw` let go of it, which then hands the dio back instead
/// of `-EIOCBQUEUED`, and `btrfs_do_write_iter` syncs the bytes it
/// returned: ordered and kept (one write of four, once, in CI).
const ASYNC_UNLESS_INLINE: Allowed = &[("violation", LOST), ("ordered", &["kept"])];

/// The counted patterns whose O_DSYNC writes complete asynchronously
/// (`Named::btrfs_async_dsync_unsynced`).
const BTRFS_ASYNC_DSYNC: &[&str] = &["aio-dsync-append", "uring-dsync-append"];

/// The pattern whose 8 writers share a journal (and, on f2fs, a new
/// directory and the node chain).
const CONCURRENT: &str = "concurrent-o-sync-append";

/// What write `index` (of any writer) of `pattern` may show in `run` on
/// `row`'s kernel; `None`: nothing says (fails).
fn allowed(row: &Named, run: &Run, pattern: &str, index: u32) -> Option<Allowed> {
    if run.fs == "f2fs" {
        return matrix::shape(pattern).map(|_| f2fs_allowed(row, run.layout, pattern, index));
    }
    // The log-writes device takes FUA: btrfs's async O_DSYNC appends are
    // written FUA and synced only when they finish inline, where the row
    // says so.
    if run.fs == "btrfs" && row.btrfs_async_dsync_unsynced && BTRFS_ASYNC_DSYNC.contains(&pattern) {
        return Some(ASYNC_UNLESS_INLINE);
    }
    match matrix::expected_on(row, run.fs, pattern) {
        Want::Ordered => Some(ORDERED),
        Want::Violation(_) if pattern == CONCURRENT => Some(VIOLATION_SHARED),
        Want::Violation(_) => Some(VIOLATION),
        _ => None,
    }
}

/// f2fs, write by write (NOTES §8): an fsync takes a checkpoint of the
/// inode as it is when the file has a second link or its directory was
/// never checkpointed (a new one's first fsync); otherwise it writes node
/// pages for roll-forward, which rebuilds the size. A kernel whose f2fs
/// raises the size after the sync (`f2fs_late_size`) loses a checkpointed
/// write's size; with the fix every write lasts. Writes into fallocated
/// blocks need no size: ordered and kept on both. Where f2fs does not
/// wait for the first node page after a checkpoint
/// (`f2fs_unwaited_first`), the first write to roll forward after one may
/// be unjudged.
fn f2fs_allowed(row: &Named, layout: Layout, pattern: &str, index: u32) -> Allowed {
    // The file is written and fsynced before its counted writes: that
    // fsync takes a new directory's checkpoint.
    let synced_first = pattern == "o-append-dsync" || pattern.contains("into-fallocated");
    let concurrent = pattern == CONCURRENT;
    // The concurrent writers' files are in a directory of their own.
    let checkpoints = layout == Layout::Hardlinked
        || (index == 0 && (concurrent || (layout == Layout::NewDir && !synced_first)));
    // The first counted write whose fsync rolls forward after the last
    // checkpoint: the pattern's first, or after a new directory's
    // checkpoint the second. A file fsynced first took that turn itself.
    let first_roll_forward = match layout {
        Layout::Hardlinked => None,
        Layout::NewDir if !synced_first => Some(1),
        Layout::NewDir => Some(0),
        Layout::Root => (!synced_first).then_some(0),
    };
    let unwaited = row.f2fs_unwaited_first && first_roll_forward == Some(index) && !checkpoints;
    if pattern.contains("into-fallocated") {
        return match unwaited {
            true => FIRST_ROLL_FORWARD,
            false => ORDERED,
        };
    }
    match (concurrent, checkpoints, row.f2fs_late_size) {
        (false, true, true) => VIOLATION,
        (false, false, _) if unwaited => FIRST_ROLL_FORWARD,
        (false, _, _) => ORDERED,
        (true, true, true) if layout == Layout::Hardlinked => VIOLATION_SHARED,
        (true, true, true) => FIRST_OF_MANY_STOCK,
        // Every write kept where fsyncs wait for every numbered node page,
        // though some interleavings hide it from dio-trace (an fsync
        // whose checkpoint another's covered, a page numbered just
        // before the wait).
        (true, _, _) if row.f2fs_waits_all_numbered => ROLL_FORWARD_ALL_WAITED,
        (true, true, false) if layout == Layout::Hardlinked => ORDERED,
        // The fix keeps a checkpointed write, and a first write that rolls
        // forward instead is a roll-forward among others.
        (true, true, false) => ROLL_FORWARD_SHARED,
        (true, false, _) => ROLL_FORWARD_SHARED,
    }
}

/// Score `run`'s `crash_write` lines and verify's exit status in
/// `console`: one case per counted pattern (each of its writes as
/// [`allowed`] says, the count exact) and one for the exit status.
pub fn score(label: &str, row: &Named, run: &Run, console: &str, score: &mut Score) {
    let tag = format!("@@V{} ", run.tag());
    let lines: Vec<Value> = console
        .lines()
        .filter_map(|l| l.split(tag.as_str()).nth(1))
        .filter_map(|j| serde_json::from_str(j).ok())
        .filter(|v: &Value| v["type"] == "crash_write")
        .collect();
    let mut by_pattern: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for l in &lines {
        by_pattern
            .entry(l["pattern"].as_str().unwrap_or("?").to_owned())
            .or_default()
            .push(l);
    }
    let counted: Vec<&str> = run.counted().into_iter().map(|(p, _)| p).collect();
    let (mut must_violate, mut may_violate, mut may_unjudge) = (false, false, false);
    for pattern in counted.iter().copied().chain(
        by_pattern
            .keys()
            .map(String::as_str)
            .filter(|p| !counted.contains(p)),
    ) {
        let got = by_pattern.get(pattern).map_or(&[][..], Vec::as_slice);
        let n = writes(pattern) as usize;
        let mut bad = Vec::new();
        for w in got {
            let index = w["index"].as_u64().unwrap_or(u64::MAX) as u32;
            // A pattern without a table fails below, whatever it reported.
            let Some(ok) = allowed(row, run, pattern, index) else {
                continue;
            };
            let fits = ok
                .iter()
                .any(|(v, crashes)| w["verdict"] == *v && crashes.iter().any(|c| w["crash"] == *c));
            if !fits {
                bad.push(format!(
                    "{} {}/{} (want {})",
                    w["mark"],
                    w["verdict"],
                    w["crash"],
                    ok.iter()
                        .map(|(v, c)| format!("{v}:{}", c.join("|")))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ));
            }
        }
        for index in 0..COUNT {
            if let Some(ok) = allowed(row, run, pattern, index) {
                must_violate |= ok.iter().all(|(v, _)| *v == "violation");
                may_violate |= ok.iter().any(|(v, _)| *v == "violation");
                may_unjudge |= ok.iter().any(|(v, _)| *v == "inconclusive");
            }
        }
        let why = if allowed(row, run, pattern, 0).is_none() {
            Some(format!("no table says what {pattern} must show"))
        } else if got.len() != n {
            Some(format!("want {n} writes, the guest reported {}", got.len()))
        } else if !bad.is_empty() {
            Some(format!("writes outside the table: {}", bad.join(", ")))
        } else {
            None
        };
        let summary = if got.is_empty() {
            "no writes".to_owned()
        } else {
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            for w in got {
                *seen
                    .entry(format!(
                        "{}/{}",
                        w["verdict"].as_str().unwrap_or("?"),
                        w["crash"].as_str().unwrap_or("?")
                    ))
                    .or_default() += 1;
            }
            seen.iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        score.record(
            why,
            format_args!("crash-truth {label} {} {pattern}: {summary}", run.label()),
        );
    }
    let exit = console
        .lines()
        .find_map(|l| l.split(&format!("@@VEXIT{} ", run.tag())).nth(1))
        .and_then(|c| c.trim().parse::<i32>().ok());
    // verify's status follows its writes: 1 with a violation, else 3 with
    // an unjudged one, else 0; never 5 (a disagreement) or 4.
    let mut want_exits = vec![];
    if must_violate {
        want_exits.push(1);
    } else {
        want_exits.push(0);
        if may_violate {
            want_exits.push(1);
        }
        if may_unjudge {
            want_exits.push(3);
        }
    }
    let why = (!exit.is_some_and(|e| want_exits.contains(&e))).then(|| {
        format!(
            "want verify --crash to exit {want_exits:?}, got {} (5: a verdict and its crash disagree; 4: no dm-log-writes)",
            exit.map_or("nothing".into(), |c| c.to_string())
        )
    });
    score.record(
        why,
        format_args!(
            "crash-truth {label} {} exit status: {}",
            run.label(),
            exit.unwrap_or(-1)
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::named::find;

    /// The console a guest prints when every write is `verdict`/`crash`.
    fn console(verdict: &str, crash: &str, exit: i32) -> String {
        let mut c = String::from("[ 1.0] booting\n");
        for (p, _) in verify::counted_patterns() {
            for i in 0..writes(p) {
                let (w, i) = (i / COUNT, i % COUNT);
                c += &format!(
                    "@@V {{\"type\":\"crash_write\",\"pattern\":\"{p}\",\"mark\":\"{p}/{w}/{i}\",\"index\":{i},\"verdict\":\"{verdict}\",\"crash\":\"{crash}\"}}\n"
                );
            }
        }
        c + &format!("@@VEXIT {exit}\n")
    }

    fn run(kernel: &str, console: &str) -> Score {
        let mut s = Score::default();
        score(kernel, find(kernel).unwrap(), &Run::EXT4, console, &mut s);
        s
    }

    /// Writes into fallocated space extend nothing: on a kernel with only
    /// the size bug they are ordered and kept.
    fn buggy_510() -> String {
        let c = console("violation", "size-lost", 1);
        c.lines()
            .map(|l| {
                if l.contains("into-fallocated") {
                    l.replace("\"violation\"", "\"ordered\"")
                        .replace("size-lost", "kept")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The console of `run`, each write (pattern, index) as `each` says,
    /// and verify's status.
    fn console_of(run: &Run, each: impl Fn(&str, u32) -> Shown, exit: i32) -> String {
        let tag = run.tag();
        let mut c = String::new();
        for (p, writers) in run.counted() {
            for w in 0..writers as u32 {
                for i in 0..COUNT {
                    let (v, crash) = each(p, i);
                    c += &format!(
                        "@@V{tag} {{\"type\":\"crash_write\",\"pattern\":\"{p}\",\"mark\":\"{p}/{w}/{i}\",\"index\":{i},\"verdict\":\"{v}\",\"crash\":\"{crash}\"}}\n"
                    );
                }
            }
        }
        c + &format!("@@VEXIT{tag} {exit}\n")
    }

    type Shown = (&'static str, &'static str);

    /// Every write shows `rest`, but write `index` (of each writer) `one`.
    fn at(index: u32, one: Shown, rest: Shown) -> impl Fn(&str, u32) -> Shown + Copy {
        move |_, i| if i == index { one } else { rest }
    }

    /// `run` scored on `kernel` when its writes show what `shown` says.
    fn go(kernel: &str, run: &Run, shown: impl Fn(&str, u32) -> Shown, exit: i32) -> Score {
        run_on(kernel, run, &console_of(run, shown, exit))
    }

    fn run_on(kernel: &str, run: &Run, console: &str) -> Score {
        let mut s = Score::default();
        score(kernel, find(kernel).unwrap(), run, console, &mut s);
        s
    }

    /// f2fs write by write: a second link makes every fsync checkpoint (a
    /// violation, lost, on the stock kernel; ordered and kept with the
    /// fix); in a new directory only the first does; the first sync to
    /// roll forward after a checkpoint may go unwaited (unjudged).
    #[test]
    fn btrfs_async_dsync_appends_are_lost_where_the_row_says_and_fallocated_ones_are_not_run() {
        let row = |n| crate::kernel::named::find(n).unwrap();
        let run = Run::on("btrfs", Layout::Root, &[]);
        let counted: Vec<&str> = run.counted().into_iter().map(|(p, _)| p).collect();
        assert!(counted.contains(&"aio-dsync-append") && counted.contains(&"o-sync-append"));
        assert!(
            !counted.iter().any(|p| p.contains("into-fallocated")),
            "{counted:?}"
        );
        let xfs = Run::on("xfs", Layout::Root, &[]);
        assert!(xfs.counted().iter().any(|(p, _)| p.contains("into-fallocated")));
        let stock = row("debian-7.3-generic");
        assert!(stock.btrfs_async_dsync_unsynced);
        for p in BTRFS_ASYNC_DSYNC {
            assert_eq!(allowed(stock, &run, p, 0), Some(ASYNC_UNLESS_INLINE), "{p}");
            assert_eq!(allowed(stock, &xfs, p, 0), Some(ORDERED), "XFS syncs them: {p}");
        }
        for p in ["o-dsync-append", "rwf-dsync-append", "concurrent-o-sync-append"] {
            assert_eq!(allowed(stock, &run, p, 1), Some(ORDERED), "{p}");
        }
        let mut unaffected = *stock;
        unaffected.btrfs_async_dsync_unsynced = false;
        assert_eq!(allowed(&unaffected, &run, "aio-dsync-append", 0), Some(ORDERED));
        // CI at 438aad7: one aio append finished inline and was synced.
        let inline = |kept: &'static str| {
            move |p: &str, i: u32| match (p, i) {
                ("aio-dsync-append", 0) => ("ordered", kept),
                (p, _) if BTRFS_ASYNC_DSYNC.contains(&p) => ("violation", "file-lost"),
                _ => ("ordered", "kept"),
            }
        };
        let patterns = counted.len() + 1;
        assert_eq!(go("debian-7.3-generic", &run, inline("kept"), 1).passed, patterns);
        let lost = go("debian-7.3-generic", &run, inline("file-lost"), 1);
        assert_eq!((lost.passed, lost.failed), (patterns - 1, 1));
        // Every async append synced inline: exit 0 is right too.
        let all_inline = go("debian-7.3-generic", &run, |_, _| ("ordered", "kept"), 0);
        assert_eq!(all_inline.failed, 0);
    }

    /// Found by `cargo xtask mutants`: with the size fix but no wait for
    /// every numbered page, a new directory's first concurrent write is a
    /// roll-forward among others, and only a second link makes every one
    /// checkpoint, ordered.
    #[test]
    fn concurrent_checkpoints_with_only_the_size_fix_depend_on_the_layout() {
        let mut row = *find("f2fs-fix-7.3").unwrap();
        row.f2fs_waits_all_numbered = false;
        assert!(!row.f2fs_late_size);
        let on = |layout| Run::on("f2fs", layout, &[CONCURRENT]);
        assert_eq!(
            allowed(&row, &on(Layout::Hardlinked), CONCURRENT, 0),
            Some(ORDERED)
        );
        assert_eq!(
            allowed(&row, &on(Layout::NewDir), CONCURRENT, 0),
            Some(ROLL_FORWARD_SHARED)
        );
    }

    #[test]
    fn f2fs_writes_follow_their_sync_path() {
        let linked = Run::on(
            "f2fs",
            Layout::Hardlinked,
            &["o-sync-append", "concurrent-o-sync-append"],
        );
        let new_dir = Run::on("f2fs", Layout::NewDir, &["o-sync-append"]);
        let root = Run::on("f2fs", Layout::Root, &["o-dsync-append"]);
        let (stock, fixed) = ("debian-7.3-generic", "f2fs-fix-7.3");
        let all = |v, c| move |_: &str, _: u32| (v, c);
        let ok = |s: Score| (s.passed, s.failed);
        assert_eq!(ok(go(stock, &linked, all("violation", "size-lost"), 1)), (3, 0));
        assert_eq!(ok(go(fixed, &linked, all("ordered", "kept"), 0)), (3, 0));
        // The other way round: both fail every pattern.
        assert_eq!(go(stock, &linked, all("ordered", "kept"), 0).failed, 3);
        assert_eq!(go(fixed, &linked, all("violation", "size-lost"), 1).failed, 3);
        // New directory: the first write checkpoints, the second rolls
        // forward, first after that checkpoint: ordered or unjudged.
        let nd = at(0, ("violation", "size-lost"), ("inconclusive", "size-lost"));
        assert_eq!(ok(go(stock, &new_dir, nd, 1)), (2, 0));
        let nd_kept = at(0, ("violation", "size-lost"), ("ordered", "kept"));
        assert_eq!(ok(go(stock, &new_dir, nd_kept, 1)), (2, 0));
        // An ordered write lost is never right; nor a violation with the fix.
        let nd_lost = at(0, ("violation", "size-lost"), ("ordered", "size-lost"));
        assert_eq!(go(stock, &new_dir, nd_lost, 1).failed, 1);
        assert_eq!(go(fixed, &new_dir, nd, 1).failed, 2);
        // Root: only the first write may go unjudged, the next must not.
        let first = at(0, ("inconclusive", "file-lost"), ("ordered", "kept"));
        assert_eq!(ok(go(stock, &root, first, 3)), (2, 0));
        let second = at(1, ("inconclusive", "kept"), ("ordered", "kept"));
        assert_eq!(go(stock, &root, second, 3).failed, 1);
        // With the node-wait fix nothing may go unjudged.
        assert_eq!(go(fixed, &root, first, 3).failed, 2);
        assert_eq!(ok(go(fixed, &root, all("ordered", "kept"), 0)), (2, 0));
        // A status of 5 (or 3 where nothing may be unjudged) fails.
        assert_eq!(go(fixed, &linked, all("ordered", "kept"), 5).failed, 1);
        // (3 fails where nothing may be unjudged: one writer; the fixed
        // kernel's concurrent writers may be, below.)
        let linked_one = Run::on("f2fs", Layout::Hardlinked, &["o-sync-append"]);
        assert_eq!(go(fixed, &linked_one, all("ordered", "kept"), 3).failed, 1);
        // Lines of another run are not this run's.
        let other = console_of(&new_dir, nd, 1);
        assert_eq!(run_on(stock, &root, &other).failed, 2);
        // Concurrent writers: with every fsync checkpointing nothing goes
        // unjudged, and with the fix nothing is a violation; a roll-forward
        // among them may be unjudged, never ordered and lost.
        let conc = Run::on("f2fs", Layout::Hardlinked, &["concurrent-o-sync-append"]);
        assert_eq!(ok(go(fixed, &conc, all("inconclusive", "kept"), 3)), (2, 0));
        assert_eq!(go(fixed, &conc, all("inconclusive", "size-lost"), 3).failed, 1);
        assert_eq!(go(fixed, &conc, all("ordered", "size-lost"), 0).failed, 1);
        let mut two_patches = *crate::kernel::named::find(fixed).unwrap();
        two_patches.f2fs_waits_all_numbered = false;
        assert_eq!(
            f2fs_allowed(&two_patches, Layout::Hardlinked, CONCURRENT, 0),
            ORDERED
        );
        assert_eq!(
            f2fs_allowed(&two_patches, Layout::Root, CONCURRENT, 1),
            ROLL_FORWARD_SHARED
        );
        assert_eq!(go(stock, &conc, all("inconclusive", "kept"), 3).failed, 2);
        assert_eq!(ok(go(stock, &conc, all("violation", "kept"), 1)), (2, 0));
        let conc_root = Run::on("f2fs", Layout::Root, &["concurrent-o-sync-append"]);
        let later = at(0, ("violation", "size-lost"), ("inconclusive", "size-lost"));
        assert_eq!(ok(go(stock, &conc_root, later, 1)), (2, 0));
        let later_lost = at(0, ("violation", "size-lost"), ("ordered", "size-lost"));
        assert_eq!(go(stock, &conc_root, later_lost, 1).failed, 1);
        assert_eq!(go(fixed, &conc_root, all("violation", "size-lost"), 1).failed, 2);
        // A file fsynced before its counted writes (O_APPEND) in a new
        // directory: that fsync takes the checkpoint, so the first counted
        // write is the first roll-forward (maybe unjudged), the second is
        // ordered; never a violation.
        let app = Run::on("f2fs", Layout::NewDir, &["o-append-dsync"]);
        let first_unjudged = at(0, ("inconclusive", "kept"), ("ordered", "kept"));
        assert_eq!(ok(go(stock, &app, first_unjudged, 3)), (2, 0));
        let second_unjudged = at(1, ("inconclusive", "kept"), ("ordered", "kept"));
        assert_eq!(go(stock, &app, second_unjudged, 3).failed, 1);
        let first_violation = at(0, ("violation", "size-lost"), ("ordered", "kept"));
        assert_eq!(go(stock, &app, first_violation, 1).failed, 2);
        // New directory, concurrent writers: a first write that rolls
        // forward (another's checkpoint came first) may be ordered on the
        // stock kernel, and unjudged with the fix.
        let conc_new = Run::on("f2fs", Layout::NewDir, &["concurrent-o-sync-append"]);
        let first_ordered = at(0, ("ordered", "kept"), ("inconclusive", "kept"));
        assert_eq!(ok(go(stock, &conc_new, first_ordered, 3)), (2, 0));
        assert_eq!(ok(go(fixed, &conc_new, all("inconclusive", "kept"), 3)), (2, 0));
        // Writes into fallocated blocks need no size: ordered on both,
        // whatever the layout (a checkpoint keeps the blocks).
        let fall = Run::on("f2fs", Layout::Hardlinked, &["o-dsync-into-fallocated"]);
        assert_eq!(ok(go(stock, &fall, all("ordered", "kept"), 0)), (2, 0));
        assert_eq!(go(stock, &fall, all("violation", "data-lost"), 1).failed, 2);
    }

    /// A run's arguments reach verify: the filesystem, the layout and each
    /// pattern.
    #[test]
    fn each_run_asks_verify_for_its_layout_and_patterns() {
        let run = Run::on("f2fs", Layout::Hardlinked, &["o-sync-append", "o-dsync-append"]);
        let s = script("", &[run, Run::on("xfs", Layout::NewDir, &[])]);
        assert!(
            s.contains(
                "--fs f2fs --layout hardlinked --pattern o-sync-append --pattern o-dsync-append --json"
            ),
            "{s}"
        );
        assert!(s.contains("--fs xfs --layout new-dir --json"), "{s}");
        assert!(s.contains("@@VEXIT:f2fs+hardlinked $rc") && s.contains("@@VEXIT:xfs+new-dir $rc"));
        assert!(Run::EXT4.args().contains("--layout root"));
    }

    /// A pattern no table knows fails, however many writes it reports.
    #[test]
    fn a_pattern_without_a_table_fails_at_any_count() {
        let c = console("ordered", "kept", 0)
            + "@@V {\"type\":\"crash_write\",\"pattern\":\"new-pattern\",\"index\":0,\"verdict\":\"ordered\",\"crash\":\"kept\"}\n"
            + "@@V {\"type\":\"crash_write\",\"pattern\":\"new-pattern\",\"index\":1,\"verdict\":\"ordered\",\"crash\":\"kept\"}\n";
        assert_eq!(run("debian-6.1", &c).failed, 1);
    }

    #[test]
    fn the_script_reports_verifys_own_status_not_a_pipes() {
        let s = script("", &[Run::EXT4]);
        let run = s.lines().find(|l| l.contains("dio-trace verify")).unwrap();
        assert!(!run.contains('|'), "{run}");
        assert!(s.contains("rc=$?") && s.contains("@@VEXIT $rc"));
    }

    #[test]
    fn right_guests_pass() {
        let s = run("debian-6.1", &console("ordered", "kept", 0));
        assert_eq!((s.passed, s.failed), (12, 0));
        let s = run("debian-5.10", &buggy_510());
        assert_eq!((s.passed, s.failed), (12, 0));
    }

    #[test]
    fn faulty_guests_fail() {
        // An ordered write that was lost: the worst outcome.
        let c = console("ordered", "kept", 0).replacen("\"crash\":\"kept\"", "\"crash\":\"size-lost\"", 1);
        assert_eq!(run("debian-6.1", &c).failed, 1);
        // A violation that was kept (a single writer's: nothing hides it).
        let c = buggy_510().replacen("\"crash\":\"size-lost\"", "\"crash\":\"kept\"", 1);
        assert_eq!(run("debian-5.10", &c).failed, 1);
        // Among 8 writers another's commit may close the window: passes.
        let c = buggy_510().replacen(
            "\"mark\":\"concurrent-o-sync-append/0/0\",\"index\":0,\"verdict\":\"violation\",\"crash\":\"size-lost\"",
            "\"mark\":\"concurrent-o-sync-append/0/0\",\"index\":0,\"verdict\":\"violation\",\"crash\":\"kept\"",
            1,
        );
        assert!(c.contains("append/0/0\",\"index\":0,\"verdict\":\"violation\",\"crash\":\"kept"));
        assert_eq!(run("debian-5.10", &c).failed, 0);
        // A buggy kernel whose writes all look fixed.
        assert!(run("debian-5.10", &console("ordered", "kept", 0)).failed >= 9);
        // A write short, a write too many.
        let short: String = console("ordered", "kept", 0)
            .lines()
            .skip(2)
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(run("debian-6.1", &short).failed, 1);
        let c = console("ordered", "kept", 0);
        let extra = c.lines().nth(1).unwrap().to_owned();
        assert_eq!(run("debian-6.1", &format!("{extra}\n{c}")).failed, 1);
        // Disagreement exit status, and no status at all.
        assert_eq!(run("debian-6.1", &console("ordered", "kept", 5)).failed, 1);
        let none = console("ordered", "kept", 0).replace("@@VEXIT 0", "");
        assert_eq!(run("debian-6.1", &none).failed, 1);
        // Nothing at all: every pattern and the status fail.
        assert_eq!(run("debian-6.1", "kernel panic").failed, 12);
        // A pattern nothing knows.
        let c = console("ordered", "kept", 0)
            + "@@V {\"type\":\"crash_write\",\"pattern\":\"new-pattern\",\"verdict\":\"ordered\",\"crash\":\"kept\"}\n";
        assert_eq!(run("debian-6.1", &c).failed, 1);
    }
}
