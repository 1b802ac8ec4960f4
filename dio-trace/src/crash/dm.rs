//! Device mapper through its ioctls on `/dev/mapper/control`
//! (`include/uapi/linux/dm-ioctl.h`, interface version 4): create a device,
//! load a one-target table, resume it, send a target message, remove it.
//!
//! Why not the `devicemapper` crate (Stratis): its `devicemapper-sys` runs
//! bindgen at build time, which needs libclang and libdevmapper's headers
//! on every build host and a few minutes of two shared cores in a CI run
//! that is already near its limit, for the six ioctls used here. Why not
//! `dmsetup`: a minimal guest has none, and neither does a patch author's
//! VM with only the static binary.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use crate::error::EnvError;

const CONTROL: &str = "/dev/mapper/control";
/// `struct dm_ioctl`: the header of every request.
const HEADER: usize = 312;
const NAME_AT: usize = 48;
const NAME_LEN: usize = 128;
/// `struct dm_target_spec` before its parameters.
const SPEC: usize = 40;
/// Room for answers (the target list).
const ANSWER: usize = 16 << 10;

const VERSION_CMD: u64 = 0;
const DEV_CREATE: u64 = 3;
const DEV_REMOVE: u64 = 4;
const DEV_SUSPEND: u64 = 6;
const TABLE_LOAD: u64 = 9;
const LIST_VERSIONS: u64 = 13;
const TARGET_MSG: u64 = 14;

/// `DM_BUFFER_FULL_FLAG`.
const BUFFER_FULL: u32 = 1 << 8;

/// `_IOWR(0xfd, cmd, struct dm_ioctl)`.
const fn request(cmd: u64) -> u64 {
    (3 << 30) | ((HEADER as u64) << 16) | (0xfd << 8) | cmd
}

/// How to get device mapper where it is missing (exit 4 text).
pub const HOW: &str = "load it (`modprobe dm-mod dm-log-writes`; kernels we build need CONFIG_BLK_DEV_DM and \
                       CONFIG_DM_LOG_WRITES), or run in a VM whose kernel ships them: \
                       `cargo xtask vm verify --kernel debian-6.1 --crash`";

/// An open `/dev/mapper/control`.
pub struct Control {
    file: File,
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Where the misc device "device-mapper" is (`/proc/misc`), if loaded.
fn misc_minor() -> Option<u32> {
    let misc = std::fs::read_to_string("/proc/misc").ok()?;
    misc.lines().find_map(|l| {
        let (minor, name) = l.trim().split_once(' ')?;
        (name.trim() == "device-mapper").then(|| minor.parse().ok())?
    })
}

fn mknod_block_or_char(path: &Path, block: bool, major: u32, minor: u32) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    let kind = if block { libc::S_IFBLK } else { libc::S_IFCHR };
    // SAFETY: valid C string; plain integers.
    if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, libc::makedev(major, minor)) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Control {
    /// Open the control node (making it from `/proc/misc` where no devtmpfs
    /// or udev made it) and check the interface version. Every failure is
    /// an [`EnvError`]: exit 4, naming what is missing and how to get it.
    pub fn open() -> Result<Self, EnvError> {
        let path = Path::new(CONTROL);
        if !path.exists() {
            let Some(minor) = misc_minor() else {
                return Err(EnvError(format!(
                    "no device mapper in this kernel ({} missing, no device-mapper in /proc/misc): {HOW}",
                    CONTROL
                )));
            };
            let _ = std::fs::create_dir_all("/dev/mapper");
            mknod_block_or_char(path, false, 10, minor)
                .map_err(|e| EnvError(format!("cannot make {CONTROL} (misc 10:{minor}): {e}")))?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| EnvError(format!("cannot open {CONTROL}: {e} (device mapper needs root)")))?;
        let c = Self { file };
        c.call(VERSION_CMD, "", &[], 0)
            .map_err(|e| EnvError(format!("device mapper refused its version request: {e}: {HOW}")))?;
        Ok(c)
    }

    /// One request: header (+ `payload` at `data_start`), answer returned.
    fn call(&self, cmd: u64, name: &str, payload: &[u8], target_count: u32) -> std::io::Result<Vec<u8>> {
        if name.len() >= NAME_LEN {
            return Err(std::io::Error::other(format!("device name {name:?} too long")));
        }
        let mut b = vec![0u8; HEADER + payload.len().max(ANSWER)];
        let size = b.len() as u32;
        // Interface version 4.0.0: every kernel with device mapper takes it.
        put_u32(&mut b, 0, 4);
        put_u32(&mut b, 12, size);
        put_u32(&mut b, 16, HEADER as u32);
        put_u32(&mut b, 20, target_count);
        b[NAME_AT..NAME_AT + name.len()].copy_from_slice(name.as_bytes());
        b[HEADER..HEADER + payload.len()].copy_from_slice(payload);
        // SAFETY: the buffer is `size` bytes, as its header says.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), request(cmd) as _, b.as_mut_ptr()) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(b)
    }

    /// The targets the kernel has loaded now (a missing one may still load
    /// on demand, through the kernel's request_module, at table load).
    pub fn targets(&self) -> std::io::Result<Vec<String>> {
        let b = self.call(LIST_VERSIONS, "", &[], 0)?;
        if get_u32(&b, 28) & BUFFER_FULL != 0 {
            return Err(std::io::Error::other("target list longer than 16 KiB"));
        }
        let mut at = get_u32(&b, 16) as usize;
        let mut names = Vec::new();
        // struct dm_target_versions { u32 next; u32 version[3]; char name[]; }
        while at + 16 < b.len() {
            let next = get_u32(&b, at) as usize;
            let name = &b[at + 16..];
            let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            names.push(String::from_utf8_lossy(&name[..end]).into_owned());
            if next == 0 {
                break;
            }
            at += next;
        }
        Ok(names)
    }

    /// Create `name` with one `target` over `sectors` 512-byte sectors,
    /// live. Returns the block device node (`/dev/dm-N`).
    pub fn create(&self, name: &str, sectors: u64, target: &str, params: &str) -> std::io::Result<PathBuf> {
        let b = self.call(DEV_CREATE, name, &[], 0)?;
        let dev = u64::from_le_bytes(b[40..48].try_into().unwrap_or_default());
        // huge_encode_dev / new_encode_dev.
        let major = ((dev & 0xfff00) >> 8) as u32;
        let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
        let loaded = self.load(name, sectors, target, params).and_then(|()| {
            // DM_DEV_SUSPEND without DM_SUSPEND_FLAG resumes: the loaded
            // table goes live.
            self.call(DEV_SUSPEND, name, &[], 0).map(drop)
        });
        if let Err(e) = loaded {
            let _ = self.call(DEV_REMOVE, name, &[], 0);
            return Err(e);
        }
        node(major, minor)
    }

    fn load(&self, name: &str, sectors: u64, target: &str, params: &str) -> std::io::Result<()> {
        if target.len() >= 16 {
            return Err(std::io::Error::other(format!("target name {target:?} too long")));
        }
        let mut spec = vec![0u8; SPEC];
        spec[8..16].copy_from_slice(&sectors.to_le_bytes());
        spec[24..24 + target.len()].copy_from_slice(target.as_bytes());
        spec.extend_from_slice(params.as_bytes());
        spec.push(0);
        spec.resize(spec.len().next_multiple_of(8), 0);
        self.call(TABLE_LOAD, name, &spec, 1).map(drop)
    }

    /// Send `message` to the device's target at sector 0
    /// (`dmsetup message NAME 0 MESSAGE`).
    pub fn message(&self, name: &str, message: &str) -> std::io::Result<()> {
        let mut msg = vec![0u8; 8];
        msg.extend_from_slice(message.as_bytes());
        msg.push(0);
        self.call(TARGET_MSG, name, &msg, 0).map(drop)
    }

    /// Remove the device; retried while something (udev's blkid) still
    /// holds it open.
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        let mut tries = 0;
        loop {
            match self.call(DEV_REMOVE, name, &[], 0) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                r => return r.map(drop),
            }
        }
    }
}

/// The `/dev/dm-N` node of a device: devtmpfs makes it; where nothing
/// does, make it ourselves.
fn node(major: u32, minor: u32) -> std::io::Result<PathBuf> {
    let path = PathBuf::from(format!("/dev/dm-{minor}"));
    for _ in 0..50 {
        if path.exists() {
            return Ok(path);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    mknod_block_or_char(&path, true, major, minor)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_the_kernels_numbers() {
        // DM_VERSION and DM_TARGET_MSG as strace prints them on x86-64.
        assert_eq!(request(VERSION_CMD), 0xc138_fd00);
        assert_eq!(request(TARGET_MSG), 0xc138_fd0e);
    }

    #[test]
    fn missing_device_mapper_says_how_to_get_it() {
        if Path::new(CONTROL).exists() || misc_minor().is_some() {
            return; // this host has device mapper: nothing to check here
        }
        let e = Control::open().err().expect("no device mapper here");
        assert!(
            e.0.contains("no device mapper") && e.0.contains("modprobe dm-mod"),
            "{e}"
        );
    }
}
