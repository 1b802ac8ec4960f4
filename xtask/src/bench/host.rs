//! The host around the benchmark: privileges, tools, signals, commands.

use std::{
    path::Path,
    process::{Child, Command},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Tools apt can bring; installed when missing, as the brief of issue 5 asks.
const INSTALLABLE: &[(&str, &str)] = &[("fio", "fio"), ("bpftrace", "bpftrace")];

/// Tools that come with any Debian system; missing means a broken host.
const REQUIRED: &[(&str, &str)] = &[
    ("mkfs.ext4", "e2fsprogs"),
    ("losetup", "util-linux"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("sync", "coreutils"),
];

pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "cargo xtask bench needs root: it makes a loop device, mounts it and loads BPF \
             programs (run it with sudo)"
        );
    }
    Ok(())
}

pub fn require_tools() -> Result<()> {
    let missing: Vec<&str> = INSTALLABLE
        .iter()
        .filter(|(tool, _)| !on_path(tool))
        .map(|&(_, pkg)| pkg)
        .collect();
    if !missing.is_empty() {
        println!("bench: installing {} (apt-get install -y)", missing.join(" "));
        sh(Command::new("apt-get").args(["update", "-q"]))?;
        sh(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    for &(tool, pkg) in INSTALLABLE.iter().chain(REQUIRED) {
        if !on_path(tool) {
            bail!("{tool} is missing: install the Debian package {pkg} (apt-get install -y {pkg})");
        }
    }
    Ok(())
}

/// Like `which`, over `PATH` and the sbin directories a sudo `PATH` may lack.
fn on_path(tool: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .any(|dir| Path::new(dir).join(tool).is_file())
}

pub fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Flush dirty data host-wide (the loop image's page cache included) so
/// each run starts from the same state instead of paying for the last one.
pub fn settle() -> Result<()> {
    sh(&mut Command::new("sync"))
}

/// Set by SIGINT/SIGTERM. The benchmark then stops at the next check and
/// returns an error, so every Drop guard (loop device, mount, tracers) runs;
/// the default action would kill us with the scratch filesystem mounted.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn stop_on_signals() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        if unsafe { libc::signal(sig, handler) } == libc::SIG_ERR {
            bail!(
                "installing a handler for signal {sig}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted by a signal");
    }
    Ok(())
}

pub fn signal(child: &Child, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: plain syscall on our own child's pid (not yet reaped).
    unsafe { libc::kill(pid, sig) };
}

/// Wait for `child` up to `limit`; `None` if it is still running then.
pub fn wait_for(child: &mut Child, limit: Duration) -> Result<Option<std::process::ExitStatus>> {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child process")? {
            return Ok(Some(status));
        }
        if Instant::now() >= end {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Turns on the kernel's BPF run-time accounting for the benchmark and
/// restores the previous setting when dropped. With it on, every loaded
/// program's `run_time_ns` appears in its fd's fdinfo: the tracers' kernel
/// cost, measured exactly instead of read off noisy IOPS. It adds the same
/// small cost (two clock reads per program run) to both tracers.
pub struct BpfStats {
    previous: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let previous = std::fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?;
        std::fs::write(BPF_STATS, "1").with_context(|| format!("enabling {BPF_STATS}"))?;
        Ok(Self { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, self.previous.trim());
    }
}

/// One BPF program a tracer holds, and what it has cost so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramCost {
    /// As the kernel keeps it (15 bytes); `id N` where it could not be read.
    pub name: String,
    /// `run_time_ns` (needs [`BpfStats`]).
    pub run_ns: u64,
    /// `run_cnt`.
    pub runs: u64,
}

/// The BPF programs held open by `pid`, from /proc/PID/fdinfo (run time and
/// count), named from the kernel's program info by `prog_id`: where each
/// tracer's kernel time goes, program by program.
pub fn bpf_programs(pid: u32) -> Vec<ProgramCost> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let held: Vec<(Option<u32>, ProgramCost)> = dir
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| parse_program(&info))
        .collect();
    let names: std::collections::HashMap<u32, String> = aya::programs::loaded_programs()
        .flatten()
        .filter_map(|p| Some((p.id(), p.name_as_str()?.to_owned())))
        .collect();
    held.into_iter()
        .map(|(id, mut cost)| {
            if let Some(name) = id.and_then(|id| names.get(&id)) {
                cost.name.clone_from(name);
            }
            cost
        })
        .collect()
}

/// A program fd's fdinfo: its `prog_id` (when the kernel lists it) and its
/// cost, named by id until the caller finds its name; `None` for other fds.
fn parse_program(fdinfo: &str) -> Option<(Option<u32>, ProgramCost)> {
    let field = |key: &str| {
        fdinfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let run_ns = field("run_time_ns:")?;
    let id = field("prog_id:").and_then(|v| u32::try_from(v).ok());
    Some((
        id,
        ProgramCost {
            name: id.map_or_else(|| "?".to_owned(), |id| format!("id {id}")),
            run_ns,
            runs: field("run_cnt:").unwrap_or(0),
        },
    ))
}

/// CPU time `pid` has used so far, to the nanosecond: the sum over its
/// threads of the time the scheduler ran them (`/proc/PID/task/*/schedstat`,
/// first field). `/proc/PID/stat`'s utime + stime count 10 ms ticks, too
/// coarse for a tracer that uses tens of milliseconds in a run; it is the
/// fallback where schedstat is missing (no `CONFIG_SCHED_INFO`).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let mut ns = 0u64;
    let mut threads = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Some(v) = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| parse_schedstat_ns(&s))
            {
                ns += v;
                threads += 1;
            }
        }
    }
    if threads > 0 {
        return Ok(ns as f64 / 1e9);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / clock_ticks_per_second())
        .with_context(|| format!("parsing /proc/{pid}/stat"))
}

/// `schedstat`'s first field: nanoseconds on a CPU.
fn parse_schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// utime + stime: fields 14 and 15, counted after the `(comm)` field, which
/// may itself hold spaces.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_time_comes_from_prog_fdinfo_only() {
        let prog = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_jited:\t1\nrun_time_ns:\t123456\nrun_cnt:\t42\nprog_id:\t7\n";
        assert_eq!(
            parse_program(prog),
            Some((
                Some(7),
                ProgramCost {
                    name: "id 7".into(),
                    run_ns: 123456,
                    runs: 42
                }
            ))
        );
        assert_eq!(parse_program("pos:\t0\nmap_type:\t27\n"), None);
    }

    #[test]
    fn schedstat_gives_nanoseconds() {
        assert_eq!(parse_schedstat_ns("123456789 2000 17\n"), Some(123_456_789));
        assert_eq!(parse_schedstat_ns(""), None);
    }

    #[test]
    fn cpu_ticks_skip_a_comm_with_spaces() {
        let stat = "812 (my prog) S 1 812 812 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }
}
