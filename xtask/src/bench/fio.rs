//! The three fio workloads of issue 5 and reading their IOPS.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use super::host;

/// Workload b's file: overwritten in place, laid out once.
const OVERWRITE_FILE: &str = "overwrite.dat";
const OVERWRITE_SIZE: &str = "512M";
/// Length of the untimed run before the measured ones.
const WARM_UP_SECS: u32 = 2;
/// Parallel appenders of workload c.
const APPENDERS: u64 = 16;
/// Generous over what a run can append (this VM: ~2,000 sync appends/s of
/// 4 KiB), so runs end on `--runtime`, not on `--size`.
const APPEND_BYTES_PER_SEC: u64 = 64 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Size-extending O_DIRECT|O_SYNC writes: every one is counted.
    A,
    /// Non-extending, non-sync O_DIRECT overwrites: none is counted, the
    /// tracers only pay for the filter.
    B,
    /// Sixteen tasks appending as in A at once: contention on 2 cores.
    C,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
            Self::C => "c",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::A => "4 KiB O_DIRECT|O_SYNC appends, 1 job (psync)",
            Self::B => "4 KiB O_DIRECT random overwrites, libaio iodepth 16",
            Self::C => "4 KiB O_DIRECT|O_SYNC appends, 16 jobs (psync)",
        }
    }
}

/// Bytes one append run may write at most (it stops at `--runtime` first).
pub fn append_bytes(runtime: u32) -> u64 {
    (u64::from(runtime) * APPEND_BYTES_PER_SEC).max(256 << 20)
}

pub struct Runner {
    mount: PathBuf,
    work: PathBuf,
    runtime: u32,
}

impl Runner {
    pub fn new(mount: &Path, work: &Path, runtime: u32) -> Self {
        Self {
            mount: mount.to_path_buf(),
            work: work.to_path_buf(),
            runtime,
        }
    }

    /// Write workload b's file out once (real blocks, not unwritten
    /// extents), so its runs are pure overwrites and no run pays for it.
    pub fn prepare_overwrites(&self) -> Result<()> {
        let mut cmd = self.fio("layout");
        cmd.args(["--rw=write", "--bs=1M", "--create_only=1", "--overwrite=1"])
            .arg(format!("--filename={OVERWRITE_FILE}"))
            .arg(format!("--size={OVERWRITE_SIZE}"));
        self.finish(cmd, "layout").map(drop)
    }

    /// Run `workload` for the runtime; total write IOPS over its jobs.
    pub fn run(&self, workload: Workload) -> Result<f64> {
        self.run_for(workload, self.runtime)
    }

    /// A short run whose numbers are thrown away: the first run on a fresh
    /// filesystem pays for cold metadata and would weigh on one condition.
    pub fn warm_up(&self, workload: Workload) -> Result<()> {
        self.run_for(workload, WARM_UP_SECS.min(self.runtime)).map(drop)
    }

    fn run_for(&self, workload: Workload, secs: u32) -> Result<f64> {
        let mut cmd = self.fio(workload.name());
        cmd.args(["--bs=4k", "--direct=1"])
            .arg(format!("--runtime={secs}"));
        match workload {
            Workload::A => self.appends(&mut cmd, 1),
            Workload::B => overwrites(&mut cmd),
            Workload::C => self.appends(&mut cmd, APPENDERS),
        }
        let json = self.finish(cmd, workload.name())?;
        total_write_iops(&json)
            .with_context(|| format!("reading fio's JSON for workload {}", workload.name()))
    }

    /// New files each run (`--unlink=1` removes them afterwards), never
    /// preallocated (fio's default fallocate would set i_size up front and
    /// no write would extend the file).
    fn appends(&self, cmd: &mut Command, jobs: u64) {
        cmd.args([
            "--rw=write",
            "--ioengine=psync",
            "--sync=1",
            "--fallocate=none",
            "--unlink=1",
        ])
        .arg(format!("--numjobs={jobs}"))
        .arg(format!("--size={}", append_bytes(self.runtime) / jobs));
    }

    /// fio with what every run shares; `name` names the job and its files.
    fn fio(&self, name: &str) -> Command {
        let mut cmd = Command::new("fio");
        cmd.arg(format!("--name={name}"))
            .arg("--directory")
            .arg(&self.mount)
            .args(["--output-format=json", "--eta=never"])
            .arg("--output")
            .arg(self.json_path(name));
        cmd
    }

    fn json_path(&self, name: &str) -> PathBuf {
        self.work.join(format!("fio-{name}.json"))
    }

    /// Wait for fio (stopping it if we are interrupted); its JSON report.
    fn finish(&self, mut cmd: Command, name: &str) -> Result<String> {
        let log = self.work.join(format!("fio-{name}.err"));
        let err = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .context("starting fio")?;
        let limit = Duration::from_secs(u64::from(self.runtime) + 300);
        let status = wait_unless_interrupted(&mut child, limit)?;
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        if !status.success() {
            bail!("fio {name} failed with {status}: {}", stderr.trim());
        }
        let path = self.json_path(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Random 4 KiB overwrites inside the laid-out file, many in flight.
fn overwrites(cmd: &mut Command) {
    cmd.args([
        "--rw=randwrite",
        "--ioengine=libaio",
        "--iodepth=16",
        "--overwrite=1",
        "--time_based",
        "--norandommap",
        "--randrepeat=0",
    ])
    .arg(format!("--filename={OVERWRITE_FILE}"))
    .arg(format!("--size={OVERWRITE_SIZE}"));
}

/// Wait for fio, polling so that a SIGINT/SIGTERM to us (or a fio that
/// hangs past `limit`) stops it instead of leaving it on the mount.
fn wait_unless_interrupted(child: &mut Child, limit: Duration) -> Result<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = host::wait_for(child, Duration::from_millis(200))? {
            return Ok(status);
        }
        if host::interrupted() {
            host::signal(child, libc::SIGINT);
            stop(child, Duration::from_secs(10));
            bail!("interrupted by a signal");
        }
        if started.elapsed() > limit {
            stop(child, Duration::ZERO);
            bail!("fio still running {}s after it started; killed", limit.as_secs());
        }
    }
}

/// Give `child` `grace` to exit, then kill it; reaped either way.
fn stop(child: &mut Child, grace: Duration) {
    if matches!(host::wait_for(child, grace), Ok(Some(_))) {
        return;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sum of `jobs[].write.iops`; any job error fails the run. fio may put a
/// warning line before the JSON, so parsing starts at the first `{`.
pub fn total_write_iops(report: &str) -> Result<f64> {
    let start = report.find('{').context("no JSON object in fio's output")?;
    let v: Value = serde_json::from_str(&report[start..]).context("fio's output is not JSON")?;
    let jobs = v["jobs"].as_array().context("no \"jobs\" array")?;
    ensure!(!jobs.is_empty(), "fio reported no jobs");
    let mut total = 0.0;
    for job in jobs {
        let name = job["jobname"].as_str().unwrap_or("?");
        let error = job["error"].as_i64().unwrap_or(0);
        ensure!(error == 0, "fio job {name} ended with error {error}");
        total += job["write"]["iops"]
            .as_f64()
            .with_context(|| format!("fio job {name} has no write.iops"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iops_are_summed_over_jobs() {
        let report = r#"note: a warning first
{"jobs": [{"jobname": "c", "error": 0, "write": {"iops": 100.5}},
          {"jobname": "c", "error": 0, "write": {"iops": 99.5}}]}"#;
        assert_eq!(total_write_iops(report).unwrap(), 200.0);
    }

    #[test]
    fn a_job_error_fails_the_run() {
        let report = r#"{"jobs": [{"jobname": "a", "error": 28, "write": {"iops": 1.0}}]}"#;
        assert!(total_write_iops(report).is_err());
    }

    #[test]
    fn appends_cannot_run_out_of_size_first() {
        // 64 MiB/s is 16,384 appends/s of 4 KiB: far above this VM's rate.
        assert_eq!(append_bytes(10), 640 << 20);
        assert_eq!(append_bytes(1), 256 << 20);
    }
}
