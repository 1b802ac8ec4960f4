//! A scratch ext4 on a loop device, gone again however the benchmark ends.
//!
//! The image is a sparse file in a temporary directory (on the host's own
//! filesystem, so every flush of the loop device becomes an fsync of that
//! file). The guard is built before the first step and each step records
//! what it did, so a failure half-way undoes exactly what was done.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use tempfile::TempDir;

use super::host::sh;

pub struct ScratchFs {
    image: PathBuf,
    mount: PathBuf,
    /// `/dev/loopN` once attached.
    device: Option<String>,
    mounted: bool,
    root: PathBuf,
    /// Removed (image included) once `drop` has unmounted; kept if it could not.
    dir: Option<TempDir>,
}

impl ScratchFs {
    pub fn create(image_bytes: u64) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("dio-bench-")
            .tempdir()
            .context("creating a temporary directory")?;
        let mut fs = Self {
            image: dir.path().join("ext4.img"),
            mount: dir.path().join("mnt"),
            device: None,
            mounted: false,
            root: dir.path().to_path_buf(),
            dir: Some(dir),
        };
        fs.make_image(image_bytes)?;
        fs.attach()?;
        sh(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "nodiscard"])
            .arg(fs.device()))?;
        std::fs::create_dir(&fs.mount).with_context(|| format!("creating {}", fs.mount.display()))?;
        // noinit_itable: no ext4lazyinit thread zeroing inode tables in the
        // background of the first runs (it made them several times slower).
        sh(Command::new("mount")
            .args(["-o", "noinit_itable"])
            .arg(fs.device())
            .arg(&fs.mount))?;
        fs.mounted = true;
        Ok(fs)
    }

    fn make_image(&self, bytes: u64) -> Result<()> {
        let file = File::create(&self.image).with_context(|| format!("creating {}", self.image.display()))?;
        file.set_len(bytes)
            .with_context(|| format!("sizing {} to {bytes} bytes", self.image.display()))
    }

    fn attach(&mut self) -> Result<()> {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&self.image)
            .output()
            .context("running losetup --find --show")?;
        if !out.status.success() {
            bail!(
                "losetup --find --show {} failed: {}",
                self.image.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !device.starts_with("/dev/loop") {
            bail!("losetup printed {device:?}, not a loop device");
        }
        self.device = Some(device);
        Ok(())
    }

    pub fn device(&self) -> &str {
        self.device.as_deref().unwrap_or("<no loop device>")
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// Beside the mount, not on it: fio's JSON and the tracers' logs.
    pub fn work_dir(&self) -> &Path {
        &self.root
    }

    fn unmount(&mut self) {
        if !self.mounted {
            return;
        }
        if quiet(Command::new("umount").arg(&self.mount)) {
            self.mounted = false;
            return;
        }
        // Something still holds it (a fio we could not stop): detach it
        // from the tree now, the kernel finishes when the holder goes.
        eprintln!("bench: umount {} failed; unmounting lazily", self.mount.display());
        self.mounted = !quiet(Command::new("umount").arg("-l").arg(&self.mount));
    }

    fn detach(&mut self) {
        let Some(device) = self.device.take() else { return };
        if !quiet(Command::new("losetup").arg("-d").arg(&device)) {
            eprintln!("bench: losetup -d {device} failed; detach it by hand");
        }
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        self.unmount();
        if self.mounted {
            eprintln!(
                "bench: {} is still mounted; leaving {} and {} in place",
                self.mount.display(),
                self.device(),
                self.root.display()
            );
            // Removing the directory would descend into the mounted tree.
            if let Some(dir) = self.dir.take() {
                let _kept = dir.keep();
            }
            return;
        }
        self.detach();
    }
}

/// Run a cleanup command; true on success. Errors are reported by callers.
fn quiet(cmd: &mut Command) -> bool {
    cmd.status().map(|s| s.success()).unwrap_or(false)
}
