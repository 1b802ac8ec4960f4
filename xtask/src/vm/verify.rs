//! `dio-trace verify` inside each kernel of the matrix: on the buggy
//! kernel every sync-flavoured extending pattern must be a VIOLATION, on
//! fixed kernels ORDERED; the patterns that must not count must be
//! NOT-APPLICABLE everywhere.

use anyhow::Result;
use serde_json::Value;

use super::{VmOptions, matrix::Score, traced};
use crate::kernel::{self, Cache, KernelSpec, Named};

/// Writes per pattern in the guests.
const COUNT: u32 = 3;

/// `btf`: ` --btf FILE` where the kernel needs ext4's BTF from a file.
fn script(btf: &str) -> String {
    format!(
        "dio-trace verify{btf} --dir /mnt --count {COUNT} --json 2>/dev/null | sed 's/^/@@V /'\necho \"@@VEXIT $?\"\n"
    )
}

/// What one pattern must show on `row`'s kernel.
fn want(row: &Named, expect: &str) -> &'static str {
    match expect {
        "not-applicable" => "NOT-APPLICABLE",
        _ if row.bug => "VIOLATION",
        _ => "ORDERED",
    }
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
        let outcome = traced::boot_with_dio(&kernel, &dio, &script(&traced::btf_arg(&kernel)), opts)?;
        let rows: Vec<Value> = outcome
            .console
            .lines()
            .filter_map(|l| l.split("@@V ").nth(1))
            .filter_map(|j| serde_json::from_str(j).ok())
            .filter(|v: &Value| v["type"] == "pattern")
            .collect();
        if rows.is_empty() {
            score.failed += 1;
            println!("FAIL verify {spec}: no pattern results: {}", outcome.failure());
            continue;
        }
        for r in rows {
            let (pattern, got) = (
                r["pattern"].as_str().unwrap_or("?"),
                r["verdict"].as_str().unwrap_or("?"),
            );
            let w = want(row, r["expect"].as_str().unwrap_or("?"));
            // Counted patterns must count each write once, no more, no less.
            let counts_right = r["expect"] == "not-applicable" || r["counted"] == r["writes"];
            if got == w && counts_right {
                score.passed += 1;
                println!("PASS verify {spec} {pattern}: {got} ({} counted)", r["counted"]);
            } else {
                score.failed += 1;
                println!(
                    "FAIL verify {spec} {pattern}: want {w} with {} counted, got {got} with {} counted ({})",
                    r["writes"], r["counted"], r["reason"]
                );
            }
        }
    }
    Ok(())
}
