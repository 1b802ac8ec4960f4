//! A throw-away ext4 filesystem on a loop device, for `verify`, the demo
//! and the live tests. Dropping it unmounts and detaches everything.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::error::EnvError;

pub struct Scratch {
    root: PathBuf,
    mount: PathBuf,
    loopdev: Option<String>,
    mounted: bool,
}

fn run(cmd: &mut Command, what: &str) -> Result<String, EnvError> {
    let out = cmd.output().map_err(|e| {
        EnvError(format!(
            "{what}: cannot run {:?}: {e}; install it (apt-get install e2fsprogs mount)",
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
    /// Make a `size_mib` image, attach it to a free loop device, make ext4
    /// on it and mount it in a fresh temporary directory.
    pub fn create(size_mib: u64) -> Result<Self, EnvError> {
        let root = std::env::temp_dir().join(format!(
            "dio-trace-scratch-{}-{}",
            std::process::id(),
            monotonic_suffix()
        ));
        std::fs::create_dir_all(root.join("mnt"))
            .map_err(|e| EnvError(format!("cannot create {}: {e}", root.display())))?;
        let mut s = Self {
            mount: root.join("mnt"),
            root,
            loopdev: None,
            mounted: false,
        };
        let image = s.root.join("ext4.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size_mib << 20))
            .map_err(|e| EnvError(format!("cannot create {}: {e}", image.display())))?;
        let dev = run(
            Command::new("losetup").args(["--find", "--show"]).arg(&image),
            "attaching a loop device (needs root and the loop module)",
        )?;
        s.loopdev = Some(dev.clone());
        run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-E", "nodiscard"])
                .arg(&dev),
            "making ext4",
        )?;
        run(
            Command::new("mount").arg(&dev).arg(&s.mount),
            "mounting the scratch ext4",
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

fn monotonic_suffix() -> u64 {
    crate::collect::feed::monotonic_ns() % 1_000_000_007
}
