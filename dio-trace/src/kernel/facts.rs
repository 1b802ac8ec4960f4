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
        let mut offsets = btf.offsets().map_err(|e| {
            EnvError(format!(
                "kernel {release} lacks a struct field dio-trace reads: {e:#}; this kernel is not supported"
            ))
        })?;
        let version = super::parse_version(&release);
        if !btrfs_may_leave_dsync_stub(version) {
            offsets.task_struct_journal_info = 0;
        }
        let format = tracefs::format(&tracefs, "iomap", "iomap_dio_rw_begin");
        let (iocb, iocb_source) = iocb::resolve(format.as_deref(), version).map_err(EnvError::of)?;
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

    /// Refuse a run limited to one device (`--dev`, `--path`) whose
    /// filesystem's facts are missing: that filesystem is what the user
    /// asked to judge, and none of its writes could be. A run over every
    /// filesystem starts and leaves only that filesystem's writes unjudged.
    pub fn check_targeted(&self, dev: u32) -> Result<(), EnvError> {
        match unjudgeable_target(&self.fs, &self.mounts, dev) {
            Some(why) => Err(EnvError(why)),
            None => Ok(()),
        }
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

/// Can btrfs take `IOCB_DSYNC` off a sync direct write before iomap and
/// leave its stub in `current->journal_info` (5.10 to 5.15)? Only there
/// does the write start read `journal_info` for every direct write that
/// is not sync-flavoured (a helper call and a read, about 14 ns of a
/// 50 ns filter on the kernels that never do it). 5.16 dropped the stub
/// and 6.1's btrfs leaves `IOCB_DSYNC` alone; a release that does not
/// parse keeps the read (a read too many costs time, one too few a silent
/// miss).
fn btrfs_may_leave_dsync_stub(version: Option<(u32, u32, u32)>) -> bool {
    version.is_none_or(|(major, minor, _)| (major, minor) < (5, 16))
}

/// Why writes to device `dev` (0: every device) cannot be judged, when
/// it holds a filesystem dio-trace knows but whose facts are missing.
fn unjudgeable_target(fs: &[FsStatus], mounts: &MountTable, dev: u32) -> Option<String> {
    if dev == 0 {
        return None;
    }
    let fstype = mounts.fstype(dev)?;
    let missing = fs
        .iter()
        .find(|s| s.fs.name() == fstype)
        .and_then(FsStatus::missing)?;
    Some(format!(
        "cannot judge writes to device {} ({fstype}, mounted at {}): {missing}",
        super::dev_string(dev),
        mounts.mount_points_of(dev).collect::<Vec<_>>().join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::{Types, fs_status};
    use dio_trace_common::fs::Fs;

    #[test]
    fn only_kernels_before_5_16_read_the_btrfs_dsync_stub() {
        assert!(btrfs_may_leave_dsync_stub(Some((5, 10, 218))));
        assert!(btrfs_may_leave_dsync_stub(Some((5, 15, 0))));
        assert!(btrfs_may_leave_dsync_stub(Some((4, 19, 0))));
        assert!(!btrfs_may_leave_dsync_stub(Some((5, 16, 0))));
        assert!(!btrfs_may_leave_dsync_stub(Some((6, 1, 0))));
        assert!(!btrfs_may_leave_dsync_stub(Some((7, 3, 4))));
        assert!(btrfs_may_leave_dsync_stub(None));
    }

    struct NoTypes;
    impl crate::kernel::btf::TypeLookup for NoTypes {
        fn struct_source(&self, _: &str) -> Option<Types> {
            None
        }
        fn field_offset(&self, name: &str, _: &str) -> anyhow::Result<u32> {
            anyhow::bail!("struct {name} not found")
        }
    }

    /// An f2fs-only host of a generic kernel: ext4 and XFS never loaded.
    #[test]
    fn only_a_run_that_names_a_filesystem_without_facts_is_refused() {
        let fs: Vec<FsStatus> = Fs::ALL
            .into_iter()
            .map(|f| fs_status(f, &NoTypes, f == Fs::F2fs, "6.1.0-44-amd64"))
            .collect();
        let mounts = MountTable::parse(
            "22 1 254:0 / / rw - f2fs /dev/vda rw\n\
             30 22 7:0 / /mnt/late rw - ext4 /dev/loop0 rw\n",
        );
        let f2fs = crate::kernel::kernel_dev(254, 0);
        let ext4 = crate::kernel::kernel_dev(7, 0);
        assert_eq!(unjudgeable_target(&fs, &mounts, 0), None, "every device: start");
        assert_eq!(unjudgeable_target(&fs, &mounts, f2fs), None);
        let why = unjudgeable_target(&fs, &mounts, ext4).unwrap();
        assert!(
            why.starts_with(
                "cannot judge writes to device 7:0 (ext4, mounted at /mnt/late): ext4's facts are missing:"
            ),
            "{why}"
        );
        assert!(why.contains("`modprobe ext4`"), "{why}");
        // A device that is not mounted: the kernel side counts its writes.
        assert_eq!(
            unjudgeable_target(&fs, &mounts, crate::kernel::kernel_dev(8, 1)),
            None
        );
    }
}
