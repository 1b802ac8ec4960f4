//! `cargo xtask mutants`: mutation testing with cargo-mutants over the
//! engine (`dio-trace/src/analysis/`) and the code that scores xtask's
//! QEMU cells (matrix, verify and crash, and the filesystem cells' `want`),
//! so that a check which cannot fail is found by a tool. What is mutated
//! and which mutants are equivalent (with the reason) is in
//! `.cargo/mutants.toml`; this runs it per package, with only that
//! package's unit tests (the live host tests need root and a real kernel;
//! the QEMU cells need QEMU). Too slow for CI: run before each release.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::setup::CargoTool;

/// cargo-mutants, pinned: 27.1.0 builds on our rustc (1.95).
const CARGO_MUTANTS: CargoTool = CargoTool {
    krate: "cargo-mutants",
    version: "27.1.0",
    version_command: &["cargo", "mutants", "--version"],
};

#[derive(Args)]
pub struct MutantsArgs {
    /// Only this scope (default: both, xtask's first: it builds fast).
    #[arg(long, value_enum)]
    scope: Option<Scope>,
    /// Mutants built and tested at once, each in its own copy of the tree.
    #[arg(long, default_value_t = 1)]
    jobs: u32,
    /// Mutate only these files (globs, as cargo-mutants' `--file`)
    /// instead of the scope's own; e.g. `--scope engine --file
    /// dio-trace/src/analysis/judge.rs`.
    #[arg(long)]
    file: Vec<String>,
    /// Passed on to cargo-mutants, e.g. `-- --list`.
    #[arg(last = true)]
    extra: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scope {
    /// The scoring of xtask's matrix, verify, crash and filesystem cells.
    Xtask,
    /// The engine, `dio-trace/src/analysis/`.
    Engine,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Xtask => "xtask",
            Scope::Engine => "engine",
        }
    }

    /// The package mutated, whose tests judge each mutant.
    fn package(self) -> &'static str {
        match self {
            Scope::Xtask => "xtask",
            Scope::Engine => "dio-trace",
        }
    }

    /// The files mutated (cargo-mutants' `--file` globs).
    fn files(self) -> &'static [&'static str] {
        match self {
            Scope::Xtask => &[
                "xtask/src/vm/matrix.rs",
                "xtask/src/vm/verify.rs",
                "xtask/src/vm/crash.rs",
                "xtask/src/vm/crash_truth.rs",
                "xtask/src/vm/fs_cells.rs",
            ],
            Scope::Engine => &["dio-trace/src/analysis/**/*.rs"],
        }
    }

    /// Which of those files' mutants (cargo-mutants' `--re`, against
    /// `path:line:col: mutation`): of fs_cells.rs only `want` and
    /// `plain_mount_judged` are scoring, the rest of it is its table of
    /// cells and guest plumbing.
    fn mutants_re(self) -> &'static [&'static str] {
        match self {
            Scope::Xtask => &[
                r"^xtask/src/vm/(matrix|verify|crash|crash_truth)\.rs:",
                r"^xtask/src/vm/fs_cells\.rs:.*( (want|plain_mount_judged) -> | in (want|plain_mount_judged)$)",
            ],
            Scope::Engine => &[],
        }
    }

    /// Which of the package's tests run: xtask has only its binary's unit
    /// tests; dio-trace's library tests are its unit tests (its
    /// integration tests need root, a real kernel or recorded traces).
    fn test_target(self) -> &'static str {
        match self {
            Scope::Xtask => "--bins",
            Scope::Engine => "--lib",
        }
    }
}

pub fn run(args: MutantsArgs) -> Result<()> {
    crate::setup::cargo_tool(&CARGO_MUTANTS)?;
    let scopes = match args.scope {
        Some(s) => vec![s],
        None => vec![Scope::Xtask, Scope::Engine],
    };
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    for scope in scopes {
        let out = crate::build::workspace()
            .join("target/mutants")
            .join(scope.name());
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let mut cmd = Command::new("cargo");
        cmd.current_dir(crate::build::workspace())
            .args(["mutants", "--package", scope.package()])
            .arg(format!("--jobs={}", args.jobs))
            .arg(format!("--cargo-test-arg={}", scope.test_target()));
        if args.file.is_empty() {
            cmd.args(scope.files().iter().flat_map(|f| ["--file", f]));
        } else {
            cmd.args(args.file.iter().flat_map(|f| ["--file", f.as_str()]));
        }
        cmd.args(scope.mutants_re().iter().flat_map(|r| ["--re", r]))
            .arg("--output")
            .arg(&out)
            .args(&args.extra);
        println!("mutants: {}: {cmd:?}", scope.name());
        let start = Instant::now();
        let status = cmd.status().context("running cargo mutants")?;
        let counts =
            counts(&out.join("mutants.out/outcomes.json")).unwrap_or_else(|e| format!("no outcomes ({e:#})"));
        let line = format!(
            "mutants: {}: {counts}, {} min",
            scope.name(),
            start.elapsed().as_secs() / 60
        );
        println!("{line}");
        lines.push(line);
        // cargo-mutants' exit codes: 2 missed mutants, 3 timeouts, 4
        // the unmutated tree failed its tests; anything else is its own
        // failure to run.
        match status.code() {
            Some(0) => {}
            Some(2 | 3) => failed.push(format!(
                "{} (see {}/mutants.out/missed.txt and timeout.txt)",
                scope.name(),
                out.display()
            )),
            Some(4) => bail!("mutants: {}: the tests fail without any mutation", scope.name()),
            _ => bail!("mutants: {}: cargo mutants failed ({status})", scope.name()),
        }
    }
    for l in &lines {
        println!("{l}");
    }
    if !failed.is_empty() {
        bail!(
            "mutants survived or timed out in: {} (kill each with a unit test, or list it in .cargo/mutants.toml as equivalent, with the reason)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// "N caught, N missed, N timeout, N unviable" from cargo-mutants'
/// outcomes.json.
fn counts(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    Ok(format!(
        "{} mutants: {} caught, {} missed, {} timeout, {} unviable",
        n("total_mutants"),
        n("caught"),
        n("missed"),
        n("timeout"),
        n("unviable")
    ))
}
