//! The kernel matrix: every named kernel ([`crate::kernel::named`]) x
//! {fentry, kprobe, tracepoint} x {O_SYNC append, O_DSYNC append, O_APPEND
//! DSYNC, O_DSYNC into fallocated space, 8 concurrent writers}, each case a
//! real `dio-trace run --backend B` inside the guest. One boot per kernel
//! runs all of its cases.
//!
//! What each case must show follows from the kernel's row and the
//! pattern's [`Shape`]: fixed kernels say ORDERED for every counted write;
//! a kernel with the ext4 bug says `sync_before_size_update` for every
//! extending write; one with the O_DSYNC regression says `sync_missing`
//! for every DSYNC append and `sync_missing_new_extent` for every DSYNC
//! write into fallocated space; a backend a kernel cannot serve
//! (tracepoints before 6.4) must be reported as such (exit 3, the missing
//! probe named), and a kernel dio-trace cannot support must be refused
//! with exit 4 and a message naming what to do.

use anyhow::Result;
use serde_json::Value;

use super::{ConsoleMode, VmOptions, traced};
use crate::initramfs::GuestFile;
use crate::kernel::{self, Cache, KernelSpec, Named, named::NAMED};

/// Every named kernel: the matrix CI runs.
pub fn kernels() -> Vec<KernelSpec> {
    NAMED.iter().map(KernelSpec::Named).collect()
}
const BACKENDS: [&str; 3] = ["fentry", "kprobe", "tracepoint"];
/// (pattern, `--count`, writes the kernel makes).
const PATTERNS: [(&str, u64, u64); 5] = [
    ("o-sync-append", 3, 3),
    ("o-dsync-append", 3, 3),
    // The caller's position is inside the file; the kernel's is its end:
    // every backend must judge the write where the kernel put it.
    ("o-append-dsync", 3, 3),
    // Writes that extend nothing, counted for their unwritten blocks.
    ("o-dsync-into-fallocated", 3, 3),
    // The stress case: 8 writers on the guest's 2 CPUs. Every write the
    // kernel makes must be judged, or the run must say how many program
    // runs the kernel skipped (and so be inconclusive), never a quiet short count.
    (STRESS, 8, 64),
];
const STRESS: &str = "concurrent-o-sync-append";

/// What a counted pattern's writes are, as far as the kernels' facts care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// O_SYNC/RWF_SYNC: the kernel never tries write-through, so it syncs.
    pub sync: bool,
    /// Into new or unwritten blocks inside the file: extends nothing.
    pub inside: bool,
}

/// Every counted pattern of `dio-trace write` (the matrix's and
/// `verify`'s) and its shape; a pattern missing here fails its case.
pub fn shape(pattern: &str) -> Option<Shape> {
    let (sync, inside) = match pattern {
        "o-sync-append" | "rwf-sync-append" | "concurrent-o-sync-append" => (true, false),
        "o-dsync-append" | "rwf-dsync-append" | "aio-dsync-append" | "uring-dsync-append"
        | "o-append-dsync" => (false, false),
        "o-sync-into-fallocated" => (true, true),
        "o-dsync-into-fallocated" | "rwf-dsync-into-fallocated" => (false, true),
        _ => return None,
    };
    Some(Shape { sync, inside })
}

/// The violation every write of a pattern of this shape must be on
/// `row`'s kernel, or None where they must be ordered.
pub fn violation(row: &Named, shape: Shape) -> Option<&'static str> {
    match shape {
        Shape { sync: false, inside } if row.dsync_skip => Some(if inside {
            "sync_missing_new_extent"
        } else {
            "sync_missing"
        }),
        Shape { inside: false, .. } if row.bug => Some("sync_before_size_update"),
        _ => None,
    }
}

/// What a case must show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Ordered,
    /// Every counted write a violation of this kind.
    Violation(&'static str),
    /// The pattern has no [`shape`]: nothing says what it must show.
    Unknown,
    /// The backend cannot serve this probe on this kernel.
    Unservable(&'static str),
    /// dio-trace must refuse the kernel: exit 4, saying this.
    Refused(&'static str),
}

/// What a case of `pattern` must show on `row`'s kernel with `--backend
/// backend`; `helped`: the case was given what the refusal asked for (`--btf`).
pub fn want(row: &Named, backend: &str, helped: bool, pattern: &str) -> Want {
    if let (Some(needle), false) = (row.refused, helped) {
        return Want::Refused(needle);
    }
    if let Some(&(_, probe)) = row.unservable.iter().find(|(b, _)| *b == backend) {
        return Want::Unservable(probe);
    }
    expected(row, pattern)
}

/// What every counted write of `pattern` must be on `row`'s kernel, when
/// every probe is served: ordered, a violation of one kind, or unknown
/// (a pattern without a [`shape`]).
pub fn expected(row: &Named, pattern: &str) -> Want {
    match shape(pattern).map(|s| violation(row, s)) {
        None => Want::Unknown,
        Some(Some(kind)) => Want::Violation(kind),
        Some(None) => Want::Ordered,
    }
}

/// One case's outcome as the guest reported it.
#[derive(Debug, Default)]
pub(super) struct Seen {
    exit: Option<i32>,
    summary: Option<Value>,
    /// The kind of each violation line.
    kinds: Option<Vec<String>>,
    /// Violation lines that carry the stacks explaining them (a sync before
    /// the size update: two steps with a stack, the sync's inside
    /// `iomap_dio_complete`; a missing sync: the completion's), and ordered
    /// write lines with any stack (there must be none: an ordered write
    /// sends no stack, unless its sync came first and f2fs's roll-forward
    /// kept it).
    stacks: Option<(u64, u64)>,
    /// The first lines dio-trace printed on stderr.
    err: String,
}

/// The case label of the refusal checked before `--btf` is given.
const WITHOUT_BTF: &str = "without-btf";
/// What that case adds: it names ext4 (`--path` on the ext4 disk), so a
/// kernel whose ext4 cannot be judged must refuse it. A run that names no
/// filesystem starts, and leaves only ext4's writes unjudged.
const ON_EXT4: &str = " --path /mnt";

/// `btf`: ` --btf FILE` for a kernel that needs it (then the refusal
/// without it is checked first), else empty.
fn script(btf: &str) -> String {
    let mut s = String::from("set +e\n");
    let mut cases: Vec<(&str, &str, &str, u64, &str)> = Vec::new();
    if !btf.is_empty() {
        cases.push((WITHOUT_BTF, "kprobe", PATTERNS[0].0, PATTERNS[0].1, ON_EXT4));
    }
    for b in BACKENDS {
        for (p, count, _) in PATTERNS {
            cases.push((b, b, p, count, btf));
        }
    }
    for (label, b, p, count, extra) in cases {
        s += &case_script(label, b, extra, p, count);
    }
    s + "exit 0\n"
}

/// One case in the guest: `dio-trace run --backend b` over `dio-trace
/// write --pattern p` on `/mnt/<label>-<p>`, its exit status, summary,
/// violation kinds, how the stacks explain the violations (and that no
/// ordered write has one, but for an f2fs write whose sync came first and
/// was kept by roll-forward recovery, `cp_reason` 0) and first error
/// lines as `@@` lines for [`parse`].
pub fn case_script(label: &str, b: &str, extra: &str, p: &str, count: u64) -> String {
    format!(
        "dio-trace run --backend {b}{extra} --json -- dio-trace write --pattern {p} --count {count} /mnt/{label}-{p} >/tmp/out 2>/tmp/err\n\
         echo \"@@CASE {label} {p} $?\"\n\
         grep '\"type\":\"summary\"' /tmp/out | sed 's/^/@@SUMMARY /'\n\
         echo \"@@KINDS $(grep '\"type\":\"violation\"' /tmp/out | grep -o '\"kind\":\"[a-z_]*\"' | cut -d'\"' -f4 | tr '\\n' ' ')\"\n\
         echo \"@@STACKS $(awk '/\"type\":\"violation\"/ {{ n = gsub(/\"stack\":/, \"&\"); \
         if (/\"kind\":\"sync_before_size_update\"/ ? (n >= 2 && /iomap_dio_complete[+]/) : n >= 1) e++ }} END {{ print e+0 }}' /tmp/out) \
         $(grep '\"type\":\"write\"' /tmp/out | grep '\"verdict\":\"ordered\"' | grep '\"stack\":' | grep -vc '\"cp_reason\":0')\"\n\
         sed 's/^/@@ERR /' /tmp/err | head -5\n"
    )
}

/// Parse the guest's `@@` lines into (backend, pattern) -> Seen.
pub(super) fn parse(console: &str) -> Vec<((String, String), Seen)> {
    let mut out: Vec<((String, String), Seen)> = Vec::new();
    for line in console.lines() {
        let Some(at) = line.find("@@") else { continue };
        let rest = &line[at + 2..];
        if let Some(c) = rest.strip_prefix("CASE ") {
            let f: Vec<&str> = c.split_whitespace().collect();
            if let [b, p, code] = f[..] {
                out.push((
                    (b.into(), p.into()),
                    Seen {
                        exit: code.parse().ok(),
                        ..Seen::default()
                    },
                ));
            }
        } else if let Some(j) = rest.strip_prefix("SUMMARY ") {
            if let Some((_, s)) = out.last_mut() {
                s.summary = serde_json::from_str(j).ok();
            }
        } else if let Some(k) = rest.strip_prefix("KINDS")
            && let Some((_, s)) = out.last_mut()
        {
            s.kinds = Some(k.split_whitespace().map(str::to_owned).collect());
        } else if let Some(n) = rest.strip_prefix("STACKS ")
            && let Some((_, s)) = out.last_mut()
        {
            let mut f = n.split_whitespace().map(|x| x.parse().ok());
            if let (Some(Some(explained)), Some(Some(stray))) = (f.next(), f.next()) {
                s.stacks = Some((explained, stray));
            }
        } else if let Some(e) = rest.strip_prefix("ERR ")
            && let Some((_, s)) = out.last_mut()
        {
            s.err += e;
            s.err += "\n";
        }
    }
    out
}

/// The guest's report of (backend, pattern), if it made one.
pub(super) fn find_case<'a>(
    seen: &'a [((String, String), Seen)],
    backend: &str,
    pattern: &str,
) -> Option<&'a Seen> {
    seen.iter()
        .find(|((b, p), _)| b == backend && p == pattern)
        .map(|(_, s)| s)
}

/// [`judge`] a case, or say that the guest never reported it.
pub(super) fn judged(
    want: Want,
    backend: &str,
    case_def: (&str, u64, u64),
    case: Option<&Seen>,
    outcome: &super::Outcome,
) -> Option<String> {
    match case {
        Some(s) => judge(want, backend, case_def, s),
        None => Some(format!(
            "the guest did not report this case: {}",
            outcome.failure()
        )),
    }
}

/// Why a case fails, or None when it shows what it must.
pub(super) fn judge(
    want: Want,
    backend: &str,
    (pattern, _, writes): (&str, u64, u64),
    seen: &Seen,
) -> Option<String> {
    if let Want::Refused(needle) = want {
        let ok = seen.exit == Some(4) && seen.err.contains(needle);
        return (!ok).then(|| {
            format!(
                "want exit 4 naming {needle:?}, got exit {:?}: {}",
                seen.exit, seen.err
            )
        });
    }
    let Some(sum) = &seen.summary else {
        return Some(format!("no summary line (exit {:?})", seen.exit));
    };
    let num = |k: &str| sum[k].as_u64().unwrap_or(u64::MAX);
    let got = format!(
        "exit {:?}, counted {}, ordered {}, violations {} {:?}, \
         (violations explained by stacks, ordered writes with stacks) {:?}, reasons {}",
        seen.exit, sum["counted"], sum["ordered"], sum["violations"], seen.kinds, seen.stacks, sum["reasons"]
    );
    // Every violation carries the stacks that explain it; no ordered
    // write carries any.
    let (explained, stray) = seen.stacks.unwrap_or((0, u64::MAX));
    let mech = sum["probes"]["write_begin"].as_str().unwrap_or("");
    // A forced backend must be the one that served; `auto` takes the best.
    let forced = backend == "auto" || mech.starts_with(backend);
    // Under stress, a short count is allowed only where the kernel's
    // skipped program runs cover it and the answer is not a clean one.
    let short = writes.saturating_sub(num("counted"));
    let skipped = skipped_runs(sum);
    // The kernel skipped runs (named, counted) and the answer says so: the
    // writes it made are judged or covered by the skips, and no verdict
    // that a skipped size update or sync could fake is believed.
    let doubted = sum["reasons"]
        .to_string()
        .contains("violations cannot be trusted");
    let excused = pattern == STRESS
        && skipped >= short
        && skipped > 0
        && seen.exit == Some(3)
        && (num("violations") == 0 || doubted);
    let ok = match want {
        Want::Ordered => {
            forced
                && stray == 0
                && ((seen.exit == Some(0) && short == 0 && num("ordered") == num("counted"))
                    || (excused
                        && num("ordered")
                            .saturating_add(num("violations"))
                            .saturating_add(num("inconclusive"))
                            == num("counted")))
        }
        Want::Violation(kind) => {
            let of_kind = seen
                .kinds
                .as_ref()
                .map_or(0, |ks| ks.iter().filter(|k| *k == kind).count() as u64);
            let all = num("violations") == num("counted")
                && of_kind == num("counted")
                && explained == num("violations");
            forced
                && ((seen.exit == Some(1) && all && (short == 0 || (pattern == STRESS && skipped >= short)))
                    || (excused && num("ordered") == 0))
        }
        Want::Refused(_) | Want::Unknown => false,
        Want::Unservable(probe) => {
            seen.exit == Some(3)
                && sum["probes"][probe].is_null()
                && sum["reasons"]
                    .to_string()
                    .contains(&format!("probe {probe} could not attach"))
        }
    };
    (!ok).then(|| format!("want {want:?}, got {got} (write_begin served by {mech:?})"))
}

/// One line of the README's support table: what served each probe in
/// the guest, and the answer dio-trace gave.
fn support_row(row: &Named, backend: &str, seen: &Seen) -> String {
    let probe = |sum: &Value, p: &str| sum["probes"][p].as_str().unwrap_or("-").to_owned();
    let (probes, answer) = match &seen.summary {
        Some(sum) => (
            ["write_begin", "size_update", "sync_enter", "dio_complete"].map(|p| probe(sum, p)),
            format!(
                "{} ({} of {} counted, exit {})",
                sum["verdict"].as_str().unwrap_or("?"),
                sum["counted"],
                sum["writes"],
                seen.exit.unwrap_or(-1)
            ),
        ),
        None => (
            ["-"; 4].map(str::to_owned),
            format!(
                "refused, exit {}: {}",
                seen.exit.unwrap_or(-1),
                seen.err.lines().next().unwrap_or("")
            ),
        ),
    };
    format!(
        "| {} | {} | {backend} | {} | {} | {} | {} | {answer} |",
        row.name, row.about, probes[0], probes[1], probes[2], probes[3]
    )
}

/// The program runs the kernel skipped, from the summary's reason.
fn skipped_runs(sum: &Value) -> u64 {
    sum["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str()?.strip_prefix("the kernel skipped "))
        .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Counts of a matrix run.
#[derive(Default)]
pub struct Score {
    pub passed: usize,
    pub failed: usize,
}

impl Score {
    /// Count one case and print its PASS/FAIL line (`why`: the failure).
    pub fn record(&mut self, why: Option<String>, case: std::fmt::Arguments<'_>) {
        match why {
            None => {
                self.passed += 1;
                println!("PASS {case}");
            }
            Some(why) => {
                self.failed += 1;
                println!("FAIL {case}: {why}");
            }
        }
    }
}

/// Run the matrix on `kernels`; prints a PASS/FAIL line per case.
pub fn run(kernels: &[KernelSpec], opts: &VmOptions) -> Result<Score> {
    let cache = Cache::from_env()?;
    let dio: GuestFile = traced::dio_trace_file()?;
    let mut score = Score::default();
    let mut table = Vec::new();
    for spec in kernels {
        let Some(row) = spec.row() else {
            println!("SKIPPED matrix {spec}: not a named kernel, so nothing says what it must show");
            continue;
        };
        let kernel = kernel::resolve(spec, &cache)?;
        let helped = kernel.ext4_btf.is_some();
        let outcome = traced::boot_with_dio(&kernel, &dio, &script(&traced::btf_arg(&kernel)), opts)?;
        let seen = parse(&outcome.console);
        if helped {
            let case = seen.iter().find(|((b, _), _)| b == WITHOUT_BTF).map(|(_, s)| s);
            let want_refused = want(row, "kprobe", false, PATTERNS[0].0);
            let why = judged(want_refused, "kprobe", PATTERNS[0], case, &outcome);
            score.record(
                why,
                format_args!(
                    "{spec} {WITHOUT_BTF}: {:?}",
                    want(row, "kprobe", false, PATTERNS[0].0)
                ),
            );
        }
        for b in BACKENDS {
            for case_def @ (p, _, _) in PATTERNS {
                let case = find_case(&seen, b, p);
                let why = judged(want(row, b, helped, p), b, case_def, case, &outcome);
                if let (Some(s), "o-sync-append") = (case, p) {
                    table.push(support_row(row, b, s));
                }
                score.record(why, format_args!("{spec} {b} {p}: {:?}", want(row, b, helped, p)));
            }
        }
        println!("xtask: {spec}: {:.1} s in QEMU", outcome.elapsed.as_secs_f64());
    }
    println!("xtask: kernel support table (README), O_SYNC appends:");
    println!("| kernel | what | backend | write_begin | size_update | sync_enter | dio_complete | answer |");
    println!("|---|---|---|---|---|---|---|---|");
    for line in table {
        println!("{line}");
    }
    Ok(score)
}

/// Options for unattended matrix and crash runs.
pub fn quiet_options() -> VmOptions {
    VmOptions {
        console: ConsoleMode::Quiet,
        append: vec!["quiet".into(), "loglevel=1".into()],
        ..VmOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_follow_the_kernels() {
        let row = |n| kernel::named::find(n).unwrap();
        let w = |n, b, p| want(row(n), b, false, p);
        let sbsu = Want::Violation("sync_before_size_update");
        assert_eq!(w("buggy-6.1", "fentry", "o-sync-append"), sbsu);
        assert_eq!(w("debian-5.10", "kprobe", "o-dsync-append"), sbsu);
        // The ext4 bug is about the size: writes inside the file sync fine.
        assert_eq!(w("buggy-6.1", "kprobe", "o-dsync-into-fallocated"), Want::Ordered);
        assert_eq!(
            w("buggy-6.1", "tracepoint", "o-sync-append"),
            Want::Unservable("write_begin")
        );
        assert_eq!(w("debian-6.12", "tracepoint", "o-sync-append"), Want::Ordered);
        assert_eq!(w("debian-6.1", "kprobe", "o-sync-append"), Want::Ordered);
        assert_eq!(
            w("debian-6.1-generic", "fentry", "o-sync-append"),
            Want::Unservable("write_begin")
        );
        let generic = row("debian-5.10-generic");
        assert!(matches!(
            want(generic, "kprobe", false, "o-sync-append"),
            Want::Refused(_)
        ));
        assert_eq!(want(generic, "kprobe", true, "o-sync-append"), sbsu);
        // The refusal is asked for by naming ext4: a run over every
        // filesystem starts, leaving ext4's writes unjudged.
        let refusal = script(" --btf /ext4.btf")
            .lines()
            .find(|l| l.contains(&format!("/mnt/{WITHOUT_BTF}-")))
            .unwrap_or_default()
            .to_owned();
        assert!(
            refusal.contains("--path /mnt") && !refusal.contains("--btf"),
            "{refusal}"
        );
        assert_eq!(
            want(generic, "fentry", true, "o-sync-append"),
            Want::Unservable("size_update")
        );
        // The O_DSYNC regression: DSYNC writes into new blocks, and only those.
        assert_eq!(w("buggy-7.3", "kprobe", "o-sync-append"), Want::Ordered);
        assert_eq!(w("buggy-7.3", "kprobe", STRESS), Want::Ordered);
        assert_eq!(
            w("buggy-7.3", "fentry", "o-dsync-append"),
            Want::Violation("sync_missing")
        );
        assert_eq!(
            w("buggy-7.3", "fentry", "o-append-dsync"),
            Want::Violation("sync_missing")
        );
        assert_eq!(
            w("buggy-7.3", "tracepoint", "o-dsync-into-fallocated"),
            Want::Violation("sync_missing_new_extent")
        );
        assert_eq!(
            w("debian-7.3", "tracepoint", "o-dsync-into-fallocated"),
            Want::Ordered
        );
        assert_eq!(w("buggy-7.3", "kprobe", "no-such-pattern"), Want::Unknown);
        for (p, _, _) in PATTERNS {
            assert!(shape(p).is_some(), "{p} has no shape");
        }
    }

    #[test]
    fn parses_and_judges_guest_lines() {
        let console = "noise\n@@CASE kprobe o-sync-append 1\n@@SUMMARY {\"counted\":3,\"ordered\":0,\"violations\":3,\"probes\":{\"write_begin\":\"kprobe:iomap_dio_rw\"},\"reasons\":[]}\n[ 1.0] kernel line\n@@KINDS sync_before_size_update sync_before_size_update sync_before_size_update \n@@STACKS 3 0\n";
        let seen = parse(console);
        assert_eq!(seen.len(), 1);
        let case = PATTERNS[0];
        let sbsu = Want::Violation("sync_before_size_update");
        assert_eq!(judge(sbsu, "kprobe", case, &seen[0].1), None);
        assert!(judge(Want::Ordered, "kprobe", case, &seen[0].1).is_some());
        // Violations of another kind are not the ones the kernel has.
        assert!(judge(Want::Violation("sync_missing"), "kprobe", case, &seen[0].1).is_some());
        // A verdict from the wrong mechanism does not count.
        assert!(judge(sbsu, "fentry", case, &seen[0].1).is_some());
        // A violation without the stacks that explain it does not count.
        let unexplained = parse(&console.replace("@@STACKS 3 0", "@@STACKS 2 0"));
        assert!(judge(sbsu, "kprobe", case, &unexplained[0].1).is_some());
    }

    #[test]
    fn a_short_stress_count_passes_only_when_the_kernel_said_why() {
        let stress = PATTERNS[4];
        let line = |exit: i32, counted: u64, reasons: &str| {
            format!(
                "@@CASE fentry {STRESS} {exit}\n@@SUMMARY {{\"counted\":{counted},\"ordered\":{counted},\"violations\":0,\"inconclusive\":0,\"probes\":{{\"write_begin\":\"fentry:iomap_dio_rw\"}},\"reasons\":[{reasons}]}}\n@@KINDS \n@@STACKS 0 0\n"
            )
        };
        let judge_line = |text: String| judge(Want::Ordered, "fentry", stress, &parse(&text)[0].1);
        assert_eq!(judge_line(line(0, 64, "")), None);
        assert!(judge_line(line(0, 62, "")).is_some(), "a quiet short count fails");
        let why = "\"the kernel skipped 2 runs of dio-trace's programs\"";
        assert_eq!(judge_line(line(3, 62, why)), None);
        assert!(
            judge_line(line(3, 61, why)).is_some(),
            "2 skipped runs cannot hide 3 writes"
        );
    }
}
