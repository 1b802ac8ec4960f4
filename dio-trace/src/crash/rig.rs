//! The devices behind per-write crash truth: a data image and a log image
//! on two loop devices, a dm-log-writes target over them with the scratch
//! filesystem on it; later, a third loop device for each replay. Dropping
//! the rig unmounts and detaches everything and removes the images.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::Command,
};

use dio_trace_common::{crash::Survived, fs::Fs};

use super::{
    dm::{self, Control},
    log::Log,
    loopdev, replay,
};
use crate::{
    error::EnvError,
    scratch::{min_size_mib, mkfs, mount_opts, run, temp_root},
};

pub struct Rig {
    root: PathBuf,
    fs: Fs,
    bytes: u64,
    /// The image replays start from: the fresh filesystem `--fresh-fs`
    /// gave (mkfs is then not in the log); `None`: a blank device.
    base: Option<PathBuf>,
    ctl: Control,
    name: String,
    loops: Vec<String>,
    dm_live: bool,
    mount: PathBuf,
    mounted: bool,
}

fn losetup(image: &Path) -> Result<String, EnvError> {
    loopdev::attach(image)
        .map(|p| p.display().to_string())
        .map_err(|e| EnvError(format!("attaching {} to a loop device: {e}", image.display())))
}

fn losetup_d(dev: &str) {
    let _ = loopdev::detach(Path::new(dev));
}

fn mount(fs: Fs, dev: &str, dir: &Path, replay: bool) -> Result<(), EnvError> {
    let mut cmd = Command::new("mount");
    cmd.args(["-t", fs.name()]);
    if let Some(o) = mount_opts(fs, replay) {
        cmd.args(["-o", o]);
    }
    run(
        cmd.arg(dev).arg(dir),
        &format!(
            "mounting {} on {dev} (does this kernel have it? `modprobe {}`)",
            fs.name(),
            fs.name()
        ),
        "mount",
    )
    .map(drop)
}

impl Rig {
    /// Images of `size_mib` (at least what `fs` needs) for data and log,
    /// the log-writes target named after this process, `fs` made on it
    /// (so mkfs is in the log and a replay starts from a blank device)
    /// and mounted. With `fresh`, a device or image holding a fresh `fs`
    /// instead of mkfs (guests without mkfs): it is copied, never written,
    /// and replays start from the copy.
    pub fn create(fs: Fs, size_mib: u64, fresh: Option<&Path>) -> Result<Self, EnvError> {
        // First, before any image: without device mapper this is exit 4.
        let ctl = Control::open()?;
        let fresh = match fresh {
            Some(p) => {
                let f = std::fs::File::open(p).map_err(|e| {
                    EnvError(format!("cannot open the fresh filesystem {}: {e}", p.display()))
                })?;
                let len = std::io::Seek::seek(&mut &f, std::io::SeekFrom::End(0))
                    .map_err(|e| EnvError(format!("cannot size {}: {e}", p.display())))?;
                Some((f, len))
            }
            None => None,
        };
        let bytes = match &fresh {
            Some((_, len)) => *len,
            None => size_mib.max(min_size_mib(fs)) << 20,
        };
        let root = temp_root("crash")?;
        let mut rig = Self {
            mount: root.join("mnt"),
            root,
            fs,
            bytes,
            base: None,
            ctl,
            name: format!("dio-trace-lw-{}", std::process::id()),
            loops: Vec::new(),
            dm_live: false,
            mounted: false,
        };
        // The log holds mkfs's writes and every write after it: room for
        // the whole device again, sparse until used.
        for (image, len) in [("data.img", bytes), ("log.img", bytes + (64 << 20))] {
            let path = rig.root.join(image);
            std::fs::File::create(&path)
                .and_then(|f| f.set_len(len))
                .map_err(|e| EnvError(format!("cannot create {}: {e}", path.display())))?;
            if let Some((src, _)) = fresh.as_ref().filter(|_| image == "data.img") {
                let base = rig.root.join("base.img");
                let copy = || -> std::io::Result<()> {
                    let b = std::fs::File::create(&base)?;
                    b.set_len(bytes)?;
                    let d = std::fs::OpenOptions::new().write(true).open(&path)?;
                    sparse_copy(src, &[&b, &d], bytes)
                };
                copy().map_err(|e| EnvError(format!("cannot copy the fresh filesystem: {e}")))?;
                rig.base = Some(base);
            }
            let dev = losetup(&path)?;
            rig.loops.push(dev);
        }
        let params = format!("{} {}", rig.loops[0], rig.loops[1]);
        let node = rig
            .ctl
            .create(&rig.name, bytes >> 9, "log-writes", &params)
            .map_err(|e| {
                let targets = rig.ctl.targets().unwrap_or_default();
                if targets.iter().any(|t| t == "log-writes") {
                    EnvError(format!("cannot create the log-writes device {}: {e}", rig.name))
                } else {
                    EnvError(format!(
                        "device mapper has no log-writes target ({e}; loaded: {}): {}",
                        targets.join(", "),
                        dm::HOW
                    ))
                }
            })?;
        rig.dm_live = true;
        let node = node.display().to_string();
        if rig.base.is_none() {
            let (tool, args, package) = mkfs(fs);
            run(
                Command::new(tool).args(args).arg(&node),
                &format!(
                    "making {} (or pass --fresh-fs DEV holding a fresh one)",
                    fs.name()
                ),
                package,
            )?;
        }
        mount(fs, &node, &rig.mount, false)?;
        rig.mounted = true;
        Ok(rig)
    }

    /// Where the filesystem is mounted.
    pub fn dir(&self) -> &Path {
        &self.mount
    }

    /// The dm device's name: what the writer sends its marks to.
    pub fn dm_name(&self) -> &str {
        &self.name
    }

    /// Unmount and remove the target (which logs its last entries and
    /// rewrites the super), detach the loops: the log is complete.
    /// Returns the log image.
    pub fn finish(&mut self) -> Result<PathBuf, EnvError> {
        if self.mounted {
            run(
                Command::new("umount").arg(&self.mount),
                "unmounting the scratch filesystem",
                "mount",
            )?;
            self.mounted = false;
        }
        if self.dm_live {
            self.ctl
                .remove(&self.name)
                .map_err(|e| EnvError(format!("cannot remove the log-writes device {}: {e}", self.name)))?;
            self.dm_live = false;
        }
        for dev in self.loops.drain(..) {
            losetup_d(&dev);
        }
        Ok(self.root.join("log.img"))
    }

    /// Replay `log` up to `mark` onto a blank image, mount it (recovery
    /// runs), and read `file` (relative to the filesystem's root).
    pub fn survivor(&self, log: &Path, mark: &str, file: &Path) -> anyhow::Result<Survived> {
        let image = self.root.join("replay.img");
        let mut target = std::fs::File::create(&image)?;
        target.set_len(self.bytes)?;
        if let Some(base) = &self.base {
            sparse_copy(&std::fs::File::open(base)?, &[&target], self.bytes)?;
        }
        let mut log = Log::open(std::io::BufReader::new(std::fs::File::open(log)?))?;
        replay::to_mark(&mut log, mark, &mut target)?;
        target.sync_all()?;
        drop(target);
        let dev = losetup(&image)?;
        let dir = self.root.join("replay");
        std::fs::create_dir_all(&dir)?;
        let read = mount(self.fs, &dev, &dir, true)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                let r = read_survivor(&dir.join(file));
                run(Command::new("umount").arg(&dir), "unmounting a replay", "mount")?;
                r
            });
        losetup_d(&dev);
        read
    }
}

/// Copy `len` bytes of `src` into each of `dst` (sized already), writing
/// only blocks that are not all zeros and skipping `src`'s holes: images
/// stay sparse, and a copy costs what the filesystem used.
fn sparse_copy(src: &std::fs::File, dst: &[&std::fs::File], len: u64) -> std::io::Result<()> {
    use std::os::{fd::AsRawFd as _, unix::fs::FileExt as _};
    const BLOCK: usize = 4096;
    let mut buf = vec![0u8; 256 * BLOCK];
    let mut at = 0u64;
    while at < len {
        // SAFETY: plain integers on an open descriptor. Block devices and
        // old filesystems answer EINVAL/ENXIO: then read everything.
        let data = unsafe { libc::lseek(src.as_raw_fd(), at as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                break; // no data after `at`
            }
        } else {
            at = (data as u64).min(len) / BLOCK as u64 * BLOCK as u64;
        }
        let want = (len - at).min(buf.len() as u64) as usize;
        let n = src.read_at(&mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        for (i, block) in buf[..n].chunks(BLOCK).enumerate() {
            if block.iter().any(|&b| b != 0) {
                for d in dst {
                    d.write_all_at(block, at + (i * BLOCK) as u64)?;
                }
            }
        }
        at += n as u64;
    }
    Ok(())
}

/// Size and non-zero bytes of `path`, or that it is gone.
fn read_survivor(path: &Path) -> anyhow::Result<Survived> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Survived::Missing),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    };
    let size = f.metadata()?.len();
    let mut data = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        data += buf[..n].iter().filter(|&&b| b != 0).count() as u64;
    }
    Ok(Survived::File { size, data })
}

impl Drop for Rig {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mount).status();
        }
        if self.dm_live {
            let _ = self.ctl.remove(&self.name);
        }
        for dev in &self.loops {
            losetup_d(dev);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt as _;

    use super::*;

    #[test]
    fn sparse_copy_copies_data_and_leaves_holes() {
        let src = tempfile::tempfile().unwrap();
        src.set_len(1 << 20).unwrap();
        src.write_all_at(&[5u8; 4096], 8192).unwrap();
        src.write_all_at(&[6u8; 10], 700_000).unwrap();
        let dst = tempfile::tempfile().unwrap();
        dst.set_len(1 << 20).unwrap();
        sparse_copy(&src, &[&dst], 1 << 20).unwrap();
        let mut a = vec![0u8; 1 << 20];
        let mut b = vec![0u8; 1 << 20];
        src.read_exact_at(&mut a, 0).unwrap();
        dst.read_exact_at(&mut b, 0).unwrap();
        assert!(a == b);
    }
}
