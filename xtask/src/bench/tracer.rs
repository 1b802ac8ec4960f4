//! The three conditions, and the life of a tracer around one fio run:
//! started and attached before fio starts, stopped with SIGINT after it
//! ends, its own counts read back so the report shows what each one saw.

use std::{
    fs::File,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::host;

/// Loading BTF and compiling the script take a second or two; this is for
/// a machine busy with other builds.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(120);
/// dio-trace drains its ring buffer and judges what is still open.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The line bpftrace prints from BEGIN. BEGIN fires before the other probes
/// attach, but its output reaches stdout only once bpftrace polls its perf
/// buffers, which it starts after attaching every probe.
const BPFTRACE_READY: &str = "dio-ordering: tracing";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Untraced,
    /// A default `watch --json`: only problems shown, so ordered writes
    /// are counted in the kernel, not sent.
    DioTrace,
    /// `watch --json --show all`: every write sent and printed.
    DioTraceAll,
    Bpftrace,
}

impl Condition {
    pub const ALL: [Self; 4] = [Self::Untraced, Self::DioTrace, Self::DioTraceAll, Self::Bpftrace];
    /// The traced ones, as the cost tables list them.
    pub const TRACED: [Self; 3] = [Self::DioTrace, Self::DioTraceAll, Self::Bpftrace];

    pub fn name(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::DioTrace => "dio-trace",
            Self::DioTraceAll => "dio-trace --show all",
            Self::Bpftrace => "bpftrace",
        }
    }

    /// Repetition `rep`'s order: each condition goes first once in four.
    pub fn rotated(rep: usize) -> [Self; 4] {
        let mut order = Self::ALL;
        order.rotate_left(rep % Self::ALL.len());
        order
    }
}

/// What a tracer reported about one run.
#[derive(Clone, Debug, Default)]
pub struct TraceFacts {
    /// dio-trace: direct writes to ext4; bpftrace: direct I/O of any
    /// iomap filesystem, reads included (its tracepoint cannot tell).
    pub direct: u64,
    /// Size-extending sync-flavoured direct writes.
    pub counted: u64,
    pub ordered: u64,
    pub violations: u64,
    /// dio-trace: inconclusive; bpftrace: completions without any sync.
    pub unjudged: u64,
    /// Records dio-trace lost (bpftrace keeps everything in maps).
    pub lost: u64,
    /// Records dio-trace's kernel side sent to user space (its `sent`
    /// counter): each one is a ring-buffer commit and maybe a wake-up.
    pub sent: u64,
    /// Per-write NDJSON lines dio-trace printed (bpftrace prints none).
    pub write_lines: u64,
    /// The tracer process's own CPU time (user + system) while fio ran;
    /// the BPF programs run in fio's context and are not in it.
    pub cpu_s: f64,
    /// What the tracer's BPF programs cost, in fio's context, program by
    /// program (kernel `bpf_stats`).
    pub programs: Vec<host::ProgramCost>,
    /// dio-trace's `probe=mechanism:target` list from its start line.
    pub probes: Option<String>,
}

impl TraceFacts {
    /// The BPF programs' total run time, in seconds.
    pub fn bpf_s(&self) -> f64 {
        self.programs.iter().map(|p| p.run_ns).sum::<u64>() as f64 / 1e9
    }
}

pub struct Tools {
    pub dio_trace: PathBuf,
    pub script: PathBuf,
    /// Where the tracers' stderr goes (shown when one fails).
    pub logs: PathBuf,
    /// dio-trace takes a stack at every counted write's size update and
    /// sync (`--stacks`).
    pub stacks: bool,
}

impl Tools {
    /// Start the tracer of `condition` and wait until it is attached.
    pub fn start(&self, condition: Condition) -> Result<Option<Running>> {
        let (kind, mut cmd) = match condition {
            Condition::Untraced => return Ok(None),
            Condition::DioTrace | Condition::DioTraceAll => {
                let mut cmd = Command::new(&self.dio_trace);
                cmd.args(["watch", "--json"]);
                if condition == Condition::DioTraceAll {
                    cmd.args(["--show", "all"]);
                }
                if self.stacks {
                    cmd.arg("--stacks");
                }
                (Kind::DioTrace, cmd)
            }
            Condition::Bpftrace => {
                let mut cmd = Command::new("bpftrace");
                // Line-buffered: the ready line must not sit in a buffer.
                cmd.args(["-B", "line"]).arg(&self.script);
                (Kind::Bpftrace, cmd)
            }
        };
        let log = self.logs.join(format!("{}.err", condition.name()));
        Running::start(kind, &mut cmd, log).map(Some)
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    DioTrace,
    Bpftrace,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::DioTrace => "dio-trace",
            Self::Bpftrace => "bpftrace",
        }
    }

    fn is_ready(self, line: &str) -> bool {
        match self {
            Self::DioTrace => json_type(line).as_deref() == Some("start"),
            Self::Bpftrace => line.trim() == BPFTRACE_READY,
        }
    }

    /// dio-trace's per-write lines are only counted, not kept: a run has
    /// tens of thousands and only the start and summary lines matter.
    fn is_write_line(self, line: &str) -> bool {
        matches!(self, Self::DioTrace) && line.contains(r#""type":"write""#)
    }

    /// dio-trace exits 0 (ordered), 1 (violation) or 3 (inconclusive);
    /// each still ends with a summary. bpftrace exits 0.
    fn exited_well(self, status: ExitStatus) -> bool {
        match self {
            Self::DioTrace => matches!(status.code(), Some(0 | 1 | 3)),
            Self::Bpftrace => status.success(),
        }
    }

    fn facts(self, lines: &[String]) -> Result<TraceFacts> {
        match self {
            Self::DioTrace => dio_trace_facts(lines),
            Self::Bpftrace => Ok(bpftrace_facts(lines)),
        }
    }
}

/// A tracer attached for one run. Dropping it without [`Running::stop`]
/// (an error elsewhere) still stops the process.
pub struct Running {
    kind: Kind,
    child: Option<Child>,
    lines: Receiver<String>,
    /// Returns how many per-write lines it skipped.
    reader: Option<JoinHandle<u64>>,
    log: PathBuf,
    cpu_at_start: f64,
    /// The line that said it was attached (dio-trace's names its probes).
    ready_line: String,
}

impl Running {
    fn start(kind: Kind, cmd: &mut Command, log: PathBuf) -> Result<Self> {
        let err = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", kind.name()))?;
        let stdout = child.stdout.take().context("the tracer's stdout was not piped")?;
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || drain(kind, stdout, tx));
        let mut running = Self {
            kind,
            cpu_at_start: 0.0,
            child: Some(child),
            lines,
            reader: Some(reader),
            log,
            ready_line: String::new(),
        };
        running.wait_attached()?;
        running.cpu_at_start = host::cpu_seconds(running.pid())?;
        Ok(running)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn wait_attached(&mut self) -> Result<()> {
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        loop {
            host::check_interrupted()?;
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if self.kind.is_ready(&line) => {
                    self.ready_line = line;
                    return Ok(());
                }
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    bail!(
                        "{} exited before attaching: {}",
                        self.kind.name(),
                        self.stderr_tail()
                    )
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not attach within {}s: {}",
                    self.kind.name(),
                    ATTACH_TIMEOUT.as_secs(),
                    self.stderr_tail()
                );
            }
        }
    }

    /// SIGINT, wait for the summary, read the tracer's counts.
    pub fn stop(mut self) -> Result<TraceFacts> {
        let name = self.kind.name();
        let cpu_s = host::cpu_seconds(self.pid())? - self.cpu_at_start;
        let programs = host::bpf_programs(self.pid());
        let mut child = self.child.take().context("tracer already stopped")?;
        host::signal(&child, libc::SIGINT);
        let Some(status) = host::wait_for(&mut child, EXIT_TIMEOUT)? else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{name} still running {}s after SIGINT; killed",
                EXIT_TIMEOUT.as_secs()
            );
        };
        let write_lines = self.reader.take().map(|r| r.join().unwrap_or(0)).unwrap_or(0);
        let lines: Vec<String> = std::iter::once(std::mem::take(&mut self.ready_line))
            .chain(self.lines.try_iter())
            .collect();
        if !self.kind.exited_well(status) {
            bail!("{name} ended with {status}: {}", self.stderr_tail());
        }
        let mut facts = self
            .kind
            .facts(&lines)
            .with_context(|| format!("reading {name}'s counts; its stderr: {}", self.stderr_tail()))?;
        facts.cpu_s = cpu_s;
        facts.programs = programs;
        facts.write_lines = write_lines;
        Ok(facts)
    }

    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join(" | ");
        if tail.is_empty() {
            "(no stderr)".into()
        } else {
            tail
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        host::signal(&child, libc::SIGINT);
        if !matches!(host::wait_for(&mut child, Duration::from_secs(10)), Ok(Some(_))) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Read the tracer's stdout to the end (a full pipe would stall it): send
/// every line on but per-write lines, which are only counted.
fn drain(kind: Kind, stdout: ChildStdout, tx: mpsc::Sender<String>) -> u64 {
    let mut skipped = 0;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if kind.is_write_line(&line) {
            skipped += 1;
        } else if tx.send(line).is_err() {
            break;
        }
    }
    skipped
}

fn json_type(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    v["type"].as_str().map(str::to_owned)
}

/// From the NDJSON `summary` line (and the `start` line's probes).
fn dio_trace_facts(lines: &[String]) -> Result<TraceFacts> {
    let parsed: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let of_type = |t: &str| parsed.iter().find(|v| v["type"] == t);
    let summary = of_type("summary").context("dio-trace printed no summary line")?;
    let num = |key: &str| summary[key].as_u64().unwrap_or(0);
    Ok(TraceFacts {
        direct: num("writes"),
        counted: num("counted"),
        ordered: num("ordered"),
        violations: num("violations"),
        unjudged: num("inconclusive"),
        lost: num("lost_events"),
        sent: summary["counters"]["sent"].as_u64().unwrap_or(0),
        probes: of_type("start").map(|s| probe_list(&s["probes"])),
        ..TraceFacts::default()
    })
}

/// `{"write_begin": "tracepoint:iomap_dio_rw_begin", ...}` as
/// `write_begin=tracepoint:iomap_dio_rw_begin ...`, unserved ones left out.
fn probe_list(probes: &Value) -> String {
    let Some(map) = probes.as_object() else {
        return String::new();
    };
    map.iter()
        .filter_map(|(probe, target)| target.as_str().map(|t| format!("{probe}={t}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// From the maps bpftrace prints at exit (`@counted: 12`); a map never
/// written is not printed and counts as zero.
fn bpftrace_facts(lines: &[String]) -> TraceFacts {
    let value = |name: &str| {
        let prefix = format!("@{name}: ");
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or(0)
    };
    TraceFacts {
        direct: value("direct_io"),
        counted: value("counted"),
        ordered: value("ordered"),
        violations: value("violations"),
        unjudged: value("sync_missing"),
        ..TraceFacts::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_condition_leads_once_in_three() {
        let firsts: Vec<Condition> = (0..Condition::ALL.len())
            .map(|r| Condition::rotated(r)[0])
            .collect();
        assert_eq!(firsts, Condition::ALL.to_vec());
    }

    #[test]
    fn dio_trace_start_line_is_recognised_whatever_the_key_order() {
        let line = r#"{"kernel":"6.18","probes":{},"type":"start"}"#;
        assert!(Kind::DioTrace.is_ready(line));
        assert!(!Kind::DioTrace.is_ready(r#"{"type":"summary"}"#));
    }

    #[test]
    fn dio_trace_summary_gives_the_counts() {
        let lines = [
            r#"{"kernel":"k","probes":{"write_begin":"tracepoint:iomap_dio_rw_begin","inode_extension":null},"type":"start"}"#,
            r#"{"counted":5,"counters":{"sent":30},"inconclusive":1,"lost_events":0,"ordered":4,"type":"summary","violations":0,"writes":9}"#,
        ]
        .map(String::from);
        let f = dio_trace_facts(&lines).unwrap();
        assert_eq!(
            (f.direct, f.counted, f.ordered, f.unjudged, f.sent),
            (9, 5, 4, 1, 30)
        );
        assert_eq!(
            f.probes.as_deref(),
            Some("write_begin=tracepoint:iomap_dio_rw_begin")
        );
    }

    #[test]
    fn bpftrace_maps_give_the_counts() {
        let lines = [
            "dio-ordering: tracing",
            "",
            "@counted: 7",
            "@direct_io: 30",
            "@ordered: 7",
        ]
        .map(String::from);
        let f = bpftrace_facts(&lines);
        assert_eq!((f.direct, f.counted, f.ordered, f.violations), (30, 7, 7, 0));
    }
}
