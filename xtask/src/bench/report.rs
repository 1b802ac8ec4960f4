//! The results: spread per condition, ratios to untraced, what the tracers
//! saw, and the marked section of BENCHMARKS.md that holds them.

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use super::{fio::Workload, tracer::Condition, tracer::TraceFacts};

pub const BEGIN: &str = "<!-- bench:begin -->";
pub const END: &str = "<!-- bench:end -->";

/// One fio run under one condition.
pub struct Sample {
    pub workload: Workload,
    pub condition: Condition,
    pub iops: f64,
    pub facts: Option<TraceFacts>,
}

/// How the numbers were made: the record above the tables.
pub struct Setup {
    pub command: String,
    pub machine: Machine,
    pub runtime: u32,
    pub repeat: u32,
}

/// The machine the numbers belong to. Load is read at both ends: on a
/// shared VM it is the only hint of other work competing for the cores.
pub struct Machine {
    date: String,
    kernel: String,
    cpus: usize,
    cpu_model: String,
    mem_gib: f64,
    load_start: String,
    load_end: Option<String>,
}

impl Machine {
    pub fn probe() -> Result<Self> {
        Ok(Self {
            date: utc_now()?,
            kernel: read_trimmed("/proc/sys/kernel/osrelease")?,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpu_model().unwrap_or_else(|| "unknown CPU".into()),
            mem_gib: mem_total_kib()? as f64 / (1024.0 * 1024.0),
            load_start: load_average()?,
            load_end: None,
        })
    }

    /// The same facts with the load average at the end of the runs.
    pub fn finished(self) -> Self {
        Self {
            load_end: load_average().ok(),
            ..self
        }
    }
}

fn read_trimmed(path: &str) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {path}"))?
        .trim()
        .to_string())
}

fn utc_now() -> Result<String> {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .context("running date")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

fn mem_total_kib() -> Result<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no MemTotal in /proc/meminfo")
}

/// The 1-, 5- and 15-minute load averages.
fn load_average() -> Result<String> {
    let text = read_trimmed("/proc/loadavg")?;
    Ok(text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Spread {
    mean: f64,
    min: f64,
    max: f64,
}

fn spread(values: &[f64]) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Spread { mean, min, max })
}

fn iops_of(samples: &[Sample], workload: Workload, condition: Condition) -> Vec<f64> {
    samples
        .iter()
        .filter(|s| s.workload == workload && s.condition == condition)
        .map(|s| s.iops)
        .collect()
}

/// Workloads in the order they ran.
fn workloads(samples: &[Sample]) -> Vec<Workload> {
    let mut seen = Vec::new();
    for s in samples {
        if !seen.contains(&s.workload) {
            seen.push(s.workload);
        }
    }
    seen
}

/// The whole marked section, markers included.
pub fn section(setup: &Setup, samples: &[Sample]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(out, "{}", header(setup));
    let _ = writeln!(out, "{}", iops_table(samples));
    let _ = writeln!(out, "{}", facts_table(samples, setup.runtime, setup.machine.cpus));
    let _ = writeln!(out, "{}", programs_table(samples));
    if let Some(probes) = samples.iter().find_map(|s| s.facts.as_ref()?.probes.clone()) {
        let _ = writeln!(out, "dio-trace's probes: `{probes}`\n");
    }
    let _ = write!(out, "{END}");
    out
}

fn header(setup: &Setup) -> String {
    let m = &setup.machine;
    format!(
        "Produced by `{command}` on {date}.\n\n\
         - kernel {kernel}; {cpus} CPUs ({model}); {mem:.1} GiB RAM\n\
         - load average (1/5/15 min) {start} at the start, {end} at the end\n\
         - each fio run {runtime} s; {repeat} repetition(s), conditions interleaved within each, \
         order rotated\n",
        command = setup.command,
        date = m.date,
        kernel = m.kernel,
        cpus = m.cpus,
        model = m.cpu_model,
        mem = m.mem_gib,
        start = m.load_start,
        end = m.load_end.as_deref().unwrap_or("?"),
        runtime = setup.runtime,
        repeat = setup.repeat,
    )
}

fn iops_table(samples: &[Sample]) -> String {
    let mut out = String::from(
        "| workload | condition | IOPS mean | min–max | traced/untraced |\n|---|---|---:|---:|---:|\n",
    );
    for w in workloads(samples) {
        let base = spread(&iops_of(samples, w, Condition::Untraced));
        for (i, c) in Condition::ALL.into_iter().enumerate() {
            let Some(s) = spread(&iops_of(samples, w, c)) else {
                continue;
            };
            let label = if i == 0 { workload_label(w) } else { String::new() };
            let ratio = match (c, base) {
                (Condition::Untraced, _) | (_, None) => "—".to_string(),
                (_, Some(b)) => ratio_text(s.mean / b.mean),
            };
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {}–{} | {ratio} |",
                c.name(),
                thousands(s.mean),
                thousands(s.min),
                thousands(s.max)
            );
        }
    }
    out
}

fn workload_label(w: Workload) -> String {
    format!("{}: {}", w.name(), w.describe().replace('|', "\\|"))
}

/// `0.962 (−3.8%)`
fn ratio_text(ratio: f64) -> String {
    let pct = (ratio - 1.0) * 100.0;
    let sign = if pct < 0.0 { "−" } else { "+" };
    format!("{ratio:.3} ({sign}{:.1}%)", pct.abs())
}

fn facts_table(samples: &[Sample], runtime: u32, cpus: usize) -> String {
    let mut out = String::from(
        "What the tracers saw and what they cost, summed over the repetitions. Cost is measured \
         directly, unlike IOPS it does not drown in the disk's noise: *BPF ns/I/O* is the kernel \
         programs' run time (`bpf_stats`) per direct I/O of the workload, *process CPU s/run* the \
         tracer process's own time (its threads' `schedstat`), *process ns/counted* that time per \
         counted write, *CPU share* BPF and process together as a share of the machine's \
         CPU time during the run, and *CPU ns/I/O* the same time per direct I/O (a tracer whose \
         runs did more I/O has the larger share at the same cost per I/O). *Sent* is dio-trace's `sent` counter: the writes and names that \
         left through the ring (a batch counts as the writes in it; those read from the batches \
         after detaching are not in it):\n\n\
         | workload | tracer | direct I/O | counted | ordered | violations | unjudged | lost | sent | NDJSON write lines | BPF ns/I/O | process CPU s/run | process ns/counted | CPU share | CPU ns/I/O |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for w in workloads(samples) {
        for c in Condition::TRACED {
            let runs = tracer_runs(samples, w, c);
            if runs.is_empty() {
                continue;
            }
            let sum = |f: fn(&TraceFacts) -> u64| thousands(runs.iter().map(|r| f(r)).sum::<u64>() as f64);
            let cpu = runs.iter().map(|r| r.cpu_s).sum::<f64>() / runs.len() as f64;
            let bpf = runs.iter().map(|r| r.bpf_s()).sum::<f64>() / runs.len() as f64;
            let direct = runs.iter().map(|r| r.direct).sum::<u64>() as f64 / runs.len() as f64;
            let per_io = |secs: f64| if direct > 0.0 { secs * 1e9 / direct } else { 0.0 };
            let ns_per_io = per_io(bpf);
            let share = 100.0 * (cpu + bpf) / (f64::from(runtime) * cpus as f64);
            let cpu_per_io = per_io(cpu + bpf);
            let counted = runs.iter().map(|r| r.counted).sum::<u64>() as f64 / runs.len() as f64;
            let per_counted = if counted > 0.0 {
                format!("{:.0}", cpu * 1e9 / counted)
            } else {
                "—".to_owned()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {ns_per_io:.0} | {cpu:.3} | {per_counted} | {share:.3}% | {cpu_per_io:.0} |",
                w.name(),
                c.name(),
                sum(|f| f.direct),
                sum(|f| f.counted),
                sum(|f| f.ordered),
                sum(|f| f.violations),
                sum(|f| f.unjudged),
                sum(|f| f.lost),
                sum(|f| f.sent),
                sum(|f| f.write_lines),
            );
        }
    }
    out
}

/// What one tracer reported on one workload, one entry per repetition.
fn tracer_runs(samples: &[Sample], w: Workload, c: Condition) -> Vec<&TraceFacts> {
    samples
        .iter()
        .filter(|s| s.workload == w && s.condition == c)
        .filter_map(|s| s.facts.as_ref())
        .collect()
}

/// Where each tracer's BPF time goes: every program that ran, summed over
/// the repetitions. Runs per I/O show how often the kernel hits the hook
/// (the size update's moves from run to run with the kernel's timestamp
/// and extent work); ns/run what one run costs.
fn programs_table(samples: &[Sample]) -> String {
    let mut out = String::from(
        "Per program (`bpf_stats` run time and count of each program the tracer held, \
         summed over the repetitions, per direct I/O of the workload):\n\n\
         | workload | tracer | program | runs/I/O | ns/run | ns/I/O |\n\
         |---|---|---|---:|---:|---:|\n",
    );
    for w in workloads(samples) {
        for c in Condition::TRACED {
            let runs = tracer_runs(samples, w, c);
            let direct = runs.iter().map(|r| r.direct).sum::<u64>();
            let mut by_name: Vec<(String, u64, u64)> = Vec::new();
            for p in runs.iter().flat_map(|r| &r.programs) {
                match by_name.iter_mut().find(|(n, ..)| *n == p.name) {
                    Some((_, ns, n)) => {
                        *ns += p.run_ns;
                        *n += p.runs;
                    }
                    None => by_name.push((p.name.clone(), p.run_ns, p.runs)),
                }
            }
            for (name, ns, n) in by_name.iter().filter(|(_, _, n)| *n > 0) {
                let per_io = |v: u64| if direct > 0 { v as f64 / direct as f64 } else { 0.0 };
                let _ = writeln!(
                    out,
                    "| {} | {} | `{name}` | {:.2} | {:.0} | {:.0} |",
                    w.name(),
                    c.name(),
                    per_io(*n),
                    *ns as f64 / *n as f64,
                    per_io(*ns),
                );
            }
        }
    }
    out
}

/// `12345.6` as `12,346`.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Replace the marked section of `path`, keeping the rest; a file without
/// markers gets the section appended, a missing file is created.
pub fn write_section(path: &Path, section: &str) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NEW_FILE.to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new = replace_section(&old, section)?;
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

const NEW_FILE: &str = "# Benchmarks\n\nWritten by `cargo xtask bench`; text outside the markers is kept.\n";

fn replace_section(text: &str, section: &str) -> Result<String> {
    match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if b < e => Ok(format!("{}{section}{}", &text[..b], &text[e + END.len()..])),
        (None, None) => Ok(format!("{}\n\n{section}\n", text.trim_end_matches('\n'))),
        _ => bail!("BENCHMARKS.md has a broken {BEGIN} … {END} pair; fix it by hand"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_three_runs() {
        let s = spread(&[90.0, 110.0, 100.0]).unwrap();
        assert_eq!(
            s,
            Spread {
                mean: 100.0,
                min: 90.0,
                max: 110.0
            }
        );
        assert!(spread(&[]).is_none());
    }

    #[test]
    fn numbers_read_easily() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.6), "1,000");
        assert_eq!(ratio_text(0.962), "0.962 (−3.8%)");
    }

    #[test]
    fn section_is_replaced_and_the_rest_kept() {
        let text = format!("intro\n{BEGIN}\nold\n{END}\nafter\n");
        let new = replace_section(&text, &format!("{BEGIN}\nnew\n{END}")).unwrap();
        assert_eq!(new, format!("intro\n{BEGIN}\nnew\n{END}\nafter\n"));
    }

    #[test]
    fn a_file_without_markers_gets_the_section_appended() {
        let new = replace_section("# B\n", &format!("{BEGIN}\nx\n{END}")).unwrap();
        assert_eq!(new, format!("# B\n\n{BEGIN}\nx\n{END}\n"));
    }

    #[test]
    fn cost_per_io_counts_bpf_and_process_over_the_io_done() {
        // 1 s of BPF and 1 s of process time over 10 s on 2 CPUs: a 10% share,
        // and 2 s over 1,000,000 I/Os is 2,000 ns each.
        let facts = TraceFacts {
            direct: 1_000_000,
            counted: 1_000_000,
            cpu_s: 1.0,
            programs: vec![crate::bench::host::ProgramCost {
                name: "p".into(),
                run_ns: 1_000_000_000,
                runs: 1_000_000,
            }],
            ..TraceFacts::default()
        };
        let samples = [Sample {
            workload: Workload::A,
            condition: Condition::DioTrace,
            iops: 1.0,
            facts: Some(facts),
        }];
        let table = facts_table(&samples, 10, 2);
        let row = table
            .lines()
            .find(|l| l.starts_with("| a | dio-trace |"))
            .unwrap();
        assert!(row.ends_with("| 1000 | 1.000 | 1000 | 10.000% | 2000 |"), "{row}");
    }

    #[test]
    fn a_half_marked_file_is_left_alone() {
        assert!(replace_section(&format!("{END}\n{BEGIN}"), "s").is_err());
    }
}
