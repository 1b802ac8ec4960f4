//! cgroup v2: `--cgroup PATH` to the ids and levels the kernel filter
//! compares, and the ids the kernel sends back to the paths people know
//! (as `/proc/PID/cgroup` shows them: `/system.slice/nginx.service`).
//!
//! A cgroup v2 id is the inode number of the cgroup's directory under the
//! cgroup2 mount (kernfs, 5.5+ on 64-bit), so a `stat` names it and a walk
//! of the tree finds the path of an id.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{error::UsageError, kernel::mounts::MountTable};

/// A `--cgroup` directory, as the kernel filter needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// Its id: the directory's inode number.
    pub id: u64,
    /// Its depth below the cgroup2 root (the root is 0): the ancestor level
    /// the kernel compares a task's cgroup at.
    pub level: u32,
    /// Its path from the cgroup2 root, `/` first.
    pub path: String,
}

/// Where cgroup2 is mounted: `/sys/fs/cgroup` on unified hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones.
pub fn root() -> Result<PathBuf, UsageError> {
    let table = MountTable::load().map_err(|e| UsageError(format!("--cgroup: {e:#}")))?;
    table
        .mount_points("cgroup2")
        .min_by_key(|p| p.len())
        .map(PathBuf::from)
        .ok_or_else(|| {
            UsageError(
                "--cgroup: no cgroup2 filesystem is mounted (cgroup v1 only); mount one with \
                 `mount -t cgroup2 none /sys/fs/cgroup/unified` or boot with systemd.unified_cgroup_hierarchy=1"
                    .into(),
            )
        })
}

/// `arg` as given to `--cgroup`: a directory under the cgroup2 mount
/// (`/sys/fs/cgroup/system.slice/x.service`), or a path as
/// `/proc/PID/cgroup` shows it (`/system.slice/x.service`).
pub fn resolve(root: &Path, arg: &Path) -> Result<Kept, UsageError> {
    let dir = if arg.starts_with(root) {
        arg.to_path_buf()
    } else {
        let rel = arg.strip_prefix("/").unwrap_or(arg);
        root.join(rel)
    };
    let dir = dir.canonicalize().map_err(|e| {
        UsageError(format!(
            "--cgroup {}: {e} (looked for {}); give a cgroup v2 directory under {} or a path as /proc/PID/cgroup shows it",
            arg.display(),
            dir.display(),
            root.display()
        ))
    })?;
    let rel = dir.strip_prefix(root).map_err(|_| {
        UsageError(format!(
            "--cgroup {}: {} is not under the cgroup2 mount {}",
            arg.display(),
            dir.display(),
            root.display()
        ))
    })?;
    let meta = std::fs::metadata(&dir).map_err(|e| UsageError(format!("--cgroup {}: {e}", arg.display())))?;
    if !meta.is_dir() || !dir.join("cgroup.procs").exists() {
        return Err(UsageError(format!(
            "--cgroup {}: {} is not a cgroup directory (it has no cgroup.procs)",
            arg.display(),
            dir.display()
        )));
    }
    let level = rel.components().count() as u32;
    if level >= 32 {
        return Err(UsageError(format!(
            "--cgroup {}: nested {level} deep; dio-trace filters cgroups up to 31 levels below the root",
            arg.display()
        )));
    }
    Ok(Kept {
        id: meta.ino(),
        level,
        path: format!("/{}", rel.display()),
    })
}

/// Cgroup ids to paths, by walking the cgroup2 tree. An id not found is
/// looked for again at most once a second (a cgroup made since), and a
/// cgroup removed since keeps the path it had.
pub struct CgroupNames {
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    last_walk: Option<Instant>,
}

/// Cgroups remembered at most; past it the cache starts over.
const MAX_CGROUPS: usize = 65_536;
/// How often a miss may walk the tree again.
const REWALK: Duration = Duration::from_secs(1);

impl CgroupNames {
    /// Names from the cgroup2 mount, if there is one (else every id stays
    /// unnamed).
    pub fn live() -> Self {
        Self {
            root: root().ok(),
            paths: HashMap::new(),
            last_walk: None,
        }
    }

    /// The path of cgroup `id` from the cgroup2 root, if it can be found.
    pub fn name(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        let root = self.root.clone()?;
        if self.last_walk.is_some_and(|t| t.elapsed() < REWALK) {
            return None;
        }
        self.last_walk = Some(Instant::now());
        if self.paths.len() >= MAX_CGROUPS {
            self.paths.clear();
        }
        walk(&root, &root, &mut self.paths);
        self.paths.get(&id).cloned()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut HashMap<u64, String>) {
    if let Ok(meta) = std::fs::metadata(dir) {
        let rel = dir.strip_prefix(root).unwrap_or(dir);
        out.insert(meta.ino(), format!("/{}", rel.display()));
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &e.path(), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_from_the_mount_or_from_proc_form() {
        let root = match root() {
            Ok(root) => root,
            Err(e) => return super::super::skip_or_fail("cgroup paths", &e.0),
        };
        let whole = resolve(&root, &root).unwrap();
        assert_eq!((whole.level, whole.path.as_str()), (0, "/"));
        let by_proc = resolve(&root, Path::new("/")).unwrap();
        assert_eq!(by_proc, whole);
        let err = resolve(&root, Path::new("/no-such-cgroup-dio-trace")).unwrap_err();
        assert!(err.0.contains("cgroup v2 directory"), "{}", err.0);
        let mut names = CgroupNames::live();
        assert_eq!(names.name(whole.id).as_deref(), Some("/"));
    }
}
