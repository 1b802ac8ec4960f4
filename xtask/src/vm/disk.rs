//! The guest's scratch disk: a raw file with a filesystem (ext4, XFS or
//! f2fs) made on the host, attached as virtio-blk (`/dev/vda`). It lives in a temporary
//! directory for as long as the value does, so one `Disk` can serve two
//! boots (write and crash, then remount and inspect).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};
use tempfile::TempDir;

use crate::kernel::host::{self, ensure_packages};

/// The filesystems a scratch disk can hold, as `mount -t` names them.
pub const FILESYSTEMS: [&str; 4] = ["ext4", "xfs", "f2fs", "btrfs"];

/// The `'static` name of filesystem `fs`, if a disk can hold it.
pub fn fs_named(fs: &str) -> Option<&'static str> {
    FILESYSTEMS.into_iter().find(|f| *f == fs)
}

/// `mount`'s type and options for a scratch `fs` in the guests: what
/// dio-trace's own scratch filesystems use (`Fs::direct_mount_opt`: btrfs
/// `nodatacow`, so its direct writes stay direct).
pub fn mount_args(fs: &str) -> String {
    match dio_trace_common::fs::Fs::from_name(fs).and_then(|f| f.direct_mount_opt()) {
        Some(o) => format!("-t {fs} -o {o}"),
        None => format!("-t {fs}"),
    }
}

pub struct Disk {
    _dir: TempDir,
    path: PathBuf,
    fs: &'static str,
}

impl Disk {
    /// A new `size_mib` MiB disk holding an empty ext4 filesystem with
    /// 4 KiB blocks (mke2fs would pick 1 KiB for small disks, which
    /// changes the direct-I/O alignment rules).
    pub fn ext4(size_mib: u64) -> Result<Self> {
        Self::of("ext4", size_mib)
    }

    /// A new disk holding an empty `fs` (one of [`FILESYSTEMS`]), at
    /// least as big as that filesystem's tools accept.
    pub fn of(fs: &'static str, size_mib: u64) -> Result<Self> {
        let (package, tool, args, min_mib): (&str, &str, &[&str], u64) = match fs {
            "ext4" => (
                "e2fsprogs",
                "mkfs.ext4",
                &["-F", "-q", "-b", "4096", "-L", "dio-trace"],
                0,
            ),
            // xfsprogs refuses filesystems under 300 MiB.
            "xfs" => ("xfsprogs", "mkfs.xfs", &["-f", "-q", "-L", "dio-trace"], 320),
            "f2fs" => ("f2fs-tools", "mkfs.f2fs", &["-f", "-q", "-l", "dio-trace"], 0),
            // mkfs.btrfs refuses filesystems under 109 MiB.
            "btrfs" => ("btrfs-progs", "mkfs.btrfs", &["-f", "-q", "-L", "dio-trace"], 128),
            other => anyhow::bail!(
                "no scratch disk for filesystem {other:?} ({})",
                FILESYSTEMS.join(", ")
            ),
        };
        let size_mib = size_mib.max(min_mib);
        ensure_packages(&[package])?;
        let dir = tempfile::tempdir().context("creating a directory for the scratch disk")?;
        let path = dir.path().join("disk.img");
        let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        file.set_len(size_mib << 20)
            .with_context(|| format!("sizing {}", path.display()))?;
        drop(file);
        host::output(Command::new(tool).args(args).arg(&path))?;
        Ok(Self { _dir: dir, path, fs })
    }

    /// Its filesystem, as `mount -t` takes it.
    pub fn fs(&self) -> &'static str {
        self.fs
    }

    /// The raw image file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
