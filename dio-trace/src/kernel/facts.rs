//! Everything the loader needs from the running kernel, gathered in one
//! place before anything is loaded. Each failure is an [`EnvError`] that
//! names the missing fact and the fix.

use std::path::{Path, PathBuf};

use dio_trace_common::{
    config::{CONFIG_CGROUP_IDS, Config, Filter, FsFacts, IOCB_LAYOUTS, IocbBits, Offsets, OpenFlags},
    fs::FS_SLOTS,
};

use super::{
    btf::{FsStatus, KernelBtf},
    iocb,
    kallsyms::Kallsyms,
    mounts::MountTable,
    preflight, tracefs,
};
use crate::error::EnvError;

pub struct KernelFacts {
    pub release: String,
    pub offsets: Offsets,
    /// Each filesystem's facts (by `Fs::slot`), or why they are missing.
    pub fs: Vec<FsStatus>,
    /// Candidate `ki_flags` layouts, in the order the programs try them.
    pub iocb: [IocbBits; IOCB_LAYOUTS],
    pub iocb_source: iocb::Source,
    pub open: OpenFlags,
    pub kallsyms: Kallsyms,
    /// Why kernel addresses cannot be named here, when they cannot.
    pub symbols_unreadable: Option<String>,
    pub tracefs: PathBuf,
    pub mounts: MountTable,
}

impl KernelFacts {
    /// Check privileges, BTF and tracefs, then read every fact. `btf`:
    /// a BTF file with ext4's types (`--btf`), for kernels without module BTF.
    pub fn gather(btf: Option<&Path>) -> Result<Self, EnvError> {
        preflight::check_privileges().map_err(EnvError::of)?;
        preflight::check_btf().map_err(EnvError::of)?;
        let tracefs = tracefs::ensure_mounted().map_err(EnvError::of)?;
        let release = super::release();
        let btf = KernelBtf::load(btf).map_err(EnvError::of)?;
        let offsets = btf.offsets().map_err(|e| {
            EnvError(format!(
                "kernel {release} lacks a struct field dio-trace reads: {e:#}; this kernel is not supported"
            ))
        })?;
        let format = tracefs::format(&tracefs, "iomap", "iomap_dio_rw_begin");
        let (iocb, iocb_source) =
            iocb::resolve(format.as_deref(), super::parse_version(&release)).map_err(EnvError::of)?;
        // Only for naming callers and stack frames: a host that hides
        // kernel addresses still traces, and the reports say why once.
        let (kallsyms, symbols_unreadable) = match Kallsyms::load() {
            Ok(k) => (k, None),
            Err(e) => (Kallsyms::default(), Some(format!("{e:#}"))),
        };
        let mounts = MountTable::load().map_err(EnvError::of)?;
        Ok(Self {
            release,
            offsets,
            fs: btf.fs_facts(),
            iocb,
            iocb_source,
            open: iocb::open_flags(),
            kallsyms,
            symbols_unreadable,
            tracefs,
            mounts,
        })
    }

    /// The loader global for a run with `filter` (the loader adds what
    /// depends on the ring buffer's size).
    pub fn config(&self, filter: Filter, flags: u32) -> Config {
        let mut fs = [FsFacts::default(); FS_SLOTS];
        for st in &self.fs {
            fs[st.fs.slot()] = st.facts;
        }
        // A kernel without cgroups has no /proc/self/cgroup.
        let cgroups = if std::path::Path::new("/proc/self/cgroup").exists() {
            CONFIG_CGROUP_IDS
        } else {
            0
        };
        Config {
            offsets: self.offsets,
            fs,
            iocb: self.iocb,
            open: self.open,
            filter,
            flags: flags | cgroups,
            wake_bytes: 0,
        }
    }
}
