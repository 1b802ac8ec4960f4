//! Loop devices through their ioctls (`include/uapi/linux/loop.h`):
//! busybox's `losetup` (all a test guest has) cannot find a free device
//! and print it, and a patch author's VM with only the static binary may
//! have no `losetup` at all.

use std::{
    fs::{File, OpenOptions},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

const LOOP_SET_FD: u64 = 0x4C00;
const LOOP_CLR_FD: u64 = 0x4C01;
const LOOP_CTL_GET_FREE: u64 = 0x4C82;

fn rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

fn ioctl(f: &File, req: u64, arg: libc::c_ulong) -> std::io::Result<libc::c_int> {
    // SAFETY: the loop ioctls used here take an integer argument.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req as _, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Attach `image` to a free loop device; returns its node (`/dev/loopN`).
pub fn attach(image: &Path) -> std::io::Result<PathBuf> {
    let ctl = rw(Path::new("/dev/loop-control")).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("/dev/loop-control: {e} (needs root and the loop module: `modprobe loop`)"),
        )
    })?;
    let backing = rw(image)?;
    // Another process may take the free device first: ask again.
    for _ in 0..10 {
        let n = ioctl(&ctl, LOOP_CTL_GET_FREE, 0)?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        for _ in 0..50 {
            if path.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !path.exists() {
            let c =
                std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
            // SAFETY: valid C string; plain integers.
            if unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(7, n as u32)) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let dev = rw(&path)?;
        match ioctl(&dev, LOOP_SET_FD, backing.as_raw_fd() as libc::c_ulong) {
            Ok(_) => return Ok(path),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free loop device after 10 tries"))
}

/// Detach a loop device (its backing file stays).
pub fn detach(dev: &Path) -> std::io::Result<()> {
    ioctl(&rw(dev)?, LOOP_CLR_FD, 0).map(drop)
}
