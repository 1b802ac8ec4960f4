//! `/proc/self/mountinfo`: which filesystem a device holds and where it is
//! mounted, to turn the dentry names the kernel sends into a full path and
//! to refuse paths on filesystems dio-trace does not judge.

use std::path::Path;

use anyhow::{Context as _, Result};

/// One mount: device, the directory of the filesystem mounted (`root`),
/// where it is mounted, and the filesystem type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Kernel `dev_t` (major << 20 | minor).
    pub dev: u32,
    pub root: String,
    pub mount_point: String,
    pub fstype: String,
}

#[derive(Clone, Debug, Default)]
pub struct MountTable {
    mounts: Vec<Mount>,
}

impl MountTable {
    pub fn load() -> Result<Self> {
        let raw = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        Ok(Self::parse(&raw))
    }

    pub fn parse(raw: &str) -> Self {
        let mounts = raw.lines().filter_map(parse_line).collect();
        Self { mounts }
    }

    /// The filesystem type on a device, if mounted.
    pub fn fstype(&self, dev: u32) -> Option<&str> {
        self.mounts
            .iter()
            .find(|m| m.dev == dev)
            .map(|m| m.fstype.as_str())
    }

    /// Where the filesystem on a device is mounted.
    pub fn mount_points_of(&self, dev: u32) -> impl Iterator<Item = &str> {
        self.mounts
            .iter()
            .filter(move |m| m.dev == dev)
            .map(|m| m.mount_point.as_str())
    }

    /// Where filesystems of this type are mounted.
    pub fn mount_points<'a>(&'a self, fstype: &'a str) -> impl Iterator<Item = &'a str> {
        self.mounts
            .iter()
            .filter(move |m| m.fstype == fstype)
            .map(|m| m.mount_point.as_str())
    }

    /// Every mount of a filesystem dio-trace judges.
    pub fn supported_mounts(&self) -> impl Iterator<Item = &Mount> {
        self.mounts
            .iter()
            .filter(|m| dio_trace_common::fs::Fs::from_name(&m.fstype).is_some())
    }

    /// The mount `path` (absolute, symlinks resolved) lies under: the one
    /// with the longest mount point containing it, the last mounted of
    /// equals (the one on top).
    pub fn mount_under(&self, path: &Path) -> Option<&Mount> {
        self.mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| path.starts_with(&m.mount_point))
            .max_by_key(|(i, m)| (m.mount_point.len(), *i))
            .map(|(_, m)| m)
    }

    /// Full path of a file given its path from the filesystem root
    /// (`/dir/file`), through the mount that exposes it (shortest mount point
    /// whose root contains it, so bind mounts of subdirectories work too).
    pub fn resolve(&self, dev: u32, fs_path: &str) -> Option<String> {
        self.mounts
            .iter()
            .filter(|m| m.dev == dev)
            .filter_map(|m| {
                let rest = if m.root == "/" {
                    fs_path
                } else {
                    fs_path
                        .strip_prefix(m.root.as_str())
                        .filter(|r| r.is_empty() || r.starts_with('/'))?
                };
                let mp = m.mount_point.trim_end_matches('/');
                Some(format!("{mp}{rest}"))
            })
            .min_by_key(|p| p.len())
    }
}

fn parse_line(line: &str) -> Option<Mount> {
    let (pre, post) = line.split_once(" - ")?;
    let f: Vec<&str> = pre.split(' ').collect();
    let (major, minor) = f.get(2)?.split_once(':')?;
    let fstype = post.split(' ').next()?;
    Some(Mount {
        dev: super::kernel_dev(major.parse().ok()?, minor.parse().ok()?),
        root: unescape(f.get(3)?),
        mount_point: unescape(f.get(4)?),
        fstype: fstype.to_owned(),
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v as char);
            i += 4;
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// The kernel `dev_t` and filesystem type holding `path`, or of its nearest
/// existing ancestor when `path` does not exist yet.
pub fn device_of(path: &Path, table: &MountTable) -> Result<(u32, String)> {
    use std::os::unix::fs::MetadataExt as _;
    let mut p = path;
    let meta = loop {
        match std::fs::metadata(p) {
            Ok(m) => break m,
            Err(e) => match p.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                _ => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
            },
        }
    };
    let dev = super::kernel_dev_from_st(meta.dev());
    if let Some(fstype) = table.fstype(dev) {
        return Ok((dev, fstype.to_owned()));
    }
    // btrfs gives each subvolume's files an anonymous st_dev of its own,
    // while mountinfo (and the superblock the kernel programs read) has
    // the filesystem's: take the mount the path lies under instead.
    let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    Ok(table
        .mount_under(&real)
        .map_or((dev, "unknown".to_owned()), |m| (m.dev, m.fstype.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 7:0 / /mnt/scratch rw,relatime shared:2 - ext4 /dev/loop0 rw
31 22 7:0 /sub /srv/bind rw,relatime shared:2 - ext4 /dev/loop0 rw
32 22 0:5 / /mnt/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn a_path_is_under_the_longest_mount_point_holding_it() {
        let t = MountTable::parse(INFO);
        let under = |p: &str| t.mount_under(Path::new(p)).map(|m| m.mount_point.as_str());
        assert_eq!(under("/mnt/scratch/a"), Some("/mnt/scratch"));
        assert_eq!(
            under("/mnt/scratchy"),
            Some("/"),
            "a path component, not a prefix"
        );
        assert_eq!(under("/srv/bind/x"), Some("/srv/bind"));
        assert_eq!(under("/etc"), Some("/"));
        let stacked = MountTable::parse(&format!(
            "{INFO}33 30 0:40 / /mnt/scratch rw - btrfs /dev/loop1 rw\n"
        ));
        assert_eq!(
            stacked
                .mount_under(Path::new("/mnt/scratch/f"))
                .map(|m| m.fstype.as_str()),
            Some("btrfs"),
            "the mount on top"
        );
    }

    #[test]
    fn resolves_paths_through_mounts() {
        let t = MountTable::parse(INFO);
        let loop0 = crate::kernel::kernel_dev(7, 0);
        assert_eq!(t.fstype(loop0), Some("ext4"));
        assert_eq!(t.resolve(loop0, "/a/b").unwrap(), "/mnt/scratch/a/b");
        assert_eq!(
            t.resolve(crate::kernel::kernel_dev(254, 0), "/etc/x").unwrap(),
            "/etc/x"
        );
        assert_eq!(t.resolve(42, "/x"), None);
        assert_eq!(t.mounts[3].mount_point, "/mnt/with space");
    }
}
