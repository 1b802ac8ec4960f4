//! Raw options to a validated plan, checked against the system: a bad
//! value is a usage error (exit 2), a path on an unsupported filesystem
//! cannot be traced (exit 4).

use std::{
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use dio_trace_common::config::{
    CONFIG_COUNT_ORDERED, CONFIG_DEBUG, CONFIG_FULL_TIMELINE, CONFIG_PROBE_READS, CONFIG_STACKS, Filter,
};

use crate::{
    cli::TraceOpts,
    error::{EnvError, UsageError},
    kernel::{cgroups, kernel_dev, kernel_dev_from_st, mounts},
    probes::select::Backend,
    report::Show,
};

use dio_trace_common::fs::Fs;

#[derive(Clone, Debug)]
pub struct Plan {
    pub filter: Filter,
    /// `--cgroup` directories: their ids go into the kernel's `CGROUPS` map.
    pub cgroups: Vec<cgroups::Kept>,
    pub follow_pids: Vec<u32>,
    pub path_prefix: Option<String>,
    pub backend: Backend,
    pub ringbuf_bytes: u32,
    pub json: bool,
    pub show: Show,
    /// `CONFIG_*` bits for the kernel programs.
    pub config_flags: u32,
    /// `--btf`: ext4's types from a file.
    pub btf: Option<PathBuf>,
    /// `--raw-addresses`: kernel addresses may be shown.
    pub raw_addresses: bool,
    /// `--perfetto`: also write a Perfetto trace here.
    pub perfetto: Option<PathBuf>,
}

impl Plan {
    /// A plan from the user's own arguments: as [`Plan::new`], and a
    /// `--path` that does not exist is a usage error at once, before
    /// anything is loaded (a typo would otherwise trace for its whole
    /// duration and find nothing). `verify` plans files it is about to
    /// create, so it calls [`Plan::new`].
    pub fn from_args(opts: &TraceOpts, default_show: Show, spawns: bool) -> anyhow::Result<Self> {
        if let Some(p) = &opts.path
            && std::fs::symlink_metadata(p).is_err()
        {
            return Err(UsageError(format!(
                "--path {}: no such file or directory (to trace a file a command will create, give its directory)",
                p.display()
            ))
            .into());
        }
        Self::new(opts, default_show, spawns)
    }

    /// `spawns`: the run starts a command, whose pid is followed.
    pub fn new(opts: &TraceOpts, default_show: Show, spawns: bool) -> anyhow::Result<Self> {
        let mut filter = Filter::default();
        for &pid in &opts.pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(UsageError(format!("--pid {pid}: no such process")).into());
            }
        }
        filter.follow = u32::from(spawns || !opts.pid.is_empty());
        if let Some(comm) = &opts.comm {
            let b = comm.as_bytes();
            if b.is_empty() || b.len() > 15 {
                return Err(UsageError(format!("--comm {comm:?}: a command name has 1 to 15 bytes")).into());
            }
            filter.comm[..b.len()].copy_from_slice(b);
            filter.comm_len = b.len() as u32 + 1; // compare the NUL too: exact match
        }
        if let Some(dev) = &opts.dev {
            filter.dev = parse_dev(dev)?;
        }
        let cgroups = kept_cgroups(&opts.cgroup)?;
        filter.cgroup_levels = cgroups.iter().fold(0, |m, c| m | 1 << c.level);
        let path_prefix = match &opts.path {
            Some(p) => {
                let (abs, dev, _) = check_path(p)?;
                if filter.dev != 0 && filter.dev != dev {
                    return Err(UsageError(format!(
                        "--path {} is not on --dev {}",
                        p.display(),
                        opts.dev.as_deref().unwrap_or("")
                    ))
                    .into());
                }
                filter.dev = dev;
                Some(abs)
            }
            None => None,
        };
        let show = opts.show.unwrap_or(default_show);
        // Nobody asked to see an ordered write: the kernel counts them.
        // Everything that shows or keeps each write (the ordered ones too,
        // a timeline, stacks, Perfetto) and `--path`, which only user space
        // can apply, needs them sent.
        let count_ordered = show == Show::Problems
            && !opts.full_timeline
            && !opts.stacks
            && opts.view.perfetto.is_none()
            && path_prefix.is_none();
        Ok(Self {
            filter,
            cgroups,
            follow_pids: opts.pid.clone(),
            path_prefix,
            backend: opts.backend,
            ringbuf_bytes: ringbuf_bytes(opts.ringbuf_size)?,
            json: opts.json,
            show,
            config_flags: flag(opts.full_timeline, CONFIG_FULL_TIMELINE)
                | flag(opts.probe_reads, CONFIG_PROBE_READS)
                | flag(opts.debug, CONFIG_DEBUG)
                | flag(opts.stacks, CONFIG_STACKS)
                | flag(count_ordered, CONFIG_COUNT_ORDERED),
            btf: opts.btf.clone(),
            raw_addresses: opts.view.raw_addresses,
            perfetto: opts.view.perfetto.clone(),
        })
    }

    /// Ordered writes are counted in the kernel, not sent (`CONFIG_COUNT_ORDERED`).
    pub fn counts_ordered(&self) -> bool {
        self.config_flags & CONFIG_COUNT_ORDERED != 0
    }

    /// Every write sent, whatever is shown: for a recording, which keeps
    /// each one.
    pub fn sending_every_write(mut self) -> Self {
        self.config_flags &= !CONFIG_COUNT_ORDERED;
        self
    }

    pub fn follows(&self) -> bool {
        self.filter.follow != 0
    }
}

/// `--cgroup` arguments to the directories they name (none: no filter).
fn kept_cgroups(args: &[PathBuf]) -> Result<Vec<cgroups::Kept>, UsageError> {
    if args.is_empty() {
        return Ok(Vec::new());
    }
    if args.len() > MAX_CGROUPS {
        return Err(UsageError(format!(
            "--cgroup given {} times; dio-trace keeps at most {MAX_CGROUPS} cgroups (give a common parent instead)",
            args.len()
        )));
    }
    let root = cgroups::root()?;
    args.iter().map(|a| cgroups::resolve(&root, a)).collect()
}

/// Entries of the kernel's `CGROUPS` map (`dio-trace-ebpf/src/maps.rs`).
pub const MAX_CGROUPS: usize = 64;

fn flag(on: bool, bit: u32) -> u32 {
    if on { bit } else { 0 }
}

/// "7:0" or a block device node.
pub fn parse_dev(s: &str) -> Result<u32, UsageError> {
    if let Some((a, b)) = s.split_once(':')
        && let (Ok(major), Ok(minor)) = (a.parse::<u32>(), b.parse::<u32>())
    {
        return Ok(kernel_dev(major, minor));
    }
    match std::fs::metadata(s) {
        Ok(m) if m.file_type().is_block_device() => Ok(kernel_dev_from_st(m.rdev())),
        Ok(_) => Err(UsageError(format!(
            "--dev {s}: not a block device; give major:minor (see lsblk) or /dev/NAME"
        ))),
        Err(e) => Err(UsageError(format!(
            "--dev {s}: {e}; give major:minor (see lsblk) or /dev/NAME"
        ))),
    }
}

/// Absolute form of `p` (which may not exist yet), the device under it and
/// its filesystem; refuses filesystems dio-trace cannot judge.
pub fn check_path(p: &Path) -> anyhow::Result<(String, u32, Fs)> {
    let abs = absolute(p)?;
    let table = mounts::MountTable::load()?;
    let (dev, fstype) =
        mounts::device_of(&abs, &table).map_err(|e| UsageError(format!("--path {}: {e:#}", p.display())))?;
    let Some(fs) = Fs::from_name(&fstype) else {
        return Err(EnvError(format!(
            "{} is on {fstype}, not a supported filesystem (supported: {}); trace a path on one of them",
            p.display(),
            Fs::ALL.map(Fs::name).join(", ")
        ))
        .into());
    };
    Ok((abs.display().to_string(), dev, fs))
}

/// Canonical path of `p`, or of its parent joined with its name when `p`
/// does not exist yet.
fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Ok(c);
    }
    let parent = match p.parent() {
        Some(x) if !x.as_os_str().is_empty() => x.to_path_buf(),
        _ => std::env::current_dir()?,
    };
    let name = p
        .file_name()
        .ok_or_else(|| UsageError(format!("--path {}: not a file or directory name", p.display())))?;
    let parent = parent
        .canonicalize()
        .map_err(|e| UsageError(format!("--path {}: {e}", p.display())))?;
    Ok(parent.join(name))
}

fn ringbuf_bytes(n: u64) -> Result<u32, UsageError> {
    if !n.is_power_of_two() || !(4096..=(1 << 30)).contains(&n) {
        return Err(UsageError(format!(
            "--ringbuf-size {n}: must be a power of two from 4K to 1G (e.g. 4M)"
        )));
    }
    Ok(n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!(parse_dev("7:0").unwrap(), 7 << 20);
        assert!(parse_dev("/etc/passwd").is_err());
        assert!(parse_dev("seven").is_err());
    }

    #[test]
    fn ringbuf_sizes_are_checked() {
        assert_eq!(ringbuf_bytes(4 << 20).unwrap(), 4 << 20);
        assert!(ringbuf_bytes(3000).is_err());
        assert!(ringbuf_bytes(1024).is_err());
    }

    /// Ordered writes are counted in the kernel only where no one asked to
    /// see or keep each write (issue 21).
    #[test]
    fn ordered_writes_are_counted_only_where_nothing_shows_them() {
        use crate::cli::{Cli, Command};
        use clap::Parser as _;
        let watch = |args: &[&str]| {
            let cli = Cli::try_parse_from(["dio-trace", "watch"].iter().chain(args)).unwrap();
            let Command::Watch(w) = cli.command else { panic!() };
            Plan::new(&w.opts, Show::Problems, false).unwrap()
        };
        assert!(watch(&[]).counts_ordered());
        assert!(watch(&["--json"]).counts_ordered());
        assert!(watch(&["--show", "problems", "--debug"]).counts_ordered());
        for sends in [
            &["--show", "all"][..],
            &["--stacks"],
            &["--full-timeline"],
            &["--perfetto", "/tmp/x.pftrace"],
            &["--path", "/"],
        ] {
            assert!(!watch(sends).counts_ordered(), "{sends:?}");
        }
        assert!(
            !watch(&[]).sending_every_write().counts_ordered(),
            "a recording keeps every write"
        );
        let cli = Cli::try_parse_from(["dio-trace", "run", "--", "true"]).unwrap();
        let Command::Run(r) = cli.command else { panic!() };
        assert!(
            !Plan::new(&r.opts, Show::All, true).unwrap().counts_ordered(),
            "run shows all"
        );
    }

    #[test]
    fn paths_on_unsupported_filesystems_are_refused() {
        // /proc is never ext4.
        let err = check_path(Path::new("/proc/self/status")).unwrap_err();
        assert!(err.downcast_ref::<EnvError>().is_some(), "{err:#}");
        assert!(format!("{err:#}").contains("not a supported filesystem"));
    }
}
