//! The filesystems whose size updates and syncs the programs can read.
//!
//! A filesystem enters as facts, not as code in the verdict: where its
//! on-disk size lives ([`crate::config::FsFacts`], from BTF), which kernel
//! step makes that size durable and which step is the sync (the probe
//! catalog's rows). The verdict reads only "size update" and "sync".

/// A filesystem the programs know, by number. The number travels in each
/// write's record (`EVENT_FS_*` bits of its flags); 0 there means ext4,
/// the only filesystem of trace formats before 3.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fs {
    Ext4 = 1,
    Xfs = 2,
    F2fs = 3,
    Btrfs = 4,
}

/// How many filesystems [`crate::config::Config::fs`] has slots for.
pub const FS_SLOTS: usize = 4;

impl Fs {
    pub const ALL: [Fs; FS_SLOTS] = [Fs::Ext4, Fs::Xfs, Fs::F2fs, Fs::Btrfs];

    /// Its slot in [`crate::config::Config::fs`].
    pub const fn slot(self) -> usize {
        self as usize - 1
    }

    /// The filesystem with this number; 0 is ext4 (older traces).
    pub fn from_u32(n: u32) -> Option<Fs> {
        Some(match n {
            0 | 1 => Fs::Ext4,
            2 => Fs::Xfs,
            3 => Fs::F2fs,
            4 => Fs::Btrfs,
            _ => return None,
        })
    }

    /// The filesystem `/proc/mounts` (or a user) names so, if dio-trace
    /// has facts for it.
    pub fn from_name(name: &str) -> Option<Fs> {
        Fs::ALL.into_iter().find(|fs| fs.name() == name)
    }

    /// `file_system_type.name`, as `/proc/mounts` shows it.
    pub const fn name(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4",
            Fs::Xfs => "xfs",
            Fs::F2fs => "f2fs",
            Fs::Btrfs => "btrfs",
        }
    }

    /// The filesystem type name, NUL-terminated, as the kernel stores it.
    pub const fn type_name(self) -> &'static [u8] {
        match self {
            Fs::Ext4 => b"ext4\0",
            Fs::Xfs => b"xfs\0",
            Fs::F2fs => b"f2fs\0",
            Fs::Btrfs => b"btrfs\0",
        }
    }

    /// The field a crash leaves as the file's size, for messages.
    pub const fn disk_size_field(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4_inode_info.i_disksize",
            Fs::Xfs => "xfs_inode.i_disk_size",
            // f2fs_update_inode() copies i_size into the node page the
            // sync writes: what the sync finds in i_size is what lasts.
            Fs::F2fs => "inode.i_size (f2fs writes it into the node page at the sync)",
            // fill_inode_item() copies i_size into the tree log.
            Fs::Btrfs => "inode.i_size (btrfs copies it into the tree log at the sync)",
        }
    }

    /// The kernel step that makes the size durable, for messages.
    pub const fn size_step(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4_mark_inode_dirty",
            Fs::Xfs => "xfs_iomap_write_unwritten/xfs_setfilesize",
            Fs::F2fs => "f2fs_mark_inode_dirty_sync (f2fs_i_size_write)",
            Fs::Btrfs => "btrfs_sync_file logging i_size (raised by btrfs_dio_iomap_begin)",
        }
    }

    /// Does what the sync writes last only by the path it takes? On f2fs a
    /// checkpoint keeps the whole inode as it is, while node pages written
    /// for roll-forward recovery are found again only if every earlier
    /// block of their chain is on disk too ([`crate::record::EVENT_SYNC_ALONE`]):
    /// a write there is judged when its sync has returned, by how it
    /// returned, also where its size update came first. ext4's and XFS's
    /// syncs commit their journal, whatever the path.
    pub const fn sync_path_decides(self) -> bool {
        matches!(self, Fs::F2fs)
    }

    /// Does the sync itself write the size it finds, whatever marked the
    /// inode before? btrfs's fsync copies the in-memory inode, `i_size`
    /// included, into its tree log (`fill_inode_item`), and a full sync
    /// first waits for the write's ordered extent, whose completion writes
    /// `disk_i_size` into the inode item it copies; a transaction commit
    /// in its place waits for that ordered extent too. `i_size` is raised
    /// to the write's end by `btrfs_dio_iomap_begin`, before the I/O and
    /// under the inode lock, so a sync that finds it there makes it last.
    /// f2fs writes `i_size` too, but only into a node page its size update
    /// dirtied: there the size update is the fact, not what the sync finds.
    pub const fn sync_logs_size(self) -> bool {
        matches!(self, Fs::Btrfs)
    }

    /// Does a sync that found `sync_size` in the size field a crash leaves
    /// ([`Fs::disk_size_field`]) make a write ending at `end` last, without
    /// a size update of its own before it ([`Fs::sync_logs_size`])? The
    /// rule both the kernel programs (to settle the write at the sync) and
    /// the verdict apply.
    pub const fn sync_carries_size(self, sync_size: i64, end: i64) -> bool {
        self.sync_logs_size() && sync_size >= end
    }

    /// Does iomap learn which blocks of a direct write are new or
    /// unwritten (`IOMAP_UNWRITTEN`, `IOMAP_F_NEW`)? That is how a write
    /// into fallocated space or a hole is told from an overwrite. btrfs
    /// maps every direct write `IOMAP_MAPPED` and converts preallocated
    /// extents itself, at ordered-extent completion: there such a write
    /// looks like an overwrite and is not counted.
    pub const fn shows_new_blocks(self) -> bool {
        !matches!(self, Fs::Btrfs)
    }

    /// The mount option under which its new files take direct writes as
    /// direct writes: btrfs's `nodatacow` (no data checksums), since from
    /// 6.12 to 6.18 btrfs writes direct writes to checksummed files
    /// through the page cache. What dio-trace's own scratch filesystems
    /// (verify, the test guests) are mounted with.
    pub const fn direct_mount_opt(self) -> Option<&'static str> {
        match self {
            Fs::Btrfs => Some("nodatacow"),
            _ => None,
        }
    }

    /// The kernel's sync for this filesystem, for messages.
    pub const fn sync_step(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4_sync_file",
            Fs::Xfs => "xfs_file_fsync",
            Fs::F2fs => "f2fs_sync_file",
            Fs::Btrfs => "btrfs_sync_file",
        }
    }
}
