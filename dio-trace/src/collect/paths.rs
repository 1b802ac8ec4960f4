//! The live annotator: kallsyms names callers and stack frames; the mount table, and where
//! the kernel's dentry walk was cut short the writer's open descriptors,
//! turn dentry names into full paths.

use std::{os::unix::fs::MetadataExt as _, sync::Arc};

use super::feed::Annotator;
use crate::kernel::{cgroups::CgroupNames, kallsyms::Kallsyms, kernel_dev_from_st, mounts::MountTable};

pub struct LiveAnnotator {
    mounts: MountTable,
    kallsyms: Kallsyms,
    cgroups: CgroupNames,
    /// Addresses already named: a few call sites make every size update
    /// and every stack, so each is looked up and formatted once.
    symbols: rustc_hash::FxHashMap<u64, Option<Arc<str>>>,
}

/// Addresses remembered at most; past it the cache starts over.
const MAX_SYMBOLS: usize = 4096;

impl LiveAnnotator {
    pub fn new(mounts: MountTable, kallsyms: Kallsyms) -> Self {
        Self {
            mounts,
            kallsyms,
            cgroups: CgroupNames::live(),
            symbols: rustc_hash::FxHashMap::default(),
        }
    }
}

impl Annotator for LiveAnnotator {
    fn symbol(&mut self, addr: u64) -> Option<Arc<str>> {
        if self.symbols.len() >= MAX_SYMBOLS {
            self.symbols.clear();
        }
        let kallsyms = &self.kallsyms;
        self.symbols
            .entry(addr)
            .or_insert_with(|| kallsyms.symbolize(addr).map(Arc::from))
            .clone()
    }

    fn cgroup(&mut self, id: u64) -> Option<Arc<str>> {
        self.cgroups.name(id).map(Arc::from)
    }

    fn path(&mut self, dev: u32, ino: u64, tgid: u32, names: &[String], complete: bool) -> Option<Arc<str>> {
        resolve(&mut self.mounts, dev, ino, tgid, names, complete).map(Arc::from)
    }
}

/// The full path of a file from its dentry names (leaf first) and mount,
/// else from the writer's open descriptors.
fn resolve(
    mounts: &mut MountTable,
    dev: u32,
    ino: u64,
    tgid: u32,
    names: &[String],
    complete: bool,
) -> Option<String> {
    if complete {
        let fs_path: String = names.iter().rev().map(|n| format!("/{n}")).collect();
        let fs_path = if fs_path.is_empty() {
            "/".to_owned()
        } else {
            fs_path
        };
        if let Some(p) = mounts.resolve(dev, &fs_path) {
            return Some(p);
        }
        // A mount we have not seen yet: read the table again, once.
        if let Ok(t) = MountTable::load() {
            *mounts = t;
            if let Some(p) = mounts.resolve(dev, &fs_path) {
                return Some(p);
            }
        }
    }
    from_fds(dev, ino, tgid)
}

/// Find the file among the process's open descriptors.
fn from_fds(dev: u32, ino: u64, tgid: u32) -> Option<String> {
    let dir = std::fs::read_dir(format!("/proc/{tgid}/fd")).ok()?;
    for entry in dir.flatten() {
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if meta.ino() == ino && kernel_dev_from_st(meta.dev()) == dev {
            return std::fs::read_link(entry.path())
                .ok()
                .map(|p| p.display().to_string());
        }
    }
    None
}
