//! The named kernels of the test matrix, as rows of data.
//!
//! A row says where a kernel comes from and what is true of it (does it
//! carry the bug, which probe no backend of a family can serve there, does
//! dio-trace refuse it). What each matrix case must show follows from those facts
//! alone; adding a kernel is adding a row, never a code path.

/// Where a named kernel comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The newest Debian package whose name matches `pattern`, from
    /// `suite` (`None`: the host's own suites). A `linux-binary-*` name is
    /// split packaging (6.16+): its `linux-modules-*` twin comes along.
    Apt {
        suite: Option<&'static str>,
        pattern: &'static str,
    },
    /// Built from Debian's source with a fix undone (`buggy.rs`).
    Built(&'static super::buggy::Recipe),
    /// An `Apt` kernel with the modules of one source directory rebuilt
    /// from Debian's source with a patch (`module_build.rs`).
    AptPatched {
        suite: Option<&'static str>,
        pattern: &'static str,
        recipe: &'static super::module_build::Recipe,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Named {
    pub name: &'static str,
    pub origin: Origin,
    /// What it is, for the support table.
    pub about: &'static str,
    /// An extending O_SYNC/O_DSYNC direct write syncs before its size is
    /// journaled (NOTES §1, §7).
    pub bug: bool,
    /// An O_DSYNC/RWF_DSYNC direct write into new or unwritten blocks
    /// (appends, fallocated space) runs no sync at all: 6.15's
    /// d279c80e0bac, fixed by 6b65028e2b51 in 6.17-rc3 and 6.16.3 (NOTES
    /// §9). O_SYNC writes still sync.
    pub dsync_skip: bool,
    /// (backend, probe): no hook of that family can serve the probe here.
    pub unservable: &'static [(&'static str, &'static str)],
    /// dio-trace must refuse to judge this kernel's ext4 (exit 4, for a run
    /// limited to an ext4 path) with a message that contains this text: it
    /// names what is missing and how to get it.
    pub refused: Option<&'static str>,
    /// The `-dbg` package (a name pattern, same suite) to make ext4's BTF
    /// from, as the refusal tells a user to: the matrix asserts the
    /// refusal without it, then runs every case with `--btf`.
    pub ext4_btf_from: Option<&'static str>,
    /// Run the crash ground truth on it in `cargo xtask test`.
    pub crash: bool,
    /// Run the ext4 matrix and `verify` on it. Off for the rows that exist
    /// for their f2fs: `f2fs-fix-7.3` is `debian-7.3-generic` with only
    /// f2fs.ko rebuilt, and ext4 on 7.3 is covered by `debian-7.3` (built
    /// in) and ext4 as a module by the 6.1 and 6.12 generic rows: their
    /// boots would cost CI minutes and prove nothing new.
    pub matrix: bool,
    /// ext4 is a module (generic flavours), not built in: a guest whose
    /// disk is XFS or f2fs never loads it, and its cells check that it
    /// stayed out, so they run dio-trace on a host without ext4.
    pub ext4_module: bool,
    /// f2fs syncs an extending direct write before it raises the size:
    /// iomap's completion runs `f2fs_sync_file` and only then
    /// `f2fs_i_size_write` (from a1e09b03e6f5, 5.17, NOTES §8). A sync that
    /// takes a checkpoint then loses the size. False where f2fs updates the
    /// size in `->end_io` (patches/f2fs-dio-size-in-end-io.patch), or has no
    /// iomap direct I/O (5.10: `generic_file_direct_write` raises the size
    /// before f2fs syncs; a crash after a checkpointing sync kept it,
    /// docs/f2fs-dio-size.md).
    pub f2fs_late_size: bool,
    /// f2fs numbers the first fsync node page after a checkpoint (or the
    /// mount) 0, and `f2fs_wait_on_node_pages_writeback` waits for none of
    /// it: the first sync to roll forward after one can return before its
    /// node page is durable (every version read, 4.19 on; dio-trace calls
    /// it inconclusive). False with patches/f2fs-fsync-seq-from-one.patch.
    pub f2fs_unwaited_first: bool,
    /// f2fs's fsync waits for every node page numbered before its flush,
    /// not only up to its own (patches/f2fs-fsync-wait-all-numbered.patch):
    /// a roll-forward beside other fsyncs lasts, and dio-trace sees it
    /// (`EVENT_NODES_ALL`), but for the rare sync that another numbers a
    /// page under between its read and its wait (then unjudged, kept).
    pub f2fs_waits_all_numbered: bool,
    /// btrfs sets no `IOMAP_F_DIRTY` on a size-extending direct write, so
    /// on a device with FUA iomap writes an O_DSYNC one FUA and runs no
    /// sync (NOTES §8, docs/filesystems.md): a synchronous `write()` is
    /// synced by `btrfs_do_write_iter` after iomap returns, an async one
    /// (aio, io_uring) by nothing, and a crash loses it, unless its I/O
    /// finished before iomap let go of it (then btrfs syncs it). Measured with
    /// per-write crash truth on the dm-log-writes device (FUA) on Debian's
    /// 6.1, 6.12 and 7.3 generic kernels.
    pub btrfs_async_dsync_unsynced: bool,
    /// btrfs writes direct writes to checksummed files (its default)
    /// through the page cache, so that a buffer changed in flight cannot
    /// break their checksums (6.12's stable series, and this project's
    /// 6.18 hosts; 7.x writes them direct through bounce buffers).
    /// Measured per row on a btrfs mounted with no options: 6.12 falls
    /// back, 5.10, 6.1 and 7.3 do not.
    pub btrfs_csum_buffered: bool,
    /// It ships device mapper's log-writes target: the matrix's `verify`
    /// runs with `--crash` there (per-write crash truth, `crash_truth.rs`).
    pub crash_truth: bool,
}

/// Debian's packaged 7.3 generic kernel (split packaging), not the cloud one.
const DEBIAN_73_GENERIC: &str = r"^linux-binary-7\.3\.[0-9]+\+deb[0-9]+-amd64$";

/// Debian 12's generic 6.1: ext4 a module, with BTF.
const DEBIAN_61_GENERIC: &str = r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$";

/// What no hook can serve on Debian's generic 6.1 and the rows built on it:
/// no iomap tracepoints before 6.4, and for fentry, iomap_dio_rw has 7
/// arguments (6.1 trampolines take 6) while aya 0.14 has no fentry on
/// module functions like ext4_file_write_iter.
const GENERIC_61_UNSERVABLE: &[(&str, &str)] = &[("tracepoint", "write_begin"), ("fentry", "write_begin")];

/// `iomap:iomap_dio_rw_begin` came in 6.4: before, no tracepoint can
/// serve `write_begin`.
const NO_IOMAP_TRACEPOINTS: &[(&str, &str)] = &[("tracepoint", "write_begin")];

/// What the rows' btrfs does with an async O_DSYNC append on a FUA device
/// ([`Named::btrfs_async_dsync_unsynced`]): the same in every 6.1, 6.12
/// and 7.3 kernel read (iomap's FUA path, btrfs's iomap flags). Not on
/// 5.10: there btrfs clears `IOCB_DSYNC` before iomap (its O_DSYNC writes
/// reach `__iomap_dio_rw` without it), so iomap never takes the FUA path
/// and btrfs syncs itself; the 5.10 btrfs cell's crash truth keeps every
/// aio and io_uring append.
const BTRFS_ASYNC_DSYNC: bool = true;

pub static NAMED: &[Named] = &[
    Named {
        name: "debian-5.10",
        origin: Origin::Apt {
            suite: Some("bullseye"),
            pattern: r"^linux-image-5\.10\.0-30-cloud-amd64-unsigned$",
        },
        about: "Debian 11 5.10.218 cloud, as shipped",
        bug: true,
        dsync_skip: false,
        unservable: NO_IOMAP_TRACEPOINTS,
        refused: None,
        ext4_btf_from: None,
        crash: true,
        matrix: true,
        ext4_module: false,
        f2fs_late_size: false,
        f2fs_unwaited_first: true,
        f2fs_waits_all_numbered: false,
        btrfs_async_dsync_unsynced: false,
        btrfs_csum_buffered: false,
        crash_truth: true,
    },
    Named {
        name: "debian-5.10-generic",
        origin: Origin::Apt {
            suite: Some("bullseye"),
            pattern: r"^linux-image-5\.10\.0-30-amd64-unsigned$",
        },
        about: "Debian 11 5.10.218 generic, ext4 a module, no module BTF",
        bug: true,
        dsync_skip: false,
        // With --btf: ext4's functions are a module's, which aya 0.14
        // cannot fentry.
        unservable: &[("tracepoint", "write_begin"), ("fentry", "size_update")],
        refused: Some("--btf"),
        ext4_btf_from: Some(r"^linux-image-5\.10\.0-30-amd64-dbg$"),
        crash: false,
        matrix: true,
        ext4_module: true,
        f2fs_late_size: false,
        f2fs_unwaited_first: true,
        f2fs_waits_all_numbered: false,
        btrfs_async_dsync_unsynced: false,
        btrfs_csum_buffered: false,
        crash_truth: false,
    },
    Named {
        name: "debian-6.1",
        origin: Origin::Apt {
            suite: None,
            pattern: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
        },
        about: "Debian 12 6.1 cloud",
        bug: false,
        dsync_skip: false,
        unservable: NO_IOMAP_TRACEPOINTS,
        refused: None,
        ext4_btf_from: None,
        crash: true,
        matrix: true,
        ext4_module: false,
        f2fs_late_size: true,
        f2fs_unwaited_first: true,
        f2fs_waits_all_numbered: false,
        btrfs_async_dsync_unsynced: BTRFS_ASYNC_DSYNC,
        btrfs_csum_buffered: false,
        crash_truth: true,
    },
    Named {
        name: "debian-6.1-generic",
        origin: Origin::Apt {
            suite: None,
            pattern: DEBIAN_61_GENERIC,
        },
        about: "Debian 12 6.1 generic, ext4 a module with BTF",
        bug: false,
        dsync_skip: false,
        unservable: GENERIC_61_UNSERVABLE,
        refused: None,
        ext4_btf_from: None,
        crash: false,
        matrix: true,
        ext4_module: true,
        f2fs_late_size: true,
        f2fs_unwaited_first: true,
        f2fs_waits_all_numbered: false,
        btrfs_async_dsync_unsynced: BTRFS_ASYNC_DSYNC,
        btrfs_csum_buffered: false,
        crash_truth: false,
    },
    Named {
        name: "debian-6.12",
        origin: Origin::Apt {
            suite: None,
            pattern: r"^linux-image-6\.12\.[0-9]+.*-cloud-amd64-unsigned$",
        },
        about: "Debian 12 backports 6.12 cloud",
        bug: false,
        dsync_skip: false,
        unservable: &[],
        refused: None,
        ext4_btf_from: None,
        crash: false,
        matrix: true,
        ext4_module: false,
        f2fs_late_size: true,
        f2fs_unwaited_first: true,
        f2fs_waits_all_numbered: false,
        btrfs_async_dsync_unsynced: BTRFS_ASYNC_DSYNC,
        btrfs_csum_buffered: true,
        crash_truth: true,
    },
    Named {
        name: "debian-6.12-generic",
        origin: Origin::Apt {
            suite: None,
            pattern: r"^linux-image-6\.12\.[0-9]+.*[0-9]-amd64-unsigned$",
        },
        about: "Debian 12 backports 6.12 generic, ext4 a module with BTF",
        bug: false,
        dsync_skip: false,
        // ext4's tracepoints are served raw; its functions cannot be fentry'd.
        unservable: &[("fentry", "size_update")],
        refused: None,
        ext4_btf_from: None,
        crash: false,
        matrix: true,
        ext4_module: true,
        f2fs_late_size: true,
        f2fs_unwaited_first: true,
        f2fs_waits_all_numbered: false,
        btrfs_async_dsync_unsynced: BTRFS_ASYNC_DSYNC,
        btrfs_csum_buffered: true,
        crash_truth: false,
    },
    Named {
        name: "debian-7.3",
        origin: Origin::Apt {
            suite: Some("trixie-backports"),
            pattern: r"^linux-binary-7\.3\.[0-9]+.*-cloud-amd64$",
        },
        about: "Debian 13 backports 7.3 cloud (split packages)",
        bug: false,
        dsync_skip: false,
        unservable: &[],
        refused: None,
        ext4_btf_from: None,
        crash: false,
        matrix: true,
        ext4_module: false,
        f2fs_late_size: true,
        f2fs_unwaited_first: true,
        f2fs_waits_all_numbered: false,
        btrfs_async_dsync_unsynced: BTRFS_ASYNC_DSYNC,
        btrfs_csum_buffered: false,
        crash_truth: true,
    },
    Named {
        name: "debian-7.3-generic",
        origin: Origin::Apt {
            suite: Some("trixie-backports"),
            pattern: DEBIAN_73_GENERIC,
        },
        about: "Debian 13 backports 7.3 generic (split packages), f2fs as shipped",
        bug: false,
        dsync_skip: false,
        // ext4's functions are a module's: aya 0.14 cannot fentry them.
        unservable: &[("fentry", "size_update")],
        refused: None,
        ext4_btf_from: None,
        crash: false,
        matrix: false,
        ext4_module: true,
        f2fs_late_size: true,
        f2fs_unwaited_first: true,
        f2fs_waits_all_numbered: false,
        btrfs_async_dsync_unsynced: BTRFS_ASYNC_DSYNC,
        btrfs_csum_buffered: false,
        crash_truth: false,
    },
    Named {
        name: "f2fs-fix-7.3",
        origin: Origin::AptPatched {
            suite: Some("trixie-backports"),
            pattern: DEBIAN_73_GENERIC,
            recipe: &super::module_build::F2FS_FIX_73,
        },
        about: "debian-7.3-generic with f2fs.ko rebuilt: size updated in ->end_io, first node page waited for",
        bug: false,
        dsync_skip: false,
        unservable: &[("fentry", "size_update")],
        refused: None,
        ext4_btf_from: None,
        crash: false,
        matrix: false,
        ext4_module: true,
        f2fs_late_size: false,
        f2fs_unwaited_first: false,
        f2fs_waits_all_numbered: true,
        btrfs_async_dsync_unsynced: BTRFS_ASYNC_DSYNC,
        btrfs_csum_buffered: false,
        crash_truth: false,
    },
    Named {
        name: "buggy-6.1",
        origin: Origin::AptPatched {
            suite: None,
            pattern: DEBIAN_61_GENERIC,
            recipe: &super::module_build::BUGGY_61,
        },
        about: "debian-6.1-generic with ext4.ko rebuilt: 91562895f803 undone",
        bug: true,
        dsync_skip: false,
        unservable: GENERIC_61_UNSERVABLE,
        refused: None,
        ext4_btf_from: None,
        crash: true,
        matrix: true,
        ext4_module: true,
        f2fs_late_size: true,
        f2fs_unwaited_first: true,
        f2fs_waits_all_numbered: false,
        btrfs_async_dsync_unsynced: BTRFS_ASYNC_DSYNC,
        btrfs_csum_buffered: false,
        crash_truth: true,
    },
    Named {
        name: "buggy-7.3",
        origin: Origin::Built(&super::buggy::BUGGY_73),
        about: "Debian's 7.3 source with d279c80e0bac's O_DSYNC decision re-created",
        bug: false,
        dsync_skip: true,
        unservable: &[],
        refused: None,
        ext4_btf_from: None,
        crash: true,
        matrix: true,
        ext4_module: false,
        f2fs_late_size: true,
        f2fs_unwaited_first: true,
        f2fs_waits_all_numbered: false,
        btrfs_async_dsync_unsynced: BTRFS_ASYNC_DSYNC,
        btrfs_csum_buffered: false,
        crash_truth: true,
    },
];

/// The row called `name`.
pub fn find(name: &str) -> Option<&'static Named> {
    NAMED.iter().find(|n| n.name == name)
}

/// Every row's name, for messages.
pub fn names() -> String {
    NAMED.iter().map(|n| n.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for n in NAMED {
            assert_eq!(find(n.name), Some(n));
        }
        assert_eq!(find("debian-4.19"), None);
    }

    #[test]
    fn generic_flavours_build_ext4_as_a_module() {
        // Debian's generic packages, as shipped or with a module rebuilt;
        // the cloud ones and the kernels we build have ext4 built in.
        for n in NAMED {
            let generic = match n.origin {
                Origin::Apt { pattern, .. } | Origin::AptPatched { pattern, .. } => {
                    !pattern.contains("cloud")
                }
                Origin::Built(_) => false,
            };
            assert_eq!(n.ext4_module, generic, "{}", n.name);
        }
    }

    #[test]
    fn every_buggy_kernel_runs_the_matrix() {
        for n in NAMED.iter().filter(|n| n.bug || n.dsync_skip) {
            assert!(n.matrix, "{}", n.name);
        }
        // The f2fs pair differ in f2fs.ko alone: their f2fs cells carry them.
        assert!(!find("f2fs-fix-7.3").unwrap().matrix);
    }

    #[test]
    fn the_dsync_regression_has_its_kernel_and_a_fixed_twin() {
        let k = find("buggy-7.3").unwrap();
        assert!(k.dsync_skip && !k.bug && k.crash);
        let fixed = find("debian-7.3").unwrap();
        assert!(!fixed.dsync_skip && !fixed.bug);
        assert_eq!(NAMED.iter().filter(|n| n.dsync_skip).count(), 1);
    }

    #[test]
    fn the_f2fs_fix_has_a_stock_twin_of_the_same_package() {
        let fixed = find("f2fs-fix-7.3").unwrap();
        let stock = find("debian-7.3-generic").unwrap();
        assert!(stock.f2fs_late_size && !fixed.f2fs_late_size);
        assert!(stock.f2fs_unwaited_first && !fixed.f2fs_unwaited_first);
        let Origin::AptPatched { suite, pattern, .. } = fixed.origin else {
            panic!("f2fs-fix-7.3 is not a patched package");
        };
        assert_eq!(stock.origin, Origin::Apt { suite, pattern });
        assert_eq!(
            (fixed.bug, fixed.dsync_skip, fixed.unservable),
            (stock.bug, stock.dsync_skip, stock.unservable)
        );
    }

    #[test]
    fn the_headline_kernel_is_a_shipped_buggy_one() {
        let k = find("debian-5.10").unwrap();
        assert!(
            k.bug
                && k.crash
                && matches!(
                    k.origin,
                    Origin::Apt {
                        suite: Some("bullseye"),
                        ..
                    }
                )
        );
    }
}
