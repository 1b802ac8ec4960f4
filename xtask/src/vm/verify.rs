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
const COUNT: u32 = 3;

/// `btf`: ` --btf FILE` where the kernel needs ext4's BTF from a file.
pub(super) fn script(btf: &str) -> String {
    format!(
        "dio-trace verify{btf} --dir /mnt --count {COUNT} --json 2>/dev/null | sed 's/^/@@V /'\necho \"@@VEXIT $?\"\n"
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
        // Where the kernel ships dm-log-writes, the same boot gives each
        // counted write its crash truth too.
        let btf = traced::btf_arg(&kernel);
        let script = if row.crash_truth {
            crash_truth::script(&btf)
        } else {
            script(&btf)
        };
        let outcome = traced::boot_with_dio(&kernel, &dio, &script, opts)?;
        score_patterns(&spec.to_string(), &outcome, &|p| want(row, p), score);
        if row.crash_truth {
            crash_truth::score(&spec.to_string(), row, &outcome.console, score);
        }
    }
    Ok(())
}

/// Score the pattern lines [`script`] printed in `outcome`'s console:
/// counted patterns must show `counted_want(pattern)` with every write
/// counted once, the others NOT-APPLICABLE.
pub(super) fn score_patterns(
    label: &str,
    outcome: &super::Outcome,
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
    if rows.is_empty() {
        score.failed += 1;
        println!("FAIL verify {label}: no pattern results: {}", outcome.failure());
        return;
    }
    for r in rows {
        let (pattern, got) = (
            r["pattern"].as_str().unwrap_or("?"),
            r["verdict"].as_str().unwrap_or("?"),
        );
        let w = match r["expect"].as_str() {
            Some("not-applicable") => "NOT-APPLICABLE",
            _ => counted_want(pattern),
        };
        // Counted patterns must count each write once, no more, no less.
        let counts_right = r["expect"] == "not-applicable" || r["counted"] == r["writes"];
        let why = (got != w || !counts_right).then(|| {
            format!(
                "want {w} with {} counted, got {got} with {} counted ({})",
                r["writes"], r["counted"], r["reason"]
            )
        });
        score.record(
            why,
            format_args!("verify {label} {pattern}: {got} ({} counted)", r["counted"]),
        );
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
}
