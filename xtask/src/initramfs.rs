//! The guest's whole userspace: a gzip'd newc cpio with busybox, the
//! caller's static binaries, the modules the kernel needs and an `/init`
//! that runs one shell script and powers off.
//!
//! The archive is written directly (no staging directory, no root-owned
//! device nodes on the host): that keeps it reproducible and lets it hold
//! `/dev/console`, without which the kernel starts `/init` with no output.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::kernel::host::ensure_packages;
use crate::kernel::{Kernel, modules};

/// Printed by `/init` as its first act: the kernel finished booting and
/// user space runs. A guest that dies without it died in the kernel's own
/// boot, before anything of ours ran (see `vm::boot`).
pub const INIT_START_MARKER: &str = "DIO-TRACE-VM-INIT-START";
/// Printed by `/init` right before the guest script starts.
pub const BEGIN_MARKER: &str = "DIO-TRACE-VM-BEGIN";
/// Printed by `/init` with the script's exit status: `DIO-TRACE-VM-EXIT=<n>`.
pub const EXIT_MARKER: &str = "DIO-TRACE-VM-EXIT=";
/// Printed by `/init` when the guest could not be set up.
pub const INIT_ERROR_MARKER: &str = "DIO-TRACE-VM-INIT-ERROR:";

/// Where the host's static busybox lives (Debian's `busybox-static`).
const BUSYBOX: &str = "/bin/busybox";
/// Guest path of the caller's script.
const SCRIPT: &str = "/etc/dio-trace/script.sh";
/// Guest path of the module load order, one name per line.
const MODULE_LIST: &str = "/etc/dio-trace/modules";

/// A host file to copy into the guest.
#[derive(Clone, Debug)]
pub struct GuestFile {
    /// File on the host (symlinks are followed).
    pub host: PathBuf,
    /// Absolute path in the guest, e.g. `/bin/dio-trace`.
    pub guest: String,
}

impl GuestFile {
    /// `host` as `/bin/<its file name>`, the `--binary` convention.
    pub fn in_bin(host: impl Into<PathBuf>) -> Result<Self> {
        let host = host.into();
        if !host.is_file() {
            bail!("{} is not a file", host.display());
        }
        let name = host
            .file_name()
            .with_context(|| format!("{} has no file name", host.display()))?
            .to_string_lossy()
            .into_owned();
        Ok(Self {
            host,
            guest: format!("/bin/{name}"),
        })
    }
}

/// The host's `mkfs.ext4` (e2fsprogs) and the shared libraries it links,
/// at their host paths: so `dio-trace verify --crash` can make its scratch
/// filesystem in a `vm shell` guest, whose busybox has no mkfs for ext4.
/// mke2fs falls back to its built-in profile without /etc/mke2fs.conf.
pub fn host_mkfs_ext4() -> Result<Vec<GuestFile>> {
    ensure_packages(&["e2fsprogs"])?;
    let tool = Path::new("/sbin/mkfs.ext4");
    let out = std::process::Command::new("ldd")
        .arg(tool)
        .output()
        .context("running ldd /sbin/mkfs.ext4")?;
    if !out.status.success() {
        bail!(
            "ldd /sbin/mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut files = vec![GuestFile {
        host: tool.into(),
        guest: "/sbin/mkfs.ext4".into(),
    }];
    files.extend(
        libraries(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .map(|lib| GuestFile {
                host: lib.into(),
                guest: lib.to_owned(),
            }),
    );
    Ok(files)
}

/// The absolute library paths in `ldd` output (`libc.so.6 => /lib/...`,
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`; not the vDSO).
fn libraries(ldd: &str) -> Vec<&str> {
    ldd.lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then_some(path)
        })
        .collect()
}

/// What goes into one initramfs.
pub struct Spec<'a> {
    pub kernel: &'a Kernel,
    /// Extra files (static binaries) for the guest.
    pub files: &'a [GuestFile],
    /// Shell script run by `/init` once the system is up.
    pub script: &'a str,
    /// Mount the scratch disk (`/dev/vda`, or `/dev/nvme0n1` on NVMe) on
    /// `/mnt` before the script, with this filesystem.
    pub mount_disk: Option<&'a str>,
}

/// Writes the initramfs for `spec` to `out`.
pub fn build(spec: &Spec<'_>, out: &Path) -> Result<()> {
    ensure_packages(&["busybox-static"])?;
    let modules = match &spec.kernel.modules {
        Some(dir) => {
            let mut wanted = modules::GUEST.to_vec();
            wanted.extend(spec.mount_disk);
            modules::load_order(dir, &wanted, modules::GUEST_OPTIONAL)
                .with_context(|| format!("collecting virtio and filesystem modules from {}", dir.display()))?
        }
        None => Vec::new(),
    };
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut archive = newc::Writer::new(GzEncoder::new(std::io::BufWriter::new(file), Compression::fast()));
    for dir in [
        "bin",
        "dev",
        "etc",
        "etc/dio-trace",
        "lib",
        "lib/modules",
        "mnt",
        "proc",
        "root",
        "run",
        "sbin",
        "sys",
        "tmp",
    ] {
        archive.dir(dir)?;
    }
    archive.char_device("dev/console", 5, 1)?;
    archive.file("bin/busybox", 0o755, &read(Path::new(BUSYBOX))?)?;
    archive.symlink("bin/sh", "busybox")?;
    archive.file("init", 0o755, init_script(spec.mount_disk).as_bytes())?;
    archive.file(SCRIPT.trim_start_matches('/'), 0o755, spec.script.as_bytes())?;
    let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
    archive.file(
        MODULE_LIST.trim_start_matches('/'),
        0o644,
        names.join("\n").as_bytes(),
    )?;
    for m in &modules {
        archive.file(&format!("lib/modules/{}.ko", m.name), 0o644, &m.bytes)?;
    }
    for f in spec.files {
        add_guest_file(&mut archive, f)?;
    }
    archive
        .finish()?
        .finish()
        .context("compressing the initramfs")?
        .flush()
        .with_context(|| format!("writing {}", out.display()))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Adds `f` and any parent directories it needs.
fn add_guest_file<W: std::io::Write>(archive: &mut newc::Writer<W>, f: &GuestFile) -> Result<()> {
    let Some(rel) = f
        .guest
        .strip_prefix('/')
        .filter(|r| !r.is_empty() && !r.ends_with('/'))
    else {
        bail!("guest path `{}` must be an absolute file path", f.guest);
    };
    let parents: Vec<&Path> = Path::new(rel)
        .ancestors()
        .skip(1)
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    for dir in parents.iter().rev() {
        archive.dir(&dir.to_string_lossy())?;
    }
    archive.file(rel, 0o755, &read(&f.host)?)
}

/// The guest's `/init`. Every failure before the script prints
/// [`INIT_ERROR_MARKER`] so the host can tell setup errors from test
/// failures; `reboot -f` ends the guest (QEMU runs with `-no-reboot`, and a
/// tinyconfig kernel has no ACPI power-off).
fn init_script(mount_disk: Option<&str>) -> String {
    let disk = if let Some(fs) = mount_disk {
        format!(
            r#"
i=0
disk=
while [ -z "$disk" ]; do
    for d in /dev/vda /dev/nvme0n1; do
        [ -b "$d" ] && disk=$d
    done
    i=$((i + 1))
    [ "$i" -gt 100 ] && fail "no /dev/vda or /dev/nvme0n1 after 10 s (virtio_blk or nvme missing?)"
    [ -z "$disk" ] && sleep 0.1
done
# What the disk promises (FUA lets a DSYNC overwrite skip its flush).
q=/sys/block/${{disk#/dev/}}/queue
echo "@@DISK $disk fua=$(cat $q/fua 2>/dev/null) write_cache=$(cat $q/write_cache 2>/dev/null | tr ' ' '-')"
mount {args} $disk /mnt || fail "mount {args} $disk /mnt"
"#,
            args = crate::vm::disk::mount_args(fs)
        )
    } else {
        String::new()
    };
    let umount = if mount_disk.is_some() {
        "umount /mnt || echo \"warning: umount /mnt failed\"\n"
    } else {
        ""
    };
    format!(
        r#"#!/bin/sh
# /init of dio-trace's test VMs, generated by xtask/src/initramfs.rs.
echo "{INIT_START_MARKER}"
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root

fail() {{
    echo "{INIT_ERROR_MARKER} $*"
    reboot -f
    sleep 60
}}

mount -t proc proc /proc || fail "mount proc"
mount -t sysfs sysfs /sys || fail "mount sysfs"
mount -t devtmpfs devtmpfs /dev 2>/dev/null || [ -e /dev/null ] || fail "mount devtmpfs"
mount -t tmpfs tmpfs /tmp || fail "mount tmpfs"
mount -t tracefs tracefs /sys/kernel/tracing || echo "warning: no tracefs at /sys/kernel/tracing"
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null

for m in $(cat {MODULE_LIST}); do
    insmod "/lib/modules/$m.ko" || fail "insmod $m"
done
{disk}
cd /
echo "{BEGIN_MARKER}"
sh {SCRIPT}
rc=$?
echo
echo "{EXIT_MARKER}$rc"
{umount}sync
reboot -f
"#
    )
}

/// A minimal writer for the "new ASCII" (newc) cpio format the kernel
/// unpacks as initramfs. Entries are owned by root with mtime 0.
mod newc {
    use std::collections::BTreeSet;
    use std::io::Write;

    use anyhow::{Context as _, Result};

    const S_IFDIR: u32 = 0o040_000;
    const S_IFREG: u32 = 0o100_000;
    const S_IFLNK: u32 = 0o120_000;
    const S_IFCHR: u32 = 0o020_000;

    pub struct Writer<W: Write> {
        out: W,
        next_ino: u32,
        written: u64,
        /// Directories already written: each goes in once.
        dirs: BTreeSet<String>,
    }

    impl<W: Write> Writer<W> {
        pub fn new(out: W) -> Self {
            Self {
                out,
                next_ino: 1,
                written: 0,
                dirs: BTreeSet::new(),
            }
        }

        pub fn dir(&mut self, name: &str) -> Result<()> {
            if !self.dirs.insert(name.to_owned()) {
                return Ok(());
            }
            self.entry(name, S_IFDIR | 0o755, 2, (0, 0), b"")
        }

        pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<()> {
            self.entry(name, S_IFREG | perm, 1, (0, 0), data)
        }

        pub fn symlink(&mut self, name: &str, target: &str) -> Result<()> {
            self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
        }

        pub fn char_device(&mut self, name: &str, major: u32, minor: u32) -> Result<()> {
            self.entry(name, S_IFCHR | 0o600, 1, (major, minor), b"")
        }

        /// Writes the trailer and returns the inner writer.
        pub fn finish(mut self) -> Result<W> {
            self.entry_raw("TRAILER!!!", 0, 0, 1, (0, 0), b"")?;
            Ok(self.out)
        }

        fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) -> Result<()> {
            let ino = self.next_ino;
            self.next_ino += 1;
            self.entry_raw(name, ino, mode, nlink, rdev, data)
                .with_context(|| format!("adding {name} to the initramfs"))
        }

        fn entry_raw(
            &mut self,
            name: &str,
            ino: u32,
            mode: u32,
            nlink: u32,
            rdev: (u32, u32),
            data: &[u8],
        ) -> Result<()> {
            let size = u32::try_from(data.len()).context("file larger than 4 GiB")?;
            let namesize = u32::try_from(name.len() + 1).context("name too long")?;
            let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0];
            let mut header = String::from("070701");
            for f in fields {
                header.push_str(&format!("{f:08x}"));
            }
            self.put(header.as_bytes())?;
            self.put(name.as_bytes())?;
            self.put(&[0])?;
            self.pad()?;
            self.put(data)?;
            self.pad()
        }

        fn put(&mut self, bytes: &[u8]) -> Result<()> {
            self.out.write_all(bytes)?;
            self.written += bytes.len() as u64;
            Ok(())
        }

        /// newc aligns every header and every file body to 4 bytes.
        fn pad(&mut self) -> Result<()> {
            let n = (4 - (self.written % 4) as usize) % 4;
            self.put(&[0; 3][..n])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_aligned_and_terminated() -> Result<()> {
        let mut w = newc::Writer::new(Vec::new());
        w.dir("bin")?;
        w.file("bin/x", 0o755, b"hello")?;
        let out = w.finish()?;
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("bin/x\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
        // The second header starts right after the padded first entry.
        let second = (110 + "bin\0".len()).next_multiple_of(4);
        assert_eq!(&out[second..second + 6], b"070701");
        Ok(())
    }

    #[test]
    fn init_mounts_disk_only_when_asked() {
        assert!(init_script(Some("ext4")).contains("mount -t ext4 $disk /mnt"));
        assert!(init_script(Some("xfs")).contains("/dev/nvme0n1"));
        assert!(!init_script(None).contains("/dev/vda"));
        let init = init_script(None);
        assert!(init.contains(EXIT_MARKER) && init.contains("reboot -f"));
        let first = init.lines().find(|l| !l.starts_with('#')).unwrap_or_default();
        assert_eq!(first, format!("echo \"{INIT_START_MARKER}\""));
        assert!(init.contains("mount -t tracefs tracefs /sys/kernel/tracing"));
    }

    #[test]
    fn guest_paths_must_be_absolute_files() {
        let mut w = newc::Writer::new(Vec::new());
        for bad in ["bin/x", "/", "/bin/"] {
            let f = GuestFile {
                host: PathBuf::from("/dev/null"),
                guest: bad.into(),
            };
            assert!(add_guest_file(&mut w, &f).is_err(), "{bad}");
        }
        let ok = GuestFile {
            host: PathBuf::from("/dev/null"),
            guest: "/opt/t/x".into(),
        };
        assert!(add_guest_file(&mut w, &ok).is_ok());
    }

    #[test]
    fn ldd_lines_give_library_paths() {
        let ldd = "\tlinux-vdso.so.1 (0x00007fb3f9dd1000)\n\tlibext2fs.so.2 => /lib/x86_64-linux-gnu/libext2fs.so.2 (0x1)\n\t/lib64/ld-linux-x86-64.so.2 (0x2)\n";
        assert_eq!(
            libraries(ldd),
            [
                "/lib/x86_64-linux-gnu/libext2fs.so.2",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn binaries_go_to_bin() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let host = dir.path().join("dio-trace");
        std::fs::write(&host, b"")?;
        assert_eq!(GuestFile::in_bin(&host)?.guest, "/bin/dio-trace");
        assert!(GuestFile::in_bin(dir.path().join("missing")).is_err());
        Ok(())
    }
}
