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
    replay,
};
use crate::{
    error::EnvError,
    scratch::{min_size_mib, mkfs, monotonic_suffix, run},
};

pub struct Rig {
    root: PathBuf,
    fs: Fs,
    bytes: u64,
    ctl: Control,
    name: String,
    loops: Vec<String>,
    dm_live: bool,
    mount: PathBuf,
    mounted: bool,
}

fn losetup(image: &Path) -> Result<String, EnvError> {
    run(
        Command::new("losetup").args(["--find", "--show"]).arg(image),
        "attaching a loop device (needs root and the loop module)",
        "mount",
    )
}

/// What to pass to `mount -o`: ext4's periodic journal commit pushed past
/// any run, so only the writes' own syncs commit (as in `vm crash`); XFS
/// refuses a second mount of one UUID, which replays of one image are.
fn mount_opts(fs: Fs, replay: bool) -> Option<&'static str> {
    match fs {
        Fs::Ext4 => Some("commit=60"),
        Fs::Xfs if replay => Some("nouuid"),
        _ => None,
    }
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
    /// and mounted.
    pub fn create(fs: Fs, size_mib: u64) -> Result<Self, EnvError> {
        // First, before any image: without device mapper this is exit 4.
        let ctl = Control::open()?;
        let bytes = size_mib.max(min_size_mib(fs)) << 20;
        let root = std::env::temp_dir().join(format!(
            "dio-trace-crash-{}-{}",
            std::process::id(),
            monotonic_suffix()
        ));
        std::fs::create_dir_all(root.join("mnt"))
            .map_err(|e| EnvError(format!("cannot create {}: {e}", root.display())))?;
        let mut rig = Self {
            mount: root.join("mnt"),
            root,
            fs,
            bytes,
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
        let (tool, args, package) = mkfs(fs);
        run(
            Command::new(tool).args(args).arg(&node),
            &format!("making {}", fs.name()),
            package,
        )?;
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
            let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        }
        Ok(self.root.join("log.img"))
    }

    /// Replay `log` up to `mark` onto a blank image, mount it (recovery
    /// runs), and read `file` (relative to the filesystem's root).
    pub fn survivor(&self, log: &Path, mark: &str, file: &Path) -> anyhow::Result<Survived> {
        let image = self.root.join("replay.img");
        let mut target = std::fs::File::create(&image)?;
        target.set_len(self.bytes)?;
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
        let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        read
    }
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
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
