//! Command-line types, raw. `plan.rs` validates them against the system.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use dio_trace_common::fs::Fs;

use crate::{layout::Layout, probes::select::Backend, report::Show, workload::Pattern};

/// `ext4`, `xfs`, `f2fs` or `btrfs`.
fn parse_fs(s: &str) -> Result<Fs, String> {
    Fs::from_name(s).ok_or_else(|| format!("{s:?}: dio-trace judges {}", Fs::ALL.map(Fs::name).join(", ")))
}

const EXAMPLES: &str = "\
Examples:
  dio-trace run -- ./my-db-bench            trace a command and its children
  dio-trace run --json -- fio job.fio       NDJSON for scripts (the command's stdout goes to stderr)
  dio-trace watch --path /srv/db            the whole host, writes under /srv/db only, until Ctrl-C
  dio-trace watch --duration 60s --comm postgres
  dio-trace verify                          drive known write patterns on a scratch ext4 image
  dio-trace verify --fs xfs                 the same on a scratch XFS image
  dio-trace info                            what this kernel offers each probe
  dio-trace check t.dtr --perfetto t.pftrace  every write on a timeline (ui.perfetto.dev)

Exit status: 0 all counted writes ordered, 1 violation, 2 usage error,
3 inconclusive (stderr says why), 4 cannot trace here (stderr says the fix).";

/// `--version`: the crate version, the commit it was built from and the
/// BPF object it embeds (both from build.rs), for bug reports.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DIO_TRACE_COMMIT"),
    ", BPF object ",
    env!("DIO_TRACE_BPF"),
    ")"
);

/// Watch how the kernel completes direct-I/O writes and flag any sync that
/// runs before the file-size update of a size-extending write (the ext4
/// O_DIRECT|O_SYNC ordering bug of Linux 5.5..6.6).
#[derive(Debug, Parser)]
#[command(name = "dio-trace", version = VERSION, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace a command and its children, then judge their writes.
    Run(RunArgs),
    /// Trace the whole host until Ctrl-C, SIGTERM or --duration.
    Watch(WatchArgs),
    /// Trace known write patterns one by one and say PASS or FAIL for each.
    Verify(VerifyArgs),
    /// Trace like `run` (with a command) or `watch` (without), and write a
    /// trace file for `check`.
    Record(RecordArgs),
    /// Replay a trace file through the same analysis; exit status as for run.
    Check(CheckArgs),
    /// Show this kernel's facts and which mechanism would serve each probe.
    Info(InfoArgs),
    /// Drive one known write pattern (what `verify`, the demo and tests trace).
    Write(WriteArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// bash: `dio-trace completions bash > /etc/bash_completion.d/dio-trace`;
    /// the Debian package installs them for bash, zsh and fish.
    Completions(CompletionsArgs),
    /// Write the manual pages (dio-trace.1, dio-trace-<command>.1) into DIR
    /// (what `cargo xtask dist` packages).
    #[command(hide = true)]
    Man(ManArgs),
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Folder to write the pages into (made if missing).
    pub dir: PathBuf,
}

/// Options every tracing command shares.
#[derive(Debug, Args)]
pub struct TraceOpts {
    /// Only this process and the children it forks from now on (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only tasks with this command name (as in /proc/PID/comm, max 15 bytes).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Only this device: "major:minor" or a block device path like /dev/loop0.
    #[arg(long, value_name = "DEV")]
    pub dev: Option<String>,
    /// Only writes to this file or to files under this directory (on ext4, XFS, f2fs or btrfs).
    #[arg(long, value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Only tasks in this cgroup v2 or below it: one container or service
    /// (repeatable; filtered in the kernel). A directory under the cgroup2
    /// mount (/sys/fs/cgroup/system.slice/db.service) or a path as
    /// /proc/PID/cgroup shows it (/system.slice/db.service).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<PathBuf>,
    /// Force one mechanism for every probe instead of the best available.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
    /// Ring buffer size (power of two, e.g. 4M, 256K). Raise it if records are lost.
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_size)]
    pub ringbuf_size: u64,
    /// Print NDJSON (one object per line) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Which writes to print [default: all for run, problems for watch].
    #[arg(long, value_enum)]
    pub show: Option<Show>,
    /// Send every kernel event of a counted write (timestamp updates, sync
    /// exits, completion entries), not only those the verdict rests on.
    /// Richer timelines, more overhead.
    #[arg(long)]
    pub full_timeline: bool,
    /// Read kernel memory with bpf_probe_read_kernel only. By default
    /// tp_btf and fentry programs read through their BTF-typed arguments
    /// with plain loads, and dio-trace falls back to this by itself when the
    /// kernel's verifier refuses them.
    #[arg(long)]
    pub probe_reads: bool,
    /// Make the kernel programs say, on stderr, why each direct write they
    /// saw was not counted (not sync-flavoured, not extending, another
    /// filesystem, flags of an unknown layout). Off by default: off, the
    /// messages are not even in the loaded programs.
    #[arg(long)]
    pub debug: bool,
    /// A BTF file with a filesystem's types (ext4's or XFS's), for kernels
    /// where it is a module and the kernel publishes no module BTF (5.10
    /// generic kernels): make one with `pahole --btf_encode_detached=ext4.btf`
    /// from the debug package's ext4.ko (the reason its writes are not
    /// judged says how).
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,
    /// Capture the kernel stack at the size update and the sync of every
    /// counted write. Without it only writes that are not ordered carry
    /// stacks (the sync that came first, the size update that came late, a
    /// completion without a sync), and an ordered write costs nothing more.
    #[arg(long)]
    pub stacks: bool,
    #[command(flatten)]
    pub view: ViewOpts,
}

/// How reports show what the kernel sent (shared with `check`).
#[derive(Debug, Args)]
pub struct ViewOpts {
    /// Show kernel addresses (stack frames, callers) beside their names.
    /// Off by default: they reveal where the kernel is loaded (KASLR).
    #[arg(long)]
    pub raw_addresses: bool,
    /// Also write the writes as a Perfetto trace (open it in
    /// ui.perfetto.dev): one track per write under its process and thread,
    /// a slice from begin to completion, the size update and sync as
    /// instants, verdicts and stacks as arguments; search "VIOLATION".
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub opts: TraceOpts,
    /// The command to run and trace (put it after --).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub opts: TraceOpts,
    /// Stop after this long (e.g. 30s, 5m, 1h; plain numbers are seconds).
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Serve Prometheus metrics at http://ADDR/metrics while watching.
    /// Alone: 127.0.0.1:9436 (loopback). PORT or :PORT: loopback on that
    /// port; IP:PORT: that address (0.0.0.0:9436 for every interface).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9436",
          value_parser = crate::metrics::parse_addr)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Append the report to FILE instead of stdout; SIGHUP reopens it (for
    /// logrotate).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub opts: TraceOpts,
    /// Trace file to write (format: dio-trace/src/trace/mod.rs).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Without a command: stop after this long (else Ctrl-C or SIGTERM).
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// The command to run and trace (after --); none traces the whole host.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// What `check` passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExpectArg {
    /// Every counted write ordered (the default contract).
    Ordered,
    /// The trace shows the bug (regression suites of buggy kernels).
    Violation,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A trace file written by `dio-trace record`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Exit 0 when the trace shows this; 1 when it shows the other; 3 when
    /// it cannot tell.
    #[arg(long, value_enum)]
    pub expect: Option<ExpectArg>,
    /// Only writes to this file or under this directory.
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Print NDJSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write a JUnit XML report: one test case per counted write.
    #[arg(long, value_name = "OUT.xml")]
    pub junit: Option<PathBuf>,
    /// Which writes the text view prints.
    #[arg(long, value_enum, default_value_t = Show::All)]
    pub show: Show,
    #[command(flatten)]
    pub view: ViewOpts,
    /// Also draw the writes that are not ordered as an SVG timeline (open
    /// it in a browser): each step on a time axis, with its kernel stack.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Directory to write in (on ext4, XFS, f2fs or btrfs). Default: a
    /// scratch image of --fs on a loop device, made and removed by dio-trace.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
    /// Filesystem of the scratch image: ext4, xfs, f2fs or btrfs (mkfs
    /// from e2fsprogs, xfsprogs, f2fs-tools, btrfs-progs; btrfs is mounted
    /// nodatacow, so its direct writes stay direct, and its writes into
    /// fallocated space are skipped: btrfs does not show iomap new
    /// blocks). With --dir, the directory's own filesystem is used.
    #[arg(long, value_name = "FS", default_value = "ext4", value_parser = parse_fs, conflicts_with = "dir")]
    pub fs: Fs,
    /// Writes per pattern.
    #[arg(long, default_value_t = 8)]
    pub count: u32,
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
    /// Print NDJSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// A BTF file with ext4's types (see `run --help`).
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,
    /// Crash truth for every counted write: the scratch filesystem on a
    /// dm-log-writes device, replayed to the moment each write returned,
    /// mounted and read. Needs device mapper with the log-writes target
    /// (exit 4 without); exit 5 when a verdict and its crash disagree.
    #[arg(long, conflicts_with = "dir")]
    pub crash: bool,
    /// With --crash: start from the fresh, unmounted filesystem of --fs on
    /// this device or image (copied, never written) instead of running mkfs:
    /// for systems without mkfs, like the test guests.
    #[arg(long, value_name = "DEV", requires = "crash")]
    pub fresh_fs: Option<PathBuf>,
    /// With --crash: keep the dm-log-writes log (its entries only) in FILE,
    /// to replay again later (its marks are PATTERN/WRITER/INDEX).
    #[arg(long, value_name = "FILE", requires = "crash")]
    pub keep_log: Option<PathBuf>,
    /// With --crash: JUnit XML, one test case per counted write.
    #[arg(long, value_name = "FILE", requires = "crash")]
    pub junit: Option<PathBuf>,
    /// Where each pattern's file goes. On f2fs this picks the sync's path:
    /// `root` and `synced-dir` roll forward, `new-dir` takes a checkpoint at
    /// the first fsync, `hardlinked` (a second link to each file) at every
    /// fsync, and a checkpoint keeps only the size the inode had.
    #[arg(long, value_enum, default_value_t = Layout::Root)]
    pub layout: Layout,
    /// Only this pattern (repeatable; default: every one, in `dio-trace
    /// write --help`'s order).
    #[arg(long = "pattern", value_enum, value_name = "PATTERN")]
    pub patterns: Vec<Pattern>,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
    /// A BTF file with a filesystem's types (ext4's or XFS's), for kernels
    /// where it is a module and the kernel publishes no module BTF (5.10
    /// generic kernels): make one with `pahole --btf_encode_detached=ext4.btf`
    /// from the debug package's ext4.ko (the reason its writes are not
    /// judged says how).
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Which write pattern.
    #[arg(long, value_enum)]
    pub pattern: Pattern,
    /// How many writes.
    #[arg(long, default_value_t = 8)]
    pub count: u32,
    /// Bytes per write (a multiple of 4096 for direct I/O).
    #[arg(long, default_value = "4K", value_parser = parse_size)]
    pub size: u64,
    /// File to create (truncated if it exists).
    pub file: PathBuf,
    /// Send a dm-log-writes mark PATTERN/WRITER/INDEX to this device
    /// mapper device as each write returns (what `verify --crash` replays to).
    #[arg(long, value_name = "DM_NAME", hide = true)]
    pub mark_dm: Option<String>,
}

/// "4096", "4K", "1M", "2G" (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("unknown unit {c:?} in {s:?}: use K, M or G")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 4096, 256K or 4M"))?;
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

/// "30s", "5m", "1h", "250ms", or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 5m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use ms, s, m or h")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("{s:?} must be a positive duration"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_version_names_the_commit_and_the_bpf_object() {
        let err = Cli::try_parse_from(["dio-trace", "--version"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("dio-trace {} (commit ", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );
        assert!(
            text.contains(", BPF object crc32 ") && text.contains(" bytes)"),
            "{text}"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4m"), Ok(4 << 20));
        assert!(parse_size("4X").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap().as_secs(), 30);
        assert_eq!(parse_duration("2").unwrap().as_secs(), 2);
        assert_eq!(parse_duration("5m").unwrap().as_secs(), 300);
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn run_takes_the_command_after_dashes() {
        let cli = Cli::try_parse_from(["dio-trace", "run", "--json", "--", "sh", "-c", "true"]).unwrap();
        let Command::Run(r) = cli.command else { panic!() };
        assert!(r.opts.json);
        assert_eq!(r.command, ["sh", "-c", "true"]);
        assert!(Cli::try_parse_from(["dio-trace", "run"]).is_err());
    }
}
