//! The guest's scratch disk: a raw file with an ext4 filesystem made on
//! the host, attached as virtio-blk (`/dev/vda`). It lives in a temporary
//! directory for as long as the value does, so one `Disk` can serve two
//! boots (write and crash, then remount and inspect).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};
use tempfile::TempDir;

use crate::kernel::host::{self, ensure_packages};

pub struct Disk {
    _dir: TempDir,
    path: PathBuf,
}

impl Disk {
    /// A new `size_mib` MiB disk holding an empty ext4 filesystem with
    /// 4 KiB blocks (mke2fs would pick 1 KiB for small disks, which
    /// changes the direct-I/O alignment rules).
    pub fn ext4(size_mib: u64) -> Result<Self> {
        ensure_packages(&["e2fsprogs"])?;
        let dir = tempfile::tempdir().context("creating a directory for the scratch disk")?;
        let path = dir.path().join("disk.img");
        let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        file.set_len(size_mib << 20)
            .with_context(|| format!("sizing {}", path.display()))?;
        drop(file);
        host::output(
            Command::new("mkfs.ext4")
                .args(["-F", "-q", "-b", "4096", "-L", "dio-trace"])
                .arg(&path),
        )?;
        Ok(Self { _dir: dir, path })
    }

    /// The raw image file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
