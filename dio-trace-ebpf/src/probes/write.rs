//! The start of a direct write: decide whether it is counted and arm it.
//!
//! Tracepoint `iomap:iomap_dio_rw_begin(struct kiocb *, struct iov_iter *,
//! unsigned int dio_flags, size_t done_before)`, Linux 6.4+; before that,
//! the entry of `iomap_dio_rw` with the same two first arguments.

use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task};
use aya_ebpf::{
    macros::{btf_tracepoint, fentry, kprobe},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext},
};
use aya_log_ebpf::debug;
use dio_trace_common::{
    arm::{ARM_SENT, ArmedWrite, InodeKey},
    config::{CONFIG_CGROUP_IDS, FS_KNOWN, IocbBits},
    counters::Counter,
    fs::Fs,
    kind::RecordKind,
    probe::Mechanism,
    record::{EVENT_DSYNC, EVENT_FS_SHIFT, EVENT_SYNC},
};

use crate::{
    emit::{Fact, cgroup_record, full_timeline, header, inode_event, path_record, retire, send_write},
    facts::{
        Sizes, Via, debug_on, dir_mask, file_inode, fs_facts, fs_name, fs_of, inode_key, inode_sb, iocb_file,
        iocb_layout, read, sizes,
    },
    maps::{
        ARMED, CGROUP_SENT, PATH_SENT, PENDING_SCRATCH, Pending, SCRATCH, cgroup_epoch, cgroup_epoch_bump,
        config, count, filter_add, pending_insert, pending_remove,
    },
    probes::{armed, fallback, task_passes},
};

/// `BPF_NOEXIST`: insert only if the key is new.
const BPF_NOEXIST: u64 = 1;

#[btf_tracepoint(function = "iomap_dio_rw_begin")]
pub fn tp_iomap_dio_rw_begin(ctx: BtfTracePointContext) -> i32 {
    try_write_begin(ctx.arg(0), ctx.arg(1), Mechanism::Tracepoint, true);
    0
}

/// `iomap_dio_rw(struct kiocb *, struct iov_iter *, ...)`: every kernel
/// with iomap direct I/O (5.5+), also those without the tracepoint.
#[fentry(function = "iomap_dio_rw")]
pub fn fentry_iomap_dio_rw(ctx: FEntryContext) -> i32 {
    try_write_begin(ctx.arg(0), ctx.arg(1), Mechanism::Fentry, true);
    0
}

/// `__iomap_dio_rw`: what `iomap_dio_rw` calls, and what f2fs calls
/// directly (with `iomap_dio_complete` after it), so one hook sees the
/// direct writes of every iomap filesystem.
#[fentry(function = "__iomap_dio_rw")]
pub fn fentry_iomap_dio_rw_core(ctx: FEntryContext) -> i32 {
    try_write_begin(ctx.arg(0), ctx.arg(1), Mechanism::Fentry, true);
    0
}

#[kprobe]
pub fn kprobe_iomap_dio_rw_core(ctx: ProbeContext) -> u32 {
    if let (Some(iocb), Some(iter)) = (ctx.arg(0), ctx.arg(1)) {
        try_write_begin(iocb, iter, Mechanism::Kprobe, true);
    }
    0
}

/// `ext4_file_write_iter(struct kiocb *, struct iov_iter *)`: for fentry
/// where `iomap_dio_rw` cannot be traced (7 arguments: BPF trampolines
/// took at most 6 before 6.x). Buffered writes pass here too and leave at
/// the `IOCB_DIRECT` test.
#[fentry(function = "ext4_file_write_iter")]
pub fn fentry_ext4_file_write_iter(ctx: FEntryContext) -> i32 {
    try_write_begin(ctx.arg(0), ctx.arg(1), Mechanism::Fentry, false);
    0
}

#[kprobe]
pub fn kprobe_iomap_dio_rw(ctx: ProbeContext) -> u32 {
    if let (Some(iocb), Some(iter)) = (ctx.arg(0), ctx.arg(1)) {
        try_write_begin(iocb, iter, Mechanism::Kprobe, true);
    }
    0
}

/// A write is counted when it is direct, sync-flavoured (`IOCB_DSYNC`,
/// which the kernel also sets for `O_SYNC` and `IS_SYNC` inodes), on a
/// filesystem whose facts the loader read, and ends past the smaller of
/// `i_size` and the on-disk size (ext4's own test for an extending write,
/// `ext4_extending_io`; XFS's `xfs_dio_write_end_io` updates the on-disk
/// size exactly then). The cheap tests come first: a
/// direct write without sync semantics, the common case on busy hosts,
/// costs three reads and a counter.
///
/// `settled`: the hook runs after the kernel fixed the write's position
/// (`iomap_dio_rw`); at a `write_iter` entry an `O_APPEND`/`RWF_APPEND`
/// write is still at the caller's position, and the kernel will move it to
/// the end of the file.
#[inline(always)]
pub fn try_write_begin(iocb: *const u8, iter: *const u8, mechanism: Mechanism, settled: bool) {
    let via = Via::of(mechanism);
    let Ok(file) = iocb_file(via, iocb) else {
        count(Counter::ReadFailed);
        return;
    };
    let (Ok(ki_flags), Ok(f_flags)) = (
        read::<u32>(via, iocb, config!(offsets.kiocb_ki_flags)),
        read::<u32>(via, file, config!(offsets.file_f_flags)),
    ) else {
        count(Counter::ReadFailed);
        return;
    };
    // O_DIRECT is where the kernel's IOCB_DIRECT comes from.
    if f_flags & config!(open.direct) == 0 {
        return;
    }
    let Ok(dir) = read::<u8>(via, iter, config!(offsets.iov_iter_dir)) else {
        count(Counter::ReadFailed);
        return;
    };
    if u32::from(dir) & dir_mask() == 0 {
        return; // a direct read
    }
    if !task_passes() {
        count(Counter::Filtered);
        return;
    }
    count(Counter::DirectWrites);
    let Some((bits, ki_flags)) = classify(via, file, ki_flags, f_flags) else {
        count(Counter::FlagsUnknown);
        debug!(
            &(),
            "direct write not classified: ki_flags {:x} fit no known layout for open flags {:x}",
            ki_flags,
            f_flags
        );
        return;
    };
    let ki_flags = if ki_flags & bits.dsync == 0 && btrfs_took_dsync(via, file) {
        ki_flags | bits.dsync
    } else {
        ki_flags
    };
    if ki_flags & bits.dsync == 0 {
        count(Counter::NotSync);
        debug!(
            &(),
            "direct write not counted: not sync-flavoured (ki_flags {:x} lacks IOCB_DSYNC {:x}; open flags {:x})",
            ki_flags,
            bits.dsync,
            f_flags
        );
        return;
    }
    let Ok(inode) = file_inode(via, file) else {
        count(Counter::ReadFailed);
        return;
    };
    let Ok(sb) = inode_sb(via, inode) else {
        count(Counter::ReadFailed);
        return;
    };
    let Ok(key) = inode_key(via, inode, sb) else {
        count(Counter::ReadFailed);
        return;
    };
    let dev_filter = config!(filter.dev);
    if dev_filter != 0 && key.dev != dev_filter {
        count(Counter::Filtered);
        debug!(
            &(),
            "sync direct write filtered: dev {}:{} is not --dev",
            key.dev >> 20,
            key.dev & 0xfffff
        );
        return;
    }
    let fs = match fs_of(via, sb) {
        Ok(Some(fs)) => fs,
        Ok(None) => {
            count(Counter::OtherFs);
            if debug_on() {
                let name = fs_name(via, sb);
                let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                // SAFETY: only shown; a filesystem type name is ASCII.
                let name = unsafe { core::str::from_utf8_unchecked(&name[..len]) };
                debug!(
                    &(),
                    "sync direct write not judged: dio-trace has no facts for filesystem {} (dev {}:{} ino {})",
                    name,
                    key.dev >> 20,
                    key.dev & 0xfffff,
                    key.ino
                );
            }
            return;
        }
        Err(_) => {
            count(Counter::ReadFailed);
            return;
        }
    };
    if fs == Fs::Btrfs {
        fallback::note_direct(inode as u64);
    }
    if fs_facts(fs).flags & FS_KNOWN == 0 {
        count(Counter::NoFsFacts);
        debug!(
            &(),
            "sync direct write not judged: {}'s facts are missing (not loaded when dio-trace started, or no BTF for it) (dev {}:{} ino {})",
            fs.name(),
            key.dev >> 20,
            key.dev & 0xfffff,
            key.ino
        );
        return;
    }
    let mut pos: i64 = read(via, iocb, config!(offsets.kiocb_ki_pos)).unwrap_or(-1);
    let len: u64 = read(via, iter, config!(offsets.iov_iter_count)).unwrap_or(0);
    let sz = sizes(via, inode, fs);
    if !settled && ki_flags & bits.append != 0 {
        // Where generic_write_checks() will put it. Another appender may
        // still grow the file first: the completion corrects the position
        // (`complete.rs`), and the end only moves further out.
        pos = sz.i_size;
    }
    let end = pos.wrapping_add(len as i64);
    let on_disk = if sz.i_disksize < sz.i_size {
        sz.i_disksize
    } else {
        sz.i_size
    };
    let addr = inode as u64;
    let id = bpf_get_current_pid_tgid();
    let generation = read::<u32>(via, inode, config!(offsets.inode_i_generation)).unwrap_or(0);
    // The file's dentry names it in the path record, sent once per file:
    // read when needed, not for every write.
    let dentry = || {
        read::<*const u8>(Via::Probe, file, config!(offsets.file_f_path_dentry)).unwrap_or(core::ptr::null())
    };
    let mut flags = EVENT_DSYNC | (fs as u32) << EVENT_FS_SHIFT;
    if ki_flags & bits.sync != 0 {
        flags |= EVENT_SYNC;
    }
    if pos < 0 || end <= on_disk {
        count(Counter::NotExtending);
        debug!(
            &(),
            "sync direct write not counted: ino {} pos {} len {} ends within min(i_size {}, i_disksize {})",
            key.ino,
            pos,
            len,
            sz.i_size,
            sz.i_disksize
        );
        // A later write supersedes whatever this inode was armed for.
        if let Some(old) = armed(via, inode) {
            retire(old);
        }
        // Counted after all if it goes into new or unwritten blocks
        // (`extent.rs`): the kernel maps it next.
        if pos >= 0
            && len > 0
            && let Some(pending) = PENDING_SCRATCH.get_ptr_mut(0)
        {
            // Filled in per-CPU scratch, not on the stack: the write start's
            // frame is near the verifier's 512 bytes on 6.1 fentry.
            // SAFETY: per-CPU scratch, only this program run uses it.
            unsafe {
                *pending = Pending {
                    inode: addr,
                    dentry: dentry() as u64,
                    key,
                    pos,
                    len,
                    i_size: sz.i_size,
                    i_disksize: sz.i_disksize,
                    size_flags: sz.flags,
                    ki_flags,
                    flags,
                    mechanism: mechanism as u32,
                    generation,
                    _pad: 0,
                };
                // By reference: by value would copy it onto the stack.
                pending_insert(id, &*pending);
            }
        }
        return;
    }
    pending_remove(id);
    count_write(
        Counted {
            addr,
            end,
            key,
            pos,
            len,
            ki_flags,
            flags,
            state: 0,
            generation,
            mechanism,
        },
        &sz,
        dentry,
    );
}

/// The write's `ki_flags` layout, and its flags as the write means them.
/// btrfs before 5.16 clears `IOCB_DSYNC` before iomap (its own sync after
/// the write would deadlock inside iomap's) and syncs once iomap is done:
/// on btrfs a direct write that fits a layout only without its file's
/// sync bits is the sync-flavoured write its file says.
#[inline(always)]
fn classify(via: Via, file: *const u8, ki_flags: u32, f_flags: u32) -> Option<(IocbBits, u32)> {
    if let Some(bits) = iocb_layout(ki_flags, f_flags) {
        return Some((bits, ki_flags));
    }
    let (dsync, sync) = (config!(open.dsync), config!(open.sync));
    let bits = iocb_layout(ki_flags, f_flags & !(dsync | sync))?;
    if !on_btrfs(via, file) {
        return None;
    }
    let meant = if f_flags & sync != 0 {
        bits.dsync | bits.sync
    } else {
        bits.dsync
    };
    Some((bits, ki_flags | meant))
}

/// Is this a sync direct write btrfs took `IOCB_DSYNC` off (before 5.16)?
/// It does so for `RWF_DSYNC` and aio writes too, whose file's flags say
/// nothing, and leaves a stub in `current->journal_info` meanwhile
/// (`BTRFS_DIO_SYNC_STUB`, a small number, never a pointer) for its own
/// sync once iomap is done. Read only where btrfs's facts are known.
#[inline(always)]
fn btrfs_took_dsync(via: Via, file: *const u8) -> bool {
    let off = config!(offsets.task_struct_journal_info);
    if off == 0 || fs_facts(Fs::Btrfs).flags & FS_KNOWN == 0 {
        return false;
    }
    // SAFETY: the helper only returns the current task's address.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let Ok(stub) = read::<u64>(Via::Probe, task, off) else {
        return false;
    };
    stub != 0 && stub < 4096 && on_btrfs(via, file)
}

/// Is `file` on btrfs? For the two rare paths above only: the write start
/// proper reads the filesystem once, later, for every counted write.
#[inline(always)]
fn on_btrfs(via: Via, file: *const u8) -> bool {
    file_inode(via, file)
        .and_then(|i| inode_sb(via, i))
        .is_ok_and(|sb| fs_of(via, sb) == Ok(Some(Fs::Btrfs)))
}

/// What makes a write counted, for [`count_write`].
pub struct Counted {
    /// The inode's address.
    pub addr: u64,
    /// The size a sync must find journaled.
    pub end: i64,
    pub key: InodeKey,
    pub pos: i64,
    pub len: u64,
    pub ki_flags: u32,
    /// `EVENT_*` bits of the begin.
    pub flags: u32,
    /// `ARM_*` bits it starts with.
    pub state: u32,
    pub generation: u32,
    pub mechanism: Mechanism,
}

/// Arm a counted write and send its file's path if not sent yet (from
/// the dentry `dentry` returns, asked only then).
#[inline(always)]
pub fn count_write(w: Counted, sz: &Sizes, dentry: impl FnOnce() -> *const u8) {
    let Some(entry) = arm(&w, sz) else {
        count(Counter::ArmFailed);
        debug!(
            &(),
            "counted write on ino {} could not be armed (map full)", w.key.ino
        );
        return;
    };
    count(Counter::Armed);
    send_cgroup(w.mechanism, entry);
    if full_timeline() {
        inode_event(
            entry,
            sz,
            Fact {
                kind: RecordKind::WriteBegin,
                mechanism: w.mechanism,
                pos: w.pos,
                len: w.len,
                arg: w.ki_flags as u64,
                flags: w.flags,
            },
            // SAFETY: map value pointer, valid while the program runs.
            unsafe { (*entry).rec.begin.header.ts_ns },
        );
    }
    if entry_knows_path(entry, w.key, w.generation) {
        return;
    }
    // SAFETY: read-only copy of a plain value.
    if unsafe { PATH_SENT.get(w.key) }.copied() != Some(w.generation) {
        let dentry = dentry();
        if dentry.is_null() {
            return;
        }
        path_record(dentry, w.mechanism, entry);
        let _ = PATH_SENT.insert(w.key, w.generation, 0);
    }
    // SAFETY: map value pointer, valid while the program runs.
    unsafe {
        (*entry).path_ino = w.key.ino;
        (*entry).path_dev = w.key.dev;
        (*entry).path_gen = w.generation;
    }
}

/// The writer's cgroup, unless this process's current one was sent already.
#[inline(always)]
fn send_cgroup(mechanism: Mechanism, entry: *mut ArmedWrite) {
    if config!(flags) & CONFIG_CGROUP_IDS != 0 {
        send_cgroup_once(mechanism, entry);
    }
}

/// Not inlined: a BPF subprogram, whose stack is its own, not added to the
/// write start's, which is near the verifier's 512-byte limit on 6.1.
/// The entry remembers whose cgroup it found sent: a process appending to
/// its own file, the common case, then skips the [`CGROUP_SENT`] lookup
/// as long as no cgroup record went out since.
#[inline(never)]
fn send_cgroup_once(mechanism: Mechanism, entry: *mut ArmedWrite) {
    // SAFETY: map value pointer, valid while the program runs (the writer,
    // as the record's header has it); a helper without preconditions.
    let (tgid, cgroup) = unsafe { ((*entry).rec.begin.header.tgid, bpf_get_current_cgroup_id()) };
    // SAFETY: as above. What an ordered write is counted under, whether
    // its cgroup record goes out or not.
    unsafe { (*entry).cg_write = cgroup };
    let epoch = cgroup_epoch();
    // SAFETY: map value pointer, valid while the program runs.
    unsafe {
        if (*entry).cg_tgid == tgid && (*entry).cg_id == cgroup && (*entry).cg_epoch == epoch {
            return;
        }
    }
    // SAFETY: read-only copy of a plain value.
    let sent = unsafe { CGROUP_SENT.get(tgid) }.copied() == Some(cgroup);
    if !sent {
        if !cgroup_record(cgroup, mechanism, entry) {
            return;
        }
        let _ = CGROUP_SENT.insert(tgid, cgroup, 0);
        cgroup_epoch_bump();
    }
    // SAFETY: as above. After a record of ours, the count read before it
    // is already stale: the next write looks up once more.
    unsafe {
        (*entry).cg_tgid = tgid;
        (*entry).cg_id = cgroup;
        (*entry).cg_epoch = epoch;
    }
}

/// Did this entry's last write find this file's path sent (this inode
/// number, this generation)? A file written again, the common case, then
/// costs no [`PATH_SENT`] lookup.
#[inline(always)]
fn entry_knows_path(entry: *const ArmedWrite, key: InodeKey, generation: u32) -> bool {
    // SAFETY: map value pointer, valid while the program runs.
    unsafe { (*entry).path_ino == key.ino && (*entry).path_dev == key.dev && (*entry).path_gen == generation }
}

/// The task's name, written by the helper straight into `dst` (a map
/// value): aya's `bpf_get_current_comm` first zeroes a stack buffer in a
/// byte loop, then the caller copies it, which is a tenth of a write
/// start's instructions. The kernel pads the name with NULs, and zeroes
/// all 16 bytes when it has no task: `dst` needs no clearing first.
#[inline(always)]
fn comm_into(dst: *mut [u8; 16]) {
    // SAFETY: `dst` is 16 writable bytes; the helper writes at most that.
    unsafe { aya_ebpf::helpers::generated::bpf_get_current_comm(dst.cast(), 16) };
}

/// Arm the write in its inode's entry. A file written again, the common
/// case, finds its entry still in the map and reuses it: no insert. An
/// entry not yet sent is a write that never finished (an attempt the
/// kernel abandoned and retried, or one that failed before completing): it
/// is sent as far as it got first. A new entry goes in blank, from per-CPU
/// scratch, and is filled in place like a reused one.
// Entries go in by reference: by value would copy 312 bytes onto the
// 512-byte BPF stack.
#[allow(clippy::needless_borrows_for_generic_args)]
#[inline(always)]
fn arm(w: &Counted, sz: &Sizes) -> Option<*mut ArmedWrite> {
    let addr = w.addr;
    let entry = match ARMED.get_ptr_mut(addr) {
        Some(old) => {
            // SAFETY: map value pointer, valid while the program runs.
            unsafe {
                if (*old).state & ARM_SENT == 0 {
                    if !full_timeline() {
                        send_write(old);
                    }
                    // Counted under its own number, which a reused inode
                    // address need not share.
                    filter_add((*old).rec.begin.ino, -1);
                }
                // Probes skip it until it is filled.
                (*old).state = ARM_SENT;
            }
            old
        }
        None => {
            let scratch = SCRATCH.get_ptr_mut(0)?;
            // SAFETY: per-CPU scratch, only this program run uses it.
            unsafe { (*scratch).state = ARM_SENT };
            // SAFETY: as above.
            ARMED.insert(addr, unsafe { &*scratch }, BPF_NOEXIST).ok()?;
            ARMED.get_ptr_mut(addr)?
        }
    };
    filter_add(w.key.ino, 1);
    // SAFETY: map value pointer, valid while the program runs; the steps
    // need only their timestamps cleared ("not seen"); the state goes last.
    unsafe {
        (*entry).end = w.end;
        // Field by field: a struct literal would zero `comm` first, in a
        // byte-loop `memset` subprogram, only for the helper to overwrite it.
        let b = &raw mut (*entry).rec.begin;
        (*b).header = header(RecordKind::Write, w.mechanism, 0);
        (*b).dev = w.key.dev;
        (*b).flags = w.flags | sz.flags;
        (*b).ino = w.key.ino;
        (*b).i_size = sz.i_size;
        (*b).i_disksize = sz.i_disksize;
        (*b).pos = w.pos;
        (*b).len = w.len;
        (*b).arg = w.ki_flags as u64;
        comm_into(&raw mut (*b).comm);
        (*entry).rec.size.ts_ns = 0;
        (*entry).rec.sync.ts_ns = 0;
        (*entry).rec.complete.ts_ns = 0;
        (*entry).state = w.state;
    }
    Some(entry)
}
