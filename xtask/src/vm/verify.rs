//! `dio-trace verify` inside each kernel of the matrix (and on the XFS
//! disks of the filesystem cells): each counted pattern must be a
//! VIOLATION where the kernel's row says its writes are
//! ([`matrix::expected`]: the ext4 bug for extending writes, the O_DSYNC
//! regression for DSYNC writes into new blocks), else ORDERED; the
//! patterns that must not count must be NOT-APPLICABLE everywhere.

use anyhow::Result;
use serde_json::Value;

use super::matrix::{self, Score, Want};
use super::{VmOptions, crash_truth, traced};
use crate::kernel::{self, Cache, KernelSpec, Named};

/// Writes per pattern in the guests.
pub(super) const COUNT: u64 = 3;

/// Every pattern `dio-trace verify` runs, in xtask's own words, with its
/// writers (files written side by side, `COUNT` writes each). The counted
/// ones have a [`matrix::shape`]; the rest must not count. The guest must
/// report each exactly once: a pattern it leaves out (a verify that died
/// partway) fails, and so does one it reports that is not here.
const PATTERNS: [(&str, u64); 16] = [
    ("o-sync-append", 1),
    ("o-dsync-append", 1),
    ("rwf-sync-append", 1),
    ("rwf-dsync-append", 1),
    ("aio-dsync-append", 1),
    ("uring-dsync-append", 1),
    ("concurrent-o-sync-append", 8),
    ("o-append-dsync", 1),
    ("o-dsync-into-fallocated", 1),
    ("rwf-dsync-into-fallocated", 1),
    ("o-sync-into-fallocated", 1),
    ("o-sync-overwrite", 1),
    ("o-dsync-overwrite", 1),
    ("direct-append", 1),
    ("direct-append-fsync", 1),
    ("buffered-sync-append", 1),
];

/// The counted patterns of [`PATTERNS`] (those with a [`matrix::shape`])
/// and their writers: what crash truth judges write by write too.
pub(super) fn counted_patterns() -> impl Iterator<Item = (&'static str, u64)> {
    PATTERNS.into_iter().filter(|(p, _)| matrix::shape(p).is_some())
}

/// What a pattern that must not count shows.
const NOT_APPLICABLE: &str = "NOT-APPLICABLE";

/// `btf`: ` --btf FILE` where the kernel needs ext4's BTF from a file.
/// dio-trace's own exit status is printed (not a pipe's), then its lines.
pub(super) fn script(btf: &str) -> String {
    format!(
        "dio-trace verify{btf} --dir /mnt --count {COUNT} --json >/tmp/verify 2>/tmp/verify-err\n\
         echo \"@@VEXIT $?\"\n\
         sed 's/^/@@V /' /tmp/verify\n\
         tail -5 /tmp/verify-err | sed 's/^/@@VERR /'\n"
    )
}

/// How verify names what a counted pattern's writes must be.
pub(super) fn verdict_label(want: Want) -> &'static str {
    match want {
        Want::Violation(_) => "VIOLATION",
        Want::Ordered => "ORDERED",
        _ => "a shape in matrix::shape",
    }
}

/// What a counted pattern must show on `row`'s kernel.
fn want(row: &Named, pattern: &str) -> &'static str {
    verdict_label(matrix::expected(row, pattern))
}

pub fn run(kernels: &[KernelSpec], opts: &VmOptions, score: &mut Score) -> Result<()> {
    let cache = Cache::from_env()?;
    let dio = traced::dio_trace_file()?;
    let mut jobs = Vec::new();
    for spec in kernels {
        let Some(row) = spec.row() else {
            println!("SKIPPED verify {spec}: not a named kernel, so nothing says what it must show");
            continue;
        };
        let kernel = kernel::resolve(spec, &cache)?;
        if row.refused.is_some() && kernel.ext4_btf.is_none() {
            // The matrix asserts the refusal; there is nothing to verify.
            continue;
        }
        jobs.push((spec, row, kernel));
    }
    let outcomes = super::side_by_side::map(&jobs, |(_, row, kernel)| {
        // Where the kernel ships dm-log-writes, the same boot gives each
        // counted write its crash truth too.
        let btf = traced::btf_arg(kernel);
        let script = if row.crash_truth {
            crash_truth::script(&btf, &[crash_truth::Run::EXT4])
        } else {
            script(&btf)
        };
        traced::boot_with_dio(kernel, &dio, &script, opts)
    });
    for ((spec, row, _), outcome) in jobs.iter().zip(outcomes) {
        let outcome = outcome?;
        let count = if row.crash_truth {
            u64::from(crash_truth::COUNT)
        } else {
            COUNT
        };
        score_patterns(&spec.to_string(), &outcome, count, &|p| want(row, p), score);
        if row.crash_truth {
            crash_truth::score(
                &spec.to_string(),
                row,
                &crash_truth::Run::EXT4,
                &outcome.console,
                score,
            );
        }
    }
    Ok(())
}

/// Score the lines [`script`] printed in `outcome`'s console (`count`
/// writes per writer): every pattern of [`PATTERNS`] once, counted ones showing
/// `counted_want(pattern)` with every write counted once and each of
/// them that verdict, the others NOT-APPLICABLE with none counted; and
/// dio-trace's exit status, 1 where any pattern must be a violation,
/// else 0.
pub(super) fn score_patterns(
    label: &str,
    outcome: &super::Outcome,
    count: u64,
    counted_want: &dyn Fn(&str) -> &'static str,
    score: &mut Score,
) {
    let rows: Vec<Value> = outcome
        .console
        .lines()
        .filter_map(|l| l.split("@@V ").nth(1))
        .filter_map(|j| serde_json::from_str(j).ok())
        .filter(|v: &Value| v["type"] == "pattern")
        .collect();
    let exit: Option<i32> = outcome
        .console
        .lines()
        .find_map(|l| l.split("@@VEXIT ").nth(1))
        .and_then(|c| c.trim().parse().ok());
    let errors: String = outcome
        .console
        .lines()
        .filter_map(|l| l.split("@@VERR ").nth(1))
        .collect::<Vec<_>>()
        .join("; ");
    let mut want_exit = 0;
    for (pattern, writers) in PATTERNS {
        let want = match matrix::shape(pattern) {
            Some(_) => counted_want(pattern),
            None => NOT_APPLICABLE,
        };
        if want == "VIOLATION" {
            want_exit = 1;
        }
        let mine: Vec<&Value> = rows.iter().filter(|r| r["pattern"] == pattern).collect();
        let why = match mine[..] {
            [r] => judge_row(r, want, writers * count),
            [] => Some(format!(
                "verify did not report it (exit {exit:?}; {errors}): {}",
                outcome.failure()
            )),
            _ => Some(format!("verify reported it {} times", mine.len())),
        };
        let got = mine.first().map_or("nothing".into(), |r| {
            format!("{} ({} counted)", r["verdict"], r["counted"])
        });
        score.record(why, format_args!("verify {label} {pattern}: {got}"));
    }
    for r in rows
        .iter()
        .filter(|r| !PATTERNS.iter().any(|(p, _)| r["pattern"] == *p))
    {
        score.record(
            Some("a pattern xtask's table does not have: nothing says what it must show".into()),
            format_args!("verify {label} {}", r["pattern"]),
        );
    }
    let why = (exit != Some(want_exit)).then(|| {
        format!(
            "want exit {want_exit}, got {exit:?} ({errors}): {}",
            outcome.failure()
        )
    });
    score.record(why, format_args!("verify {label} exit status"));
}

/// Why one pattern line is not what `want` asks for `writes` writes.
fn judge_row(r: &Value, want: &str, writes: u64) -> Option<String> {
    let field = |k: &str| r[k].as_u64().ok_or_else(|| format!("the line has no {k:?}: {r}"));
    let check = || -> Result<bool, String> {
        let (made, counted) = (field("writes")?, field("counted")?);
        let verdict = r["verdict"]
            .as_str()
            .ok_or_else(|| format!("the line has no verdict: {r}"))?;
        Ok(verdict == want
            && made == writes
            && match want {
                NOT_APPLICABLE => counted == 0,
                "ORDERED" => counted == writes && field("ordered")? == writes,
                "VIOLATION" => counted == writes && field("violations")? == writes,
                _ => false,
            })
    };
    match check() {
        Ok(true) => None,
        Ok(false) => Some(format!(
            "want {want} for each of {writes} writes, got {} with {} of {} counted, {} ordered, {} violations ({})",
            r["verdict"], r["counted"], r["writes"], r["ordered"], r["violations"], r["reason"]
        )),
        Err(e) => Some(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_follow_the_kernels() {
        for (kernel, pattern, want_label) in [
            ("buggy-7.3", "rwf-dsync-into-fallocated", "VIOLATION"),
            ("buggy-7.3", "o-sync-into-fallocated", "ORDERED"),
            ("buggy-7.3", "uring-dsync-append", "VIOLATION"),
            ("buggy-6.1", "uring-dsync-append", "VIOLATION"),
            ("buggy-6.1", "o-dsync-into-fallocated", "ORDERED"),
            ("debian-7.3", "aio-dsync-append", "ORDERED"),
        ] {
            let row = crate::kernel::named::find(kernel).unwrap();
            assert_eq!(want(row, pattern), want_label, "{kernel} {pattern}");
        }
    }

    use super::super::{End, Outcome};

    /// The guest's lines for a verify that reports `patterns` as a
    /// correct dio-trace would (`violating`: counted writes are
    /// violations), then exits `exit`.
    fn console(patterns: &[(&str, u64)], violating: bool, exit: i32) -> String {
        let mut c = format!("[ 1.0] kernel noise\n@@VEXIT {exit}\n");
        for (p, writers) in patterns {
            let writes = writers * COUNT;
            let counted = matrix::shape(p).map_or(0, |_| writes);
            let (verdict, ordered, violations) = match (counted, violating) {
                (0, _) => (NOT_APPLICABLE, 0, 0),
                (_, false) => ("ORDERED", writes, 0),
                (_, true) => ("VIOLATION", 0, writes),
            };
            c += &format!(
                "@@V {{\"type\":\"pattern\",\"pattern\":\"{p}\",\"writes\":{writes},\"counted\":{counted},\"ordered\":{ordered},\"violations\":{violations},\"verdict\":\"{verdict}\"}}\n"
            );
        }
        c
    }

    fn scored(console: String, want: &'static str) -> Score {
        let outcome = Outcome {
            end: End::Exited(0),
            console,
            elapsed: std::time::Duration::ZERO,
            streamed: true,
        };
        let mut score = Score::default();
        score_patterns("test", &outcome, COUNT, &|_| want, &mut score);
        score
    }

    #[test]
    fn a_whole_run_passes_and_every_pattern_is_a_case() {
        let s = scored(console(&PATTERNS, false, 0), "ORDERED");
        assert_eq!((s.passed, s.failed), (PATTERNS.len() + 1, 0));
        let s = scored(console(&PATTERNS, true, 1), "VIOLATION");
        assert_eq!((s.passed, s.failed), (PATTERNS.len() + 1, 0));
    }

    #[test]
    fn a_verify_that_dies_at_pattern_3_fails() {
        // dio-trace panicked (101) after two patterns: the rest are
        // missing, and the exit status is its own, not a pipe's.
        let s = scored(console(&PATTERNS[..2], false, 101), "ORDERED");
        assert_eq!((s.passed, s.failed), (2, PATTERNS.len() - 2 + 1));
        // Every pattern there, but dio-trace's status says it failed.
        let s = scored(console(&PATTERNS, false, 101), "ORDERED");
        assert_eq!(s.failed, 1);
        assert_eq!(script("").matches("@@VEXIT $?").count(), 1);
        let run = script("").lines().next().unwrap().to_owned();
        assert!(
            run.starts_with("dio-trace verify") && !run.contains('|'),
            "the status must be dio-trace's: {run}"
        );
    }

    #[test]
    fn partial_violations_and_overcounts_fail() {
        let all = console(&PATTERNS, true, 1);
        let partial = all.replacen(
            "\"writes\":3,\"counted\":3,\"ordered\":0,\"violations\":3",
            "\"writes\":3,\"counted\":3,\"ordered\":2,\"violations\":1",
            1,
        );
        assert_ne!(partial, all);
        assert_eq!(scored(partial, "VIOLATION").failed, 1);
        let over = all.replacen("\"counted\":3", "\"counted\":4", 1);
        assert_eq!(scored(over, "VIOLATION").failed, 1);
        // A pattern that must not count, counted.
        let na = console(&PATTERNS, false, 0).replacen("\"counted\":0", "\"counted\":1", 1);
        assert_eq!(scored(na, "ORDERED").failed, 1);
    }

    #[test]
    fn missing_fields_and_unknown_or_repeated_patterns_fail() {
        let all = console(&PATTERNS, false, 0);
        let bare = all.replacen(",\"ordered\":3", "", 1);
        assert_eq!(scored(bare, "ORDERED").failed, 1);
        let extra = format!(
            "{all}@@V {{\"type\":\"pattern\",\"pattern\":\"new-one\",\"writes\":3,\"counted\":0,\"verdict\":\"NOT-APPLICABLE\"}}\n"
        );
        assert_eq!(scored(extra, "ORDERED").failed, 1);
        let twice = format!("{all}{}", console(&PATTERNS[..1], false, 0));
        assert_eq!(scored(twice, "ORDERED").failed, 1);
        // The exit line is what a missing @@VEXIT looks like: no status.
        let silent = all.replace("@@VEXIT 0\n", "");
        assert_eq!(scored(silent, "ORDERED").failed, 1);
    }
}
