//! `cargo xtask vm ...` subcommands.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use super::crash_probe::verdict;
use super::{ConsoleMode, Disk, DiskBus, Guest, VmOptions, boot, crash, crash_probe, disk, matrix, traced};
use crate::initramfs::GuestFile;
use crate::kernel::{self, Cache, KernelSpec};

#[derive(Args)]
pub struct VmArgs {
    #[command(subcommand)]
    command: VmCommand,
}

#[derive(Subcommand)]
enum VmCommand {
    /// Boot a kernel and run dio-trace in it (static build, scratch ext4 on
    /// /mnt as the working directory); exits with dio-trace's status.
    /// Example: cargo xtask vm run --kernel buggy-6.1 -- verify
    Run(DioArgs),
    /// Boot a kernel and run `dio-trace verify --dir /mnt` in it.
    Verify(VerifyArgs),
    /// The kernel matrix: every kernel x backend x sync flavour, asserted.
    Matrix(MatrixArgs),
    /// XFS, f2fs and btrfs on the Debian kernels that ship them, asserted
    /// (`--crash`: also their crash ground truth).
    Filesystems {
        #[arg(long)]
        crash: bool,
        /// Only the cells of this named kernel (repeatable; default: all).
        #[arg(long = "kernel")]
        kernels: Vec<String>,
        /// Only the cells of this filesystem (repeatable; default: all).
        #[arg(long = "fs", value_parser = disk::FILESYSTEMS)]
        fs: Vec<String>,
        /// Skip the traced cells: only the crash cells (with --crash).
        #[arg(long)]
        crash_only: bool,
    },
    /// dio-trace's verdict against what survives a crash, per pattern (O_SYNC
    /// and O_DSYNC appends, O_DSYNC into fallocated space): size kept, size
    /// lost, data lost or file lost; the last line is `verdict=.. crash=..`;
    /// exits 0 when they agree.
    Crash(CrashArgs),
    /// Boot a kernel and run a shell command in the guest; exits with the
    /// command's status.
    Shell(RunArgs),
    /// Record the replay tests' trace fixtures on the buggy and fixed kernels.
    Fixtures(FixturesArgs),
    /// Append 4 KiB twice with O_DIRECT|O_SYNC, crash, reboot on the same
    /// disk and print the surviving size (fixed: 8192, buggy: 4096).
    CrashProbe(CrashProbeArgs),
}

#[derive(Debug, Args)]
pub struct FixturesArgs {
    /// Record only this fixture (KERNEL-BACKEND, e.g. debian-5.10-fentry);
    /// repeat for more. Default: all of them.
    #[arg(long, value_name = "FIXTURE")]
    pub only: Vec<String>,
}

/// Options every boot takes.
#[derive(Args)]
struct BootArgs {
    #[arg(long, help = crate::kernel::spec_help())]
    kernel: KernelSpec,
    /// Seconds before the guest is killed (per boot).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Show the console only if the boot fails.
    #[arg(long)]
    quiet: bool,
    /// Extra kernel command-line word (repeatable).
    #[arg(long = "append", value_name = "WORD")]
    append: Vec<String>,
    /// How the scratch disk is attached: virtio-blk (write cache, no FUA)
    /// or NVMe (write cache with FUA, where an O_DSYNC overwrite may
    /// rightly skip its sync). The guest prints its queue's fua and
    /// write_cache as `@@DISK`.
    #[arg(long = "disk-bus", value_enum, default_value_t = DiskBus::Virtio)]
    disk_bus: DiskBus,
}

impl BootArgs {
    fn options(&self) -> VmOptions {
        VmOptions {
            timeout: Duration::from_secs(self.timeout),
            console: if self.quiet {
                ConsoleMode::Quiet
            } else {
                ConsoleMode::Stream
            },
            append: self.append.clone(),
            disk_bus: self.disk_bus,
            ..VmOptions::default()
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    boot: BootArgs,
    /// Static binary to copy into the guest's /bin (repeatable).
    #[arg(long = "binary", value_name = "HOST_PATH")]
    binaries: Vec<PathBuf>,
    /// Attach a fresh 128 MiB ext4 scratch disk, mounted on /mnt.
    #[arg(long)]
    disk: bool,
    /// The scratch disk's filesystem instead of ext4: xfs, f2fs or btrfs
    /// (mounted nodatacow, so its direct writes stay direct).
    #[arg(long, value_name = "FS", requires = "disk", value_parser = disk::FILESYSTEMS)]
    disk_fs: Option<String>,
    /// Shell command run in the guest (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Args)]
struct DioArgs {
    #[command(flatten)]
    boot: BootArgs,
    /// dio-trace's arguments (after `--`).
    #[arg(last = true, required = true, value_name = "DIO_TRACE_ARGS")]
    args: Vec<String>,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    boot: BootArgs,
    /// Writes per pattern.
    #[arg(long, default_value_t = 4)]
    count: u32,
    /// Per-write crash truth in the same boot (`dio-trace verify --crash`:
    /// dm-log-writes, replayed to each write's return), then the sysrq
    /// crash check (`vm crash`).
    #[arg(long)]
    crash: bool,
    /// With --crash: the scratch disk's filesystem. On f2fs every pattern
    /// runs in each layout that picks a sync path (a second hard link, a
    /// new directory, the root), one after another in the same boot.
    #[arg(long, default_value = "ext4", value_parser = disk::FILESYSTEMS, requires = "crash")]
    fs: String,
}

#[derive(Args)]
struct MatrixArgs {
    /// Kernels to run (repeatable; default: every named kernel).
    #[arg(long = "kernel")]
    kernels: Vec<KernelSpec>,
}

#[derive(Args)]
struct CrashArgs {
    #[command(flatten)]
    boot: BootArgs,
    /// Filesystem of the scratch disk: ext4, xfs, f2fs or btrfs (f2fs
    /// needs a generic kernel: Debian's cloud kernels do not build it).
    #[arg(long, default_value = "ext4", value_parser = disk::FILESYSTEMS)]
    fs: String,
    /// Give the file a second hard link first (every f2fs fsync then takes
    /// a checkpoint instead of writing node pages for roll-forward).
    #[arg(long)]
    hardlink: bool,
    /// Make the file in a new directory (`new`: on f2fs its first fsync
    /// takes a checkpoint, and one write is made) or in a directory made
    /// and synced first (`synced`: roll-forward).
    #[arg(long, default_value = "root", value_parser = ["root", "new", "synced"])]
    dir: String,
}

impl CrashArgs {
    fn setup(&self) -> crash::Setup {
        crash::Setup {
            fs: disk::fs_named(&self.fs).unwrap_or("ext4"),
            hardlink: self.hardlink,
            parent: match self.dir.as_str() {
                "new" => crash::Parent::New,
                "synced" => crash::Parent::Synced,
                _ => crash::Parent::Root,
            },
        }
    }
}

#[derive(Args)]
struct CrashProbeArgs {
    #[command(flatten)]
    boot: BootArgs,
    /// Fail unless this many bytes survive (8192 fixed, 4096 buggy).
    #[arg(long, value_name = "BYTES")]
    expect: Option<u64>,
}

/// Entry point of `cargo xtask vm`.
pub fn run(args: VmArgs) -> Result<()> {
    match args.command {
        VmCommand::Run(a) => vm_dio(a),
        VmCommand::Filesystems {
            crash,
            kernels,
            fs,
            crash_only,
        } => {
            for k in &kernels {
                if crate::kernel::named::find(k).is_none() {
                    anyhow::bail!(
                        "--kernel {k}: not a named kernel ({})",
                        crate::kernel::named::names()
                    );
                }
            }
            let mut score = matrix::Score::default();
            let pick = super::fs_cells::Pick {
                kernels: &kernels,
                fs: &fs,
            };
            if !crash_only {
                super::fs_cells::run(&matrix::quiet_options(), &pick, &mut score)?;
            }
            if crash {
                super::fs_cells::crash(&matrix::quiet_options(), &pick, &mut score)?;
            }
            println!("vm: {} passed, {} failed", score.passed, score.failed);
            if score.failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        VmCommand::Verify(a) => vm_verify(a),
        VmCommand::Matrix(a) => vm_matrix(a),
        VmCommand::Crash(a) => vm_crash(a),
        VmCommand::Shell(a) => vm_run(a),
        VmCommand::Fixtures(a) => super::fixtures::run(&a.only, &matrix::quiet_options()),
        VmCommand::CrashProbe(a) => vm_crash_probe(a),
    }
}

/// dio-trace's status, or the guest's failure.
fn dio_in_guest(boot_args: &BootArgs, args: &[String]) -> Result<i32> {
    let dio = traced::dio_trace_file()?;
    let cache = Cache::from_env()?;
    let kernel = kernel::resolve(&boot_args.kernel, &cache)?;
    let outcome = traced::run_dio_trace(&kernel, &dio, args, &boot_args.options())?;
    let code = outcome.exit_code()?;
    if boot_args.quiet {
        println!("{}", outcome.script_output());
    }
    Ok(code)
}

fn vm_dio(args: DioArgs) -> Result<()> {
    std::process::exit(dio_in_guest(&args.boot, &args.args)?)
}

fn vm_verify(args: VerifyArgs) -> Result<()> {
    let verify = [
        "verify".to_owned(),
        "--dir".into(),
        "/mnt".into(),
        "--count".into(),
        args.count.to_string(),
    ];
    let code = if args.crash {
        // Per-write crash truth (dm-log-writes) in the same boot as verify.
        let dio = traced::dio_trace_file()?;
        let kernel = kernel::resolve(&args.boot.kernel, &Cache::from_env()?)?;
        let fs = disk::fs_named(&args.fs).expect("clap checked it");
        let layouts: &[&str] = if fs == "f2fs" {
            &["hardlinked", "new-dir", "root"]
        } else {
            &["root"]
        };
        let mut script = String::new();
        for layout in layouts {
            script += &format!(
                "{}--fs {fs} --layout {layout}\necho \"@@VEXIT {layout} $?\"\n",
                super::crash_truth::verify_line(&traced::btf_arg(&kernel), args.count)
            );
        }
        let outcome = traced::boot_with_dio_on(fs, &kernel, &dio, &script, &args.boot.options())?;
        if args.boot.quiet {
            println!("{}", outcome.script_output());
        }
        outcome.exit_code()?;
        // The script's own status is the sed-free echo's: read verify's,
        // the worst of the layouts' (a disagreement first).
        let codes: Vec<i32> = layouts
            .iter()
            .map(|l| {
                outcome
                    .console
                    .lines()
                    .find_map(|line| line.split(&format!("@@VEXIT {l} ")).nth(1)?.trim().parse().ok())
                    .unwrap_or(4)
            })
            .collect();
        [5, 4, 2, 1, 3]
            .into_iter()
            .find(|c| codes.contains(c))
            .unwrap_or(0)
    } else {
        dio_in_guest(&args.boot, &verify)?
    };
    if args.crash {
        vm_crash(CrashArgs {
            boot: args.boot,
            fs: args.fs,
            hardlink: false,
            dir: "root".into(),
        })?;
    }
    std::process::exit(code)
}

fn vm_matrix(args: MatrixArgs) -> Result<()> {
    let kernels = if args.kernels.is_empty() {
        matrix::kernels()
    } else {
        args.kernels
    };
    let opts = matrix::quiet_options();
    let mut score = matrix::run(&kernels, &opts)?;
    super::verify::run(&kernels, &opts, &mut score)?;
    println!("matrix: {} passed, {} failed", score.passed, score.failed);
    if score.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn vm_crash(args: CrashArgs) -> Result<()> {
    let dio = traced::dio_trace_file()?;
    let cache = Cache::from_env()?;
    let kernel = kernel::resolve(&args.boot.kernel, &cache)?;
    let setup = args.setup();
    let results = crash::run(&kernel, &dio, &args.boot.options(), setup)?;
    for r in &results {
        let cp = r
            .cp_reason
            .map(|c| format!(", sync cp_reason={c}"))
            .unwrap_or_default();
        let why = r.disagreement().map(|w| format!(": {w}")).unwrap_or_default();
        println!(
            "{} {} {}: dio-trace said {}; after the crash: {} ({}){cp}{why}",
            args.boot.kernel,
            setup.label(),
            r.pattern,
            r.verdict,
            r.left(),
            r.crash()
        );
    }
    println!("{}", crash::final_line(&results));
    if results.iter().all(crash::CrashResult::agrees) {
        Ok(())
    } else {
        std::process::exit(1)
    }
}

fn vm_run(args: RunArgs) -> Result<()> {
    // Check the binaries first: resolving the kernel may build one.
    let mut files = args
        .binaries
        .iter()
        .map(GuestFile::in_bin)
        .collect::<Result<Vec<_>>>()?;
    // `dio-trace verify --crash` makes its own scratch ext4.
    files.extend(crate::initramfs::host_mkfs_ext4()?);
    let cache = Cache::from_env()?;
    let kernel = kernel::resolve(&args.boot.kernel, &cache)?;
    let fs = args.disk_fs.as_deref().and_then(disk::fs_named).unwrap_or("ext4");
    let disk = if args.disk { Some(Disk::of(fs, 128)?) } else { None };
    let script = format!("{}\n", args.command.join(" "));
    let outcome = boot(
        &Guest {
            kernel: &kernel,
            files: &files,
            script: &script,
            disk: disk.as_ref(),
        },
        &args.boot.options(),
    )?;
    let code = outcome.exit_code()?;
    if args.boot.quiet {
        println!("{}", outcome.script_output());
    }
    match code {
        0 => Ok(()),
        code => std::process::exit(code),
    }
}

fn vm_crash_probe(args: CrashProbeArgs) -> Result<()> {
    let cache = Cache::from_env()?;
    let kernel = kernel::resolve(&args.boot.kernel, &cache)?;
    let size = crash_probe(&kernel, &cache, &args.boot.options())?;
    println!(
        "crash-probe: {}: {size} bytes survived; {}",
        args.boot.kernel,
        verdict(size)
    );
    match args.expect {
        Some(want) if want != size => bail!("expected {want} bytes to survive, found {size}"),
        _ => Ok(()),
    }
}
