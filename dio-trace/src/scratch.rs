//! A throw-away filesystem (ext4, XFS, f2fs or btrfs) on a loop device, for
//! `verify`, the demo and the live tests. Dropping it unmounts and
//! detaches everything.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use dio_trace_common::fs::Fs;

use crate::error::EnvError;

pub struct Scratch {
    root: PathBuf,
    mount: PathBuf,
    loopdev: Option<String>,
    mounted: bool,
}

/// How to make a filesystem on a device, and the Debian package with the tool.
pub(crate) fn mkfs(fs: Fs) -> (&'static str, &'static [&'static str], &'static str) {
    match fs {
        Fs::Ext4 => ("mkfs.ext4", &["-q", "-F", "-E", "nodiscard"], "e2fsprogs"),
        Fs::Xfs => ("mkfs.xfs", &["-q", "-f", "-K"], "xfsprogs"),
        Fs::F2fs => ("mkfs.f2fs", &["-q", "-f"], "f2fs-tools"),
        Fs::Btrfs => ("mkfs.btrfs", &["-q", "-f"], "btrfs-progs"),
    }
}

/// What to pass to `mount -o`: ext4's periodic journal commit pushed past
/// any run, so only the writes' own syncs commit (as in `vm crash`); XFS
/// refuses a second mount of one UUID, which replays of one image are;
/// btrfs writes every new file copy-on-write and checksummed unless told
/// `nodatacow`, and since 6.12 it writes direct writes to checksummed
/// files through the page cache: no direct write to judge.
pub(crate) fn mount_opts(fs: Fs, replay: bool) -> Option<&'static str> {
    match fs {
        Fs::Ext4 => Some("commit=60"),
        Fs::Xfs if replay => Some("nouuid"),
        _ => fs.direct_mount_opt(),
    }
}

/// The smallest image each filesystem's tools accept, rounded up (XFS
/// refuses filesystems under 300 MiB since xfsprogs 5.19, btrfs-progs
/// those under 109 MiB).
pub fn min_size_mib(fs: Fs) -> u64 {
    match fs {
        Fs::Xfs => 320,
        Fs::Btrfs => 128,
        Fs::Ext4 | Fs::F2fs => 64,
    }
}

pub(crate) fn run(cmd: &mut Command, what: &str, package: &str) -> Result<String, EnvError> {
    let out = cmd.output().map_err(|e| {
        EnvError(format!(
            "{what}: cannot run {:?}: {e}; install it (apt-get install {package})",
            cmd.get_program()
        ))
    })?;
    if !out.status.success() {
        return Err(EnvError(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Scratch {
    /// Make a `size_mib` image (at least [`min_size_mib`]), attach it to a
    /// free loop device, make `fs` on it and mount it in a fresh temporary
    /// directory.
    pub fn create(size_mib: u64, fs: Fs) -> Result<Self, EnvError> {
        Self::mounted(size_mib, fs, mount_opts(fs, false))
    }

    /// A scratch `fs` mounted with no options of ours: a default btrfs,
    /// which checksums its files (and on some kernels writes their direct
    /// writes through the page cache).
    pub fn plain(size_mib: u64, fs: Fs) -> Result<Self, EnvError> {
        Self::mounted(size_mib, fs, None)
    }

    fn mounted(size_mib: u64, fs: Fs, opts: Option<&str>) -> Result<Self, EnvError> {
        let (tool, args, package) = mkfs(fs);
        Self::make(
            size_mib.max(min_size_mib(fs)),
            fs.name(),
            tool,
            args,
            package,
            opts,
        )
    }

    /// A scratch ext2 (served by ext4's code on most kernels, through
    /// iomap, but a filesystem dio-trace has no facts for): what the tests
    /// use to check that such writes are never called clean.
    pub fn ext2(size_mib: u64) -> Result<Self, EnvError> {
        Self::make(size_mib, "ext2", "mkfs.ext2", &["-q", "-F"], "e2fsprogs", None)
    }

    fn make(
        size_mib: u64,
        fstype: &str,
        tool: &str,
        args: &[&str],
        package: &str,
        opts: Option<&str>,
    ) -> Result<Self, EnvError> {
        let root = temp_root("scratch")?;
        let mut s = Self {
            mount: root.join("mnt"),
            root,
            loopdev: None,
            mounted: false,
        };
        let image = s.root.join(format!("{fstype}.img"));
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size_mib << 20))
            .map_err(|e| EnvError(format!("cannot create {}: {e}", image.display())))?;
        let dev = run(
            Command::new("losetup").args(["--find", "--show"]).arg(&image),
            "attaching a loop device (needs root and the loop module)",
            "mount",
        )?;
        s.loopdev = Some(dev.clone());
        run(
            Command::new(tool).args(args).arg(&dev),
            &format!("making {fstype}"),
            package,
        )?;
        run(
            Command::new("mount")
                .args(["-t", fstype])
                .args(opts.map(|o| ["-o", o]).into_iter().flatten())
                .arg(&dev)
                .arg(&s.mount),
            &format!("mounting the scratch {fstype} (does this kernel have it? `modprobe {fstype}`)"),
            "mount",
        )?;
        s.mounted = true;
        Ok(s)
    }

    /// Where the filesystem is mounted.
    pub fn dir(&self) -> &Path {
        &self.mount
    }

    /// The loop device, e.g. /dev/loop3.
    pub fn device(&self) -> &str {
        self.loopdev.as_deref().unwrap_or("")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mount).status();
        }
        if let Some(dev) = &self.loopdev {
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A fresh folder `$TMPDIR/dio-trace-<what>-<pid>-<n>` with an empty
/// `mnt/` inside: where a scratch image and its mount point live.
pub(crate) fn temp_root(what: &str) -> Result<std::path::PathBuf, EnvError> {
    let root = std::env::temp_dir().join(format!(
        "dio-trace-{what}-{}-{}",
        std::process::id(),
        crate::collect::feed::monotonic_ns() % 1_000_000_007
    ));
    std::fs::create_dir_all(root.join("mnt"))
        .map_err(|e| EnvError(format!("cannot create {}: {e}", root.display())))?;
    Ok(root)
}
