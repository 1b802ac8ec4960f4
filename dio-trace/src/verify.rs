//! `dio-trace verify`: every known write pattern traced on its own, one
//! verdict per pattern. Sync-flavoured appends must be ORDERED; the
//! patterns that must not count must show NOT-APPLICABLE.

use std::{io::Write as _, path::PathBuf};

use serde_json::json;

use dio_trace_common::fs::Fs;

use crate::{
    analysis::{Overall, Summary, engine::WriteReport},
    cli::VerifyArgs,
    cli::{TraceOpts, ViewOpts},
    crash::{
        rig::Rig,
        truth::{self, WriteTruth},
    },
    exit::Exit,
    layout::Layout,
    plan::{Plan, check_path},
    report::{Reporter, RunInfo, Show, human::Human, ndjson::Ndjson},
    scratch::Scratch,
    session::{self, Target},
    workload::Pattern,
};

/// One pattern's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatternVerdict {
    Ordered,
    Violation,
    Inconclusive(String),
    NotApplicable,
}

impl PatternVerdict {
    pub fn label(&self) -> &'static str {
        match self {
            PatternVerdict::Ordered => "ORDERED",
            PatternVerdict::Violation => "VIOLATION",
            PatternVerdict::Inconclusive(_) => "INCONCLUSIVE",
            PatternVerdict::NotApplicable => "NOT-APPLICABLE",
        }
    }
}

/// Judge a pattern's run against what the pattern promises.
pub fn judge_pattern(pattern: Pattern, count: u32, s: &Summary) -> PatternVerdict {
    let t = &s.tally;
    let count = count * pattern.files();
    if t.violations > 0 {
        return PatternVerdict::Violation;
    }
    let other: Vec<&String> = s
        .reasons
        .iter()
        .filter(|r| !r.starts_with("no size-extending sync direct write"))
        .collect();
    if !other.is_empty() {
        return PatternVerdict::Inconclusive(other.iter().map(|r| r.as_str()).collect::<Vec<_>>().join("; "));
    }
    // A negative only passes when the tracer demonstrably saw the writes
    // it declined to count: "nothing counted" from a blind probe is no pass.
    let seen = s.direct_writes;
    if pattern.direct() && seen < u64::from(count) {
        return PatternVerdict::Inconclusive(format!(
            "only {seen} of {count} direct writes were seen by the kernel probe"
        ));
    }
    if !pattern.counted() {
        return if t.counted() == 0 {
            PatternVerdict::NotApplicable
        } else {
            PatternVerdict::Inconclusive(format!(
                "{} writes counted; this pattern's writes must not count",
                t.counted()
            ))
        };
    }
    if s.overall == Overall::Ordered && t.ordered == u64::from(count) {
        PatternVerdict::Ordered
    } else {
        PatternVerdict::Inconclusive(format!("{} of {count} writes judged ordered", t.ordered))
    }
}

/// Forwards only the per-write lines of a reporter (no per-pattern
/// headers), keeping each write's file, offset and verdict for `--crash`.
struct WritesOnly<'a>(&'a mut dyn Reporter, Vec<Seen>);

/// A write the tracer reported: file, offset, verdict.
type Seen = (Option<std::sync::Arc<str>>, i64, &'static str);

impl Reporter for WritesOnly<'_> {
    fn start(&mut self, _: &RunInfo) -> std::io::Result<()> {
        Ok(())
    }
    fn write(&mut self, w: &WriteReport) -> std::io::Result<()> {
        self.1.push((w.path.clone(), w.begin.pos, w.verdict.name()));
        self.0.write(w)
    }
    fn finish(&mut self, _: &Summary, _: &RunInfo) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn verify(a: VerifyArgs) -> anyhow::Result<Exit> {
    // Before the scratch image: without the privileges to trace, the loop
    // device would fail first, with a message about losetup.
    crate::kernel::preflight::check_privileges().map_err(crate::error::EnvError::of)?;
    let scratch;
    let mut rig = None;
    // The filesystem written to: the directory's own, or the scratch's.
    let mut fs = a.fs;
    let dir: PathBuf = match &a.dir {
        Some(d) => {
            fs = check_path(d)?.2;
            d.clone()
        }
        None if a.crash => {
            // Rig::create checks device mapper before it makes anything.
            let r = rig.insert(Rig::create(a.fs, 256, a.fresh_fs.as_deref())?);
            eprintln!(
                "dio-trace verify: a scratch {} on the dm-log-writes device {}, mounted on {}",
                a.fs.name(),
                r.dm_name(),
                r.dir().display()
            );
            r.dir().to_path_buf()
        }
        None => {
            eprintln!(
                "dio-trace verify: making a scratch {} image on a loop device",
                a.fs.name()
            );
            scratch = Scratch::create(256, a.fs)?;
            eprintln!(
                "dio-trace verify: {} on {}",
                scratch.dir().display(),
                scratch.device()
            );
            scratch.dir().to_path_buf()
        }
    };
    let exe = std::env::current_exe()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = std::io::stdout().lock();
    let mut rows = Vec::new();
    let mut kernel = String::new();
    let mut seen = Vec::new();
    let (patterns, skipped) = chosen(&a.patterns, fs);
    for p in &skipped {
        eprintln!(
            "dio-trace verify: SKIPPED {}: {} (name it with --pattern to run it anyway)",
            p.name(),
            unseen_on(fs)
        );
    }
    for (i, &pattern) in patterns.iter().enumerate() {
        let rel = a.layout.place(&format!("dio-trace-verify-{}", pattern.name()));
        a.layout.prepare(&dir, &rel, pattern.files())?;
        let file = dir.join(&rel);
        if !a.json {
            eprintln!("[{}/{}] {} ...", i + 1, patterns.len(), pattern.name());
        }
        let opts = TraceOpts {
            pid: vec![],
            comm: None,
            dev: None,
            path: Some(file.clone()),
            cgroup: vec![],
            backend: a.backend,
            ringbuf_size: 4 << 20,
            json: a.json,
            show: Some(Show::All),
            full_timeline: false,
            probe_reads: false,
            debug: false,
            btf: a.btf.clone(),
            stacks: false,
            view: ViewOpts {
                raw_addresses: false,
                perfetto: None,
            },
        };
        let plan = Plan::new(&opts, Show::All, true)?;
        let mut argv = vec![
            exe.display().to_string(),
            "write".into(),
            "--pattern".into(),
            pattern.name(),
            "--count".into(),
            a.count.to_string(),
            file.display().to_string(),
        ];
        // Marks only where writes are counted: only those are replayed.
        if let Some(r) = rig.as_ref().filter(|_| pattern.counted()) {
            argv.extend(["--mark-dm".into(), r.dm_name().to_owned()]);
        }
        // Per-write lines only: the table (or the pattern lines) is ours.
        let mut inner: Box<dyn Reporter> = if a.json {
            Box::new(Ndjson::new(std::io::sink(), Show::All))
        } else {
            Box::new(Human::new(std::io::stdout(), Show::All))
        };
        let mut writes = WritesOnly(inner.as_mut(), Vec::new());
        let outcome = rt.block_on(session::trace(&plan, Target::Command(argv), &mut writes, None))?;
        seen.push((pattern, std::mem::take(&mut writes.1)));
        let _ = std::fs::remove_file(&file);
        kernel = outcome.info.kernel.clone();
        let verdict = judge_pattern(pattern, a.count, &outcome.summary);
        if a.json {
            let reason = match &verdict {
                PatternVerdict::Inconclusive(r) => Some(r.clone()),
                _ => None,
            };
            serde_json::to_writer(
                &mut out,
                &json!({
                    "type": "pattern",
                    "pattern": pattern.name(),
                    "layout": a.layout.name(),
                    "expect": if pattern.counted() { "ordered" } else { "not-applicable" },
                    "writes": a.count * pattern.files(),
                    "counted": outcome.summary.tally.counted(),
                    "ordered": outcome.summary.tally.ordered,
                    "violations": outcome.summary.tally.violations,
                    "verdict": verdict.label(),
                    "reason": reason,
                    "backend": outcome.info.probes,
                }),
            )?;
            writeln!(out)?;
        }
        rows.push((pattern, outcome.summary.tally.counted(), verdict));
    }
    let mut exit = overall(&rows);
    let truths = match rig.as_mut() {
        Some(r) => crash_truths(r, &seen, a.count, a.layout, a.json, a.keep_log.as_deref())?,
        None => Vec::new(),
    };
    if a.crash {
        exit = truth::exit(exit, &truths);
        if a.json {
            crate::crash::report::ndjson(&mut out, &truths)?;
        } else {
            crate::crash::report::table(&mut out, &truths)?;
        }
        if let Some(j) = &a.junit {
            crate::crash::report::junit(j, &kernel, &truths)?;
        }
    }
    if a.json {
        for p in &skipped {
            serde_json::to_writer(
                &mut out,
                &json!({"type": "pattern", "pattern": p.name(), "verdict": "SKIPPED", "reason": unseen_on(fs)}),
            )?;
            writeln!(out)?;
        }
        serde_json::to_writer(
            &mut out,
            &json!({"type": "verify_summary", "kernel": kernel, "verdict": exit_name(exit)}),
        )?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "\n{:<26} {:>7} {:>8}  {:<15} result",
            "pattern", "writes", "counted", "verdict"
        )?;
        for (p, counted, v) in &rows {
            let pass = match v {
                PatternVerdict::Ordered | PatternVerdict::NotApplicable => "PASS",
                _ => "FAIL",
            };
            writeln!(
                out,
                "{:<26} {:>7} {:>8}  {:<15} {pass}",
                p.name(),
                a.count * p.files(),
                counted,
                v.label()
            )?;
            if let PatternVerdict::Inconclusive(r) = v {
                writeln!(out, "{:<26}   because {r}", "")?;
            }
        }
        for p in &skipped {
            writeln!(
                out,
                "{:<26} {:>7} {:>8}  {:<15} SKIPPED",
                p.name(),
                a.count * p.files(),
                "-",
                "-"
            )?;
        }
        if !skipped.is_empty() {
            writeln!(out, "{:<26}   because {}", "", unseen_on(fs))?;
        }
        writeln!(out, "kernel {kernel}: {}", exit_name(exit))?;
    }
    Ok(exit)
}

/// The patterns to run: those asked for, else every one `fs` can show.
/// Writes into fallocated space are writes into new blocks only where
/// iomap hears of them ([`Fs::shows_new_blocks`]): elsewhere they are
/// skipped, and said to be, unless asked for by name.
fn chosen(asked: &[Pattern], fs: Fs) -> (Vec<Pattern>, Vec<Pattern>) {
    if !asked.is_empty() {
        return (
            Pattern::ALL.into_iter().filter(|p| asked.contains(p)).collect(),
            Vec::new(),
        );
    }
    Pattern::ALL
        .into_iter()
        .partition(|p| !p.into_fallocated() || fs.shows_new_blocks())
}

/// Why a pattern was skipped on `fs`.
fn unseen_on(fs: Fs) -> String {
    format!(
        "{} maps every direct write to iomap as written blocks and converts preallocated extents itself, so \
         dio-trace cannot tell a write into fallocated space from an overwrite there (such writes are not counted)",
        fs.name()
    )
}

fn overall(rows: &[(Pattern, u64, PatternVerdict)]) -> Exit {
    if rows.iter().any(|(_, _, v)| *v == PatternVerdict::Violation) {
        Exit::Violation
    } else if rows
        .iter()
        .any(|(_, _, v)| matches!(v, PatternVerdict::Inconclusive(_)))
    {
        Exit::Inconclusive
    } else {
        Exit::Ordered
    }
}

fn exit_name(e: Exit) -> &'static str {
    match e {
        Exit::Ordered => "ordered",
        Exit::Violation => "violation",
        Exit::Disagreement => "crash-disagrees",
        _ => "inconclusive",
    }
}

/// Bytes per write: `dio-trace write`'s default, which verify keeps.
const WRITE_SIZE: u64 = 4096;

/// Tear the log-writes stack down (completing the log), then replay it to
/// each counted write's return and judge that write's verdict against it.
fn crash_truths(
    rig: &mut Rig,
    seen: &[(Pattern, Vec<Seen>)],
    count: u32,
    layout: Layout,
    json: bool,
    keep: Option<&std::path::Path>,
) -> anyhow::Result<Vec<WriteTruth>> {
    let log = rig.finish()?;
    if let Some(keep) = keep {
        let len = crate::crash::log::Log::open(std::fs::File::open(&log)?)?.used_bytes()?;
        let mut from = std::io::Read::take(std::fs::File::open(&log)?, len);
        let mut to = std::fs::File::create(keep)?;
        std::io::copy(&mut from, &mut to)?;
    }
    let mut truths = Vec::new();
    for (pattern, writes) in seen.iter().filter(|(p, _)| p.counted()) {
        let pattern = *pattern;
        if !json {
            eprintln!(
                "crash truth: replaying {} to each of its {} writes' returns",
                pattern.name(),
                count * pattern.files()
            );
        }
        for writer in 0..pattern.files() {
            for index in 0..count {
                let reports = writes.iter().filter_map(|(path, pos, v)| {
                    (truth::locate(pattern, path.as_deref(), *pos, count, WRITE_SIZE)
                        == Some((writer, index)))
                    .then_some(*v)
                });
                let verdict = truth::returned(reports);
                let mut file = layout.place(&format!("dio-trace-verify-{}", pattern.name()));
                if pattern.files() > 1 {
                    file.push(writer.to_string());
                }
                let mark = crate::crash::mark_name(pattern, writer, index);
                let survived = rig.survivor(&log, &mark, &file).map_err(|e| format!("{e:#}"));
                truths.push(WriteTruth::new(
                    pattern,
                    (writer, index),
                    verdict,
                    survived,
                    (count, WRITE_SIZE),
                ));
            }
        }
    }
    Ok(truths)
}
