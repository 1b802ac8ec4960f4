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
    NAMED.iter().filter(|n| n.matrix).map(KernelSpec::Named).collect()
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
    /// Every counted write inconclusive (exit 3): the kernel did something
    /// dio-trace cannot prove durable (f2fs's first node page after a
    /// checkpoint, which it does not wait for). The reason is the engine's
    /// to test; the guest's summary does not carry it.
    Unjudged,
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

/// [`expected`] for a write on `fs`: the row's `bug` is ext4's own order
/// (its size journaled after iomap's sync), which no other filesystem
/// has; what iomap does (`dsync_skip`) every iomap filesystem shares.
pub fn expected_on(row: &Named, fs: &str, pattern: &str) -> Want {
    let row = Named {
        bug: row.bug && fs == "ext4",
        ..*row
    };
    expected(&row, pattern)
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
    for (p, count, _) in PATTERNS {
        s += &case_script(COUNTED, "kprobe", &format!("{btf} --show problems"), p, count);
    }
    s + "exit 0\n"
}

/// The label of the cases run again under kprobes with `--show problems`:
/// their ordered writes are counted in the kernel, not sent, and their
/// answers must be the kprobe cases' own, count for count (issue 21).
pub(super) const COUNTED: &str = "counted";

/// Why a [`COUNTED`] case's answer is not the one its writes gave when
/// sent (`sent`, the kprobe case of the same pattern), or None. Runs the
/// kernel skipped programs in make two runs differ for their own
/// reasons: not compared then. A counted run must also have counted its
/// ordered writes in the kernel (`ordered_counted`), and the sent run
/// none.
fn counted_differs(counted: &Seen, sent: &Seen) -> Option<String> {
    let (Some(c), Some(s)) = (&counted.summary, &sent.summary) else {
        return Some("a run without its summary".into());
    };
    let skipped = |v: &Value| v["skipped"].as_object().is_some_and(|m| !m.is_empty());
    if skipped(c) || skipped(s) {
        return None;
    }
    let fields = [
        "writes",
        "counted",
        "ordered",
        "violations",
        "inconclusive",
        "failed",
        "verdict",
        "reasons",
    ];
    let differ: Vec<String> = fields
        .iter()
        .filter(|f| c[**f] != s[**f])
        .map(|f| format!("{f} {} (sent: {})", c[*f], s[*f]))
        .collect();
    let (ordered, in_kernel, sent_counted) = (
        c["ordered"].as_u64().unwrap_or(0),
        c["counters"]["ordered_counted"].as_u64().unwrap_or(0),
        s["counters"]["ordered_counted"].as_u64().unwrap_or(u64::MAX),
    );
    if !differ.is_empty() || counted.exit != sent.exit {
        Some(format!(
            "counted and sent differ: {}, exit {:?} (sent: {:?})",
            differ.join(", "),
            counted.exit,
            sent.exit
        ))
    } else if (ordered > 0) != (in_kernel > 0) || in_kernel > ordered || sent_counted != 0 {
        Some(format!(
            "{ordered} ordered writes, {in_kernel} of them counted in the kernel ({sent_counted} when sent)"
        ))
    } else {
        None
    }
}

/// [`judged`] for the [`COUNTED`] case of `case_def`'s pattern, then
/// compared with the same pattern's case under `backend`, sent
/// ([`counted_differs`]; a missing sent case fails on its own).
pub(super) fn counted_judged(
    want: Want,
    backend: &str,
    case_def: (&str, u64, u64),
    seen: &[((String, String), Seen)],
    outcome: &super::Outcome,
) -> Option<String> {
    let case = find_case(seen, COUNTED, case_def.0);
    judged(want, backend, case_def, case, outcome).or_else(|| {
        let sent = find_case(seen, backend, case_def.0)?;
        counted_differs(case?, sent)
    })
}

/// One case in the guest: `dio-trace run --backend b` over `dio-trace
/// write --pattern p` on `/mnt/<label>-<p>`, its exit status, summary,
/// violation kinds, how the stacks explain the violations (and that no
/// ordered write has one, but for an f2fs write whose sync came first and
/// was kept by roll-forward recovery, `cp_reason` 0) and first error
/// lines as `@@` lines for [`parse`].
pub fn case_script(label: &str, b: &str, extra: &str, p: &str, count: u64) -> String {
    case_script_in("/mnt", label, b, extra, p, count)
}

/// [`case_script`] with the file in `dir` instead of `/mnt`.
pub fn case_script_in(dir: &str, label: &str, b: &str, extra: &str, p: &str, count: u64) -> String {
    format!(
        "dio-trace run --backend {b}{extra} --json -- dio-trace write --pattern {p} --count {count} {dir}/{label}-{p} >/tmp/out 2>/tmp/err\n\
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
    // A field the summary lacks fails the case: it never compares equal
    // to another missing one.
    let mut missing = Vec::new();
    let mut num = |k: &'static str| {
        sum[k].as_u64().unwrap_or_else(|| {
            missing.push(k);
            0
        })
    };
    let (counted, ordered, violations, inconclusive) = (
        num("counted"),
        num("ordered"),
        num("violations"),
        num("inconclusive"),
    );
    if !missing.is_empty() && !matches!(want, Want::Unservable(_)) {
        return Some(format!("the summary has no {missing:?}: {sum}"));
    }
    let got = format!(
        "exit {:?}, counted {}, ordered {}, violations {} {:?}, \
         (violations explained by stacks, ordered writes with stacks) {:?}, skipped {}, reasons {}",
        seen.exit,
        sum["counted"],
        sum["ordered"],
        sum["violations"],
        seen.kinds,
        seen.stacks,
        sum["skipped"],
        sum["reasons"]
    );
    // Every violation carries the stacks that explain it; no ordered
    // write carries any.
    let (explained, stray) = seen.stacks.unwrap_or((0, u64::MAX));
    let mech = sum["probes"]["write_begin"].as_str().unwrap_or("");
    // A forced backend must be the one that served; `auto` takes the best.
    let forced = backend == "auto" || mech.starts_with(backend);
    // Each write the kernel made is counted once: never more. Fewer only
    // under stress, where the kernel's skipped runs of a program whose
    // miss hides a write cover the shortfall and the answer is not a
    // clean one ([`stress_excuse`]).
    let exact = counted == writes;
    let excused = pattern == STRESS && stress_excuse(sum, writes, counted, seen.exit);
    let doubted = sum["reasons"]
        .to_string()
        .contains("violations cannot be trusted");
    let of_kind = |kind: &str| {
        seen.kinds
            .as_ref()
            .map_or(0, |ks| ks.iter().filter(|k| *k == kind).count() as u64)
    };
    let ok = match want {
        Want::Ordered => {
            forced
                && stray == 0
                && ((seen.exit == Some(0) && exact && ordered == counted)
                    // A skipped sync can fake a violation: only a doubted one.
                    || (excused
                        && (violations == 0 || (doubted && fakes_violations(sum)))
                        && ordered + violations + inconclusive == counted))
        }
        Want::Violation(kind) => {
            let all = violations == counted && of_kind(kind) == counted && explained == violations;
            let found = violations > 0
                && ordered == 0
                && of_kind(kind) == violations
                && explained == violations
                && violations + inconclusive == counted;
            forced && ((seen.exit == Some(1) && exact && all) || (excused && found))
        }
        Want::Unjudged => {
            forced
                && seen.exit == Some(3)
                && exact
                && inconclusive == counted
                && ordered == 0
                && violations == 0
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

/// The probes whose skipped runs can hide a whole write from the count:
/// a write whose start was not seen is never armed, and a writer whose
/// fork was not followed is never let through the `run` filter. A skipped
/// size update or sync cannot shorten the count (it doubts the verdict
/// instead, which the reasons say).
const HIDING_PROBES: [&str; 2] = ["write_begin", "follow_fork"];

/// A stress run that is not a clean count is excused only when the
/// kernel skipped runs of dio-trace's programs and dio-trace said the
/// answer is inconclusive (exit 3); and a count short of `writes` only
/// when the skipped runs of [`HIDING_PROBES`] cover the shortfall. A run
/// whose writes start on a kprobe gets no excuse: kprobe programs run with
/// preemption off and skipped nothing in 18 of 18 measured runs
/// (catalog.rs).
fn stress_excuse(sum: &Value, writes: u64, counted: u64, exit: Option<i32>) -> bool {
    let kprobe = sum["probes"]["write_begin"]
        .as_str()
        .is_some_and(|m| m.starts_with("kprobe"));
    let skipped =
        |probes: &[&str]| -> u64 { probes.iter().filter_map(|p| sum["skipped"][*p].as_u64()).sum() };
    let any = sum["skipped"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>());
    !kprobe && exit == Some(3) && any > 0 && counted <= writes && writes - counted <= skipped(&HIDING_PROBES)
}

/// The probes whose skipped runs can make a write look like a violation:
/// a size update or sync that happened but was not seen. Only their skips
/// excuse a violation on a kernel whose writes are ordered (dio-trace
/// then says violations cannot be trusted).
fn fakes_violations(sum: &Value) -> bool {
    ["size_update", "sync_enter"]
        .iter()
        .any(|p| sum["skipped"][*p].as_u64().is_some_and(|n| n > 0))
}

/// One line of the support table (docs/kernel-support.md): what served each probe in
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
    let mut jobs = Vec::new();
    for spec in kernels {
        let Some(row) = spec.row() else {
            println!("SKIPPED matrix {spec}: not a named kernel, so nothing says what it must show");
            continue;
        };
        jobs.push((spec, row, kernel::resolve(spec, &cache)?));
    }
    let outcomes = super::side_by_side::map(&jobs, |(_, _, kernel)| {
        traced::boot_with_dio(kernel, &dio, &script(&traced::btf_arg(kernel)), opts)
    });
    for ((spec, row, kernel), outcome) in jobs.iter().zip(outcomes) {
        let outcome = outcome?;
        let helped = kernel.ext4_btf.is_some();
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
        for case_def @ (p, _, _) in PATTERNS {
            let want = want(row, "kprobe", helped, p);
            let why = counted_judged(want, "kprobe", case_def, &seen, &outcome);
            score.record(why, format_args!("{spec} {COUNTED} {p}: {want:?}, as when sent"));
        }
        println!("xtask: {spec}: {:.1} s in QEMU", outcome.elapsed.as_secs_f64());
    }
    println!("xtask: kernel support table (docs/kernel-support.md), O_SYNC appends:");
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
        assert_eq!(w("buggy-6.1", "kprobe", "o-sync-append"), sbsu);
        assert_eq!(w("debian-5.10", "fentry", "o-sync-append"), sbsu);
        assert_eq!(w("debian-5.10", "kprobe", "o-dsync-append"), sbsu);
        // buggy-6.1's ext4 is a rebuilt module: no fentry on its functions.
        assert_eq!(
            w("buggy-6.1", "fentry", "o-sync-append"),
            Want::Unservable("write_begin")
        );
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
        let console = "noise\n@@CASE kprobe o-sync-append 1\n@@SUMMARY {\"counted\":3,\"ordered\":0,\"violations\":3,\"inconclusive\":0,\"probes\":{\"write_begin\":\"kprobe:iomap_dio_rw\"},\"reasons\":[]}\n[ 1.0] kernel line\n@@KINDS sync_before_size_update sync_before_size_update sync_before_size_update \n@@STACKS 3 0\n";
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

    /// A stress case's guest lines: `exit`, the summary's counts, the
    /// write start's mechanism and the skipped runs by probe.
    fn stress_line(exit: i32, mech: &str, c: [u64; 4], kinds: &str, skipped: &str) -> String {
        let [counted, ordered, violations, inconclusive] = c;
        format!(
            "@@CASE {mech} {STRESS} {exit}\n@@SUMMARY {{\"counted\":{counted},\"ordered\":{ordered},\"violations\":{violations},\"inconclusive\":{inconclusive},\"probes\":{{\"write_begin\":\"{mech}:iomap_dio_rw\"}},\"skipped\":{{{skipped}}},\"reasons\":[]}}\n@@KINDS {kinds}\n@@STACKS {violations} 0\n"
        )
    }

    fn judge_stress(want: Want, text: String) -> Option<String> {
        let mech = parse(&text)[0].0.0.clone();
        judge(want, &mech, PATTERNS[4], &parse(&text)[0].1)
    }

    #[test]
    fn a_short_stress_count_passes_only_when_hiding_skips_cover_it() {
        let o = Want::Ordered;
        let line =
            |exit, counted, skipped| stress_line(exit, "fentry", [counted, counted, 0, 0], "", skipped);
        assert_eq!(judge_stress(o, line(0, 64, "")), None);
        assert!(
            judge_stress(o, line(0, 62, "")).is_some(),
            "a quiet short count fails"
        );
        assert_eq!(judge_stress(o, line(3, 62, "\"write_begin\":2")), None);
        assert!(
            judge_stress(o, line(3, 61, "\"write_begin\":2")).is_some(),
            "2 skipped runs cannot hide 3 writes"
        );
        assert!(
            judge_stress(o, line(3, 62, "\"sync_enter\":9")).is_some(),
            "a skipped sync cannot hide a write"
        );
        // Counted exactly, inconclusive for a skipped completion: honest.
        assert_eq!(judge_stress(o, line(3, 64, "\"dio_complete\":1")), None);
        let kprobe = stress_line(3, "kprobe", [62, 62, 0, 0], "", "\"write_begin\":2");
        assert!(judge_stress(o, kprobe).is_some(), "kprobe runs get no excuse");
    }

    #[test]
    fn stress_on_a_buggy_kernel_passes_only_with_violations_found() {
        let v = Want::Violation("sync_before_size_update");
        let skip = "\"write_begin\":2,\"size_update\":1";
        let kinds = |n: usize| "sync_before_size_update ".repeat(n);
        assert_eq!(
            judge_stress(v, stress_line(1, "fentry", [64, 0, 64, 0], &kinds(64), "")),
            None
        );
        assert_eq!(
            judge_stress(v, stress_line(3, "fentry", [62, 0, 60, 2], &kinds(60), skip)),
            None
        );
        assert!(
            judge_stress(v, stress_line(3, "fentry", [62, 0, 0, 62], "", skip)).is_some(),
            "all inconclusive is no violation found"
        );
        assert!(
            judge_stress(v, stress_line(3, "fentry", [62, 2, 60, 0], &kinds(60), skip)).is_some(),
            "an ordered write on a buggy kernel"
        );
        // A fixed kernel: a violation passes only where a skipped size
        // update or sync could have faked it and dio-trace doubts it.
        let doubted = |skipped: &str| {
            stress_line(3, "fentry", [64, 63, 1, 0], "sync_before_size_update", skipped).replace(
                "\"reasons\":[]",
                "\"reasons\":[\"violations cannot be trusted: x\"]",
            )
        };
        assert_eq!(judge_stress(Want::Ordered, doubted("\"sync_enter\":1")), None);
        assert!(judge_stress(Want::Ordered, doubted("\"dio_complete\":1")).is_some());
    }

    #[test]
    fn unjudged_wants_every_write_inconclusive_and_exit_3() {
        let case = PATTERNS[0];
        let text = |exit: u8, ordered: u64, inconclusive: u64| {
            format!(
                "@@CASE kprobe o-sync-append {exit}\n@@SUMMARY {{\"counted\":3,\"ordered\":{ordered},\"violations\":0,\"inconclusive\":{inconclusive},\"probes\":{{\"write_begin\":\"kprobe:iomap_dio_rw\"}},\"reasons\":[]}}\n@@KINDS \n@@STACKS 0 0\n"
            )
        };
        let want = Want::Unjudged;
        let j = |t: String| judge(want, "kprobe", case, &parse(&t)[0].1);
        assert_eq!(j(text(3, 0, 3)), None);
        assert!(j(text(0, 3, 0)).is_some(), "ordered is not unjudged");
        assert!(j(text(3, 1, 2)).is_some(), "one ordered among them");
        assert!(j(text(1, 0, 3)).is_some(), "the wrong status");
        assert!(judge(want, "fentry", case, &parse(&text(3, 0, 3))[0].1).is_some());
    }

    #[test]
    fn overcounts_and_missing_fields_fail() {
        let case = PATTERNS[0];
        let text = |counted: u64| {
            format!(
                "@@CASE kprobe o-sync-append 0\n@@SUMMARY {{\"counted\":{counted},\"ordered\":{counted},\"violations\":0,\"inconclusive\":0,\"probes\":{{\"write_begin\":\"kprobe:iomap_dio_rw\"}},\"reasons\":[]}}\n@@KINDS \n@@STACKS 0 0\n"
            )
        };
        let j = |t: String| judge(Want::Ordered, "kprobe", case, &parse(&t)[0].1);
        assert_eq!(j(text(3)), None);
        assert!(j(text(4)).is_some(), "4 counted for 3 made");
        assert!(j(text(2)).is_some(), "2 counted for 3 made");
        let bare = text(3)
            .replace("\"counted\":3,\"ordered\":3,", "")
            .replace("\"violations\":0,", "");
        assert!(j(bare).is_some(), "a summary without its counts");
        let sbsu = Want::Violation("sync_before_size_update");
        let no_counts = "@@CASE kprobe o-sync-append 1\n@@SUMMARY {\"probes\":{\"write_begin\":\"kprobe:x\"}}\n@@KINDS \n@@STACKS 0 0\n";
        assert!(judge(sbsu, "kprobe", case, &parse(no_counts)[0].1).is_some());
    }

    // Found by `cargo xtask mutants` (issue 23): the guest script, the
    // lookup of a case and the refusal and unservable judgements had no
    // test that could fail.
    #[test]
    fn the_matrix_is_every_named_kernel_its_row_puts_there() {
        let ks = kernels();
        let rows: Vec<&Named> = NAMED.iter().filter(|n| n.matrix).collect();
        assert_eq!(ks.len(), rows.len());
        assert!(rows.len() < NAMED.len(), "the f2fs pair stay out");
        for (k, row) in ks.iter().zip(rows) {
            assert_eq!(k.row().map(|r| r.name), Some(row.name));
        }
    }

    #[test]
    fn the_guest_runs_every_backend_and_pattern_once() {
        let s = script("");
        assert!(s.starts_with("set +e\n") && s.ends_with("exit 0\n"), "{s}");
        assert!(!s.contains(WITHOUT_BTF) && !s.contains("--btf"));
        for b in BACKENDS {
            for (p, count, _) in PATTERNS {
                let run = format!(
                    "dio-trace run --backend {b} --json -- dio-trace write --pattern {p} --count {count} /mnt/{b}-{p} >"
                );
                assert_eq!(s.matches(&run).count(), 1, "{run}");
                assert_eq!(s.matches(&format!("echo \"@@CASE {b} {p} $?\"")).count(), 1);
            }
        }
        // And each pattern once more under kprobes, its ordered writes
        // counted in the kernel.
        for (p, count, _) in PATTERNS {
            let run = format!(
                "dio-trace run --backend kprobe --show problems --json -- dio-trace write --pattern {p} --count {count} /mnt/{COUNTED}-{p} >"
            );
            assert_eq!(s.matches(&run).count(), 1, "{run}");
        }
        let cases = (BACKENDS.len() + 1) * PATTERNS.len();
        assert_eq!(s.matches("@@CASE").count(), cases);
        for marker in ["@@SUMMARY", "@@KINDS", "@@STACKS", "@@ERR"] {
            assert_eq!(s.matches(marker).count(), cases, "{marker}");
        }
        // A kernel that needs --btf: first the refusal without it, then
        // every case with it.
        let s = script(" --btf /btf");
        let (p, count, _) = PATTERNS[0];
        let first = s.lines().nth(1).unwrap();
        assert_eq!(
            first,
            format!(
                "dio-trace run --backend kprobe{ON_EXT4} --json -- dio-trace write --pattern {p} --count {count} /mnt/{WITHOUT_BTF}-{p} >/tmp/out 2>/tmp/err"
            )
        );
        assert_eq!(s.matches("--btf /btf").count(), cases);
        assert_eq!(s.matches("@@CASE").count(), cases + 1);
    }

    /// A counted case passes only with the answer its writes gave when
    /// sent, and only if the kernel really counted its ordered writes.
    #[test]
    fn counted_cases_must_answer_as_sent_ones_and_really_count() {
        let case = |exit: i32, ordered: u64, violations: u64, in_kernel: u64, skipped: &str| {
            let line = format!(
                "@@CASE x p {exit}\n@@SUMMARY {{\"writes\":3,\"counted\":3,\"ordered\":{ordered},\"violations\":{violations},\
                 \"inconclusive\":0,\"failed\":0,\"verdict\":\"v\",\"reasons\":[],\"skipped\":{{{skipped}}},\
                 \"counters\":{{\"ordered_counted\":{in_kernel}}}}}\n"
            );
            parse(&line).remove(0).1
        };
        let sent = case(0, 3, 0, 0, "");
        assert_eq!(counted_differs(&case(0, 3, 0, 3, ""), &sent), None);
        assert_eq!(
            counted_differs(&case(0, 3, 0, 2, ""), &sent),
            None,
            "one sent after all"
        );
        // Sent, not counted; more counted than ordered; counted when sent.
        assert!(counted_differs(&case(0, 3, 0, 0, ""), &sent).is_some());
        assert!(counted_differs(&case(0, 3, 0, 4, ""), &sent).is_some());
        assert!(counted_differs(&case(0, 3, 0, 3, ""), &case(0, 3, 0, 3, "")).is_some());
        // Another answer, or another exit status.
        assert!(counted_differs(&case(1, 2, 1, 2, ""), &sent).is_some());
        assert!(counted_differs(&case(3, 3, 0, 3, ""), &sent).is_some());
        // Violations leave the kernel in either mode.
        let buggy = case(1, 0, 3, 0, "");
        assert_eq!(counted_differs(&case(1, 0, 3, 0, ""), &buggy), None);
        assert!(counted_differs(&case(1, 0, 3, 1, ""), &buggy).is_some());
        // A run with skips is its own: not compared.
        assert_eq!(
            counted_differs(&case(3, 2, 0, 2, "\"sync_enter\":1"), &sent),
            None
        );
    }

    fn outcome(console: &str) -> crate::vm::Outcome {
        crate::vm::Outcome {
            end: crate::vm::End::Exited(0),
            console: console.into(),
            elapsed: std::time::Duration::ZERO,
            streamed: true,
        }
    }

    #[test]
    fn each_case_is_found_by_its_backend_and_pattern() {
        let console = "@@CASE kprobe o-sync-append 0\n@@ERR one\n@@CASE fentry o-sync-append 1\n@@ERR two\n@@CASE kprobe o-dsync-append 3\n@@ERR three\n";
        let seen = parse(console);
        let err = |b, p| find_case(&seen, b, p).map(|s| s.err.trim().to_owned());
        assert_eq!(err("kprobe", "o-sync-append").as_deref(), Some("one"));
        assert_eq!(err("fentry", "o-sync-append").as_deref(), Some("two"));
        assert_eq!(err("kprobe", "o-dsync-append").as_deref(), Some("three"));
        assert_eq!(err("fentry", "o-dsync-append"), None);
        assert_eq!(err("tracepoint", "o-sync-append"), None);
        let o = outcome(console);
        let missing = judged(Want::Ordered, "tracepoint", PATTERNS[0], None, &o);
        assert!(missing.unwrap().starts_with("the guest did not report this case"));
        // A reported case is judged on what it showed.
        let good = "@@CASE kprobe o-sync-append 0\n@@SUMMARY {\"counted\":3,\"ordered\":3,\"violations\":0,\"inconclusive\":0,\"probes\":{\"write_begin\":\"kprobe:iomap_dio_rw\"},\"reasons\":[]}\n@@KINDS \n@@STACKS 0 0\n";
        let seen = parse(good);
        let case = find_case(&seen, "kprobe", "o-sync-append");
        assert_eq!(judged(Want::Ordered, "kprobe", PATTERNS[0], case, &o), None);
        assert!(judged(Want::Violation("sync_missing"), "kprobe", PATTERNS[0], case, &o).is_some());
    }

    #[test]
    fn a_refusal_needs_exit_4_and_the_message() {
        let want = Want::Refused("--btf");
        let seen = |exit: i32, err: &str| {
            parse(&format!(
                "@@CASE {WITHOUT_BTF} o-sync-append {exit}\n@@ERR {err}\n"
            ))
        };
        let j = |exit, err| judge(want, "kprobe", PATTERNS[0], &seen(exit, err)[0].1);
        assert_eq!(j(4, "ext4 has no BTF here: give it with --btf FILE"), None);
        assert!(j(4, "something else went wrong").is_some(), "the wrong refusal");
        assert!(
            j(1, "ext4 has no BTF here: give it with --btf FILE").is_some(),
            "not a refusal"
        );
        assert!(j(0, "").is_some());
    }

    #[test]
    fn an_unservable_probe_must_be_reported_unattached_with_exit_3() {
        let want = Want::Unservable("write_begin");
        // No counts at all: nothing was traced, which is what unservable means.
        let line = |exit: i32, probes: &str, reasons: &str| {
            format!(
                "@@CASE tracepoint o-sync-append {exit}\n@@SUMMARY {{\"probes\":{{{probes}}},\"reasons\":[{reasons}]}}\n@@KINDS \n@@STACKS 0 0\n"
            )
        };
        let j = |text: String| judge(want, "tracepoint", PATTERNS[0], &parse(&text)[0].1);
        let said = "\"probe write_begin could not attach: no tracepoint\"";
        assert_eq!(j(line(3, "\"size_update\":\"tracepoint:x\"", said)), None);
        assert!(
            j(line(0, "\"size_update\":\"tracepoint:x\"", said)).is_some(),
            "exit 0"
        );
        assert!(
            j(line(3, "\"write_begin\":\"kprobe:iomap_dio_rw\"", said)).is_some(),
            "the probe was served after all"
        );
        assert!(
            j(line(3, "", "\"probe size_update could not attach\"")).is_some(),
            "another probe"
        );
        // Any other want with the counts missing fails.
        assert!(
            judge(
                Want::Ordered,
                "tracepoint",
                PATTERNS[0],
                &parse(&line(0, "", ""))[0].1
            )
            .is_some()
        );
    }

    #[test]
    fn stress_on_a_fixed_kernel_accounts_for_every_counted_write() {
        let o = Want::Ordered;
        let skip = "\"write_begin\":2,\"dio_complete\":2";
        // Counted 62 of 64 (2 hidden by skipped begins), 2 of them
        // inconclusive (their completions skipped), the rest ordered.
        assert_eq!(
            judge_stress(o, stress_line(3, "fentry", [62, 60, 0, 2], "", skip)),
            None
        );
        assert!(
            judge_stress(o, stress_line(3, "fentry", [62, 59, 0, 2], "", skip)).is_some(),
            "a counted write neither ordered, a violation nor inconclusive"
        );
    }

    #[test]
    fn only_skipped_runs_excuse_a_stress_run() {
        let o = Want::Ordered;
        // Exit 3 with nothing skipped is no excuse, even counted exactly.
        assert!(judge_stress(o, stress_line(3, "fentry", [64, 64, 0, 0], "", "")).is_some());
        assert!(
            judge_stress(
                o,
                stress_line(3, "fentry", [64, 64, 0, 0], "", "\"write_begin\":0")
            )
            .is_some()
        );
        // A violation on a fixed kernel is excused only by a skip that
        // happened, not by a zero count of one.
        let doubted = stress_line(
            3,
            "fentry",
            [64, 63, 1, 0],
            "sync_before_size_update",
            "\"write_begin\":1,\"sync_enter\":0",
        )
        .replace(
            "\"reasons\":[]",
            "\"reasons\":[\"violations cannot be trusted: x\"]",
        );
        assert!(judge_stress(o, doubted).is_some());
    }

    #[test]
    fn the_support_table_row_says_what_served_and_what_was_answered() {
        let row = kernel::named::find("buggy-6.1").unwrap();
        let served = parse(
            "@@CASE kprobe o-sync-append 1\n@@SUMMARY {\"verdict\":\"violation\",\"counted\":3,\"writes\":5,\"probes\":{\"write_begin\":\"kprobe:iomap_dio_rw\",\"size_update\":\"fentry:ext4_mark\",\"sync_enter\":\"fentry:ext4_sync_file\"}}\n",
        );
        assert_eq!(
            support_row(row, "kprobe", &served[0].1),
            format!(
                "| buggy-6.1 | {} | kprobe | kprobe:iomap_dio_rw | fentry:ext4_mark | fentry:ext4_sync_file | - | violation (3 of 5 counted, exit 1) |",
                row.about
            )
        );
        let refused = parse("@@CASE kprobe o-sync-append 4\n@@ERR no BTF for ext4\n@@ERR second line\n");
        assert_eq!(
            support_row(row, "fentry", &refused[0].1),
            format!(
                "| buggy-6.1 | {} | fentry | - | - | - | - | refused, exit 4: no BTF for ext4 |",
                row.about
            )
        );
    }

    #[test]
    fn unattended_runs_are_quiet() {
        let o = quiet_options();
        assert_eq!(o.console, ConsoleMode::Quiet);
        assert_eq!(o.append, ["quiet", "loglevel=1"]);
        assert_eq!(o.timeout, VmOptions::default().timeout);
    }
}
