//! One file per probe family. Each has a `try_*` body that takes the raw
//! kernel pointers, and thin entry points per mechanism that only unpack
//! their context and call it.

pub mod complete;
pub mod extent;
pub mod fallback;
pub mod flush;
pub mod follow;
pub mod size;
pub mod sync;
pub mod write;

use aya_ebpf::helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid};
use dio_trace_common::arm::{ARM_SENT, ArmedWrite};

use crate::{
    facts::{Via, read},
    maps::{ARMED, CGROUPS, FOLLOW, config, maybe_armed},
};

/// Does the current task pass the pid/comm/cgroup filters?
#[inline(always)]
pub fn task_passes() -> bool {
    if config!(filter.follow) != 0 {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        // SAFETY: read-only lookup of a plain u8 value.
        if unsafe { FOLLOW.get(tgid) }.is_none() {
            return false;
        }
    }
    let n = config!(filter.comm_len);
    if n > 0 && !comm_matches(n) {
        return false;
    }
    config!(filter.cgroup_levels) == 0 || in_kept_cgroup()
}

/// `--comm`: the task's name agrees with the wanted one in its first `n`
/// bytes (the NUL included: an exact match). Compared as two words, not
/// byte by byte: a byte loop spills every byte to the stack, and the write
/// start's frame is near the verifier's 512-byte limit on 6.1.
#[inline(always)]
fn comm_matches(n: u32) -> bool {
    let have = bpf_get_current_comm().unwrap_or([0; 16]);
    let have = [
        u64::from_le_bytes([
            have[0], have[1], have[2], have[3], have[4], have[5], have[6], have[7],
        ]),
        u64::from_le_bytes([
            have[8], have[9], have[10], have[11], have[12], have[13], have[14], have[15],
        ]),
    ];
    let want = |i: usize| -> u64 {
        // SAFETY: reads inside the config global; `comm` sits at a 4-byte
        // aligned offset (`Filter` is all u32s before it). Volatile, as
        // `config!` reads, for the loader's value.
        let word = |j: usize| unsafe {
            core::ptr::read_volatile(
                core::ptr::addr_of!(crate::maps::DIO_CONFIG.filter.comm)
                    .cast::<u32>()
                    .add(j),
            )
        };
        u64::from(word(2 * i)) | u64::from(word(2 * i + 1)) << 32
    };
    let mask = |bytes: u32| -> u64 {
        if bytes >= 8 {
            u64::MAX
        } else {
            (1u64 << (bytes * 8)) - 1
        }
    };
    (have[0] ^ want(0)) & mask(n) == 0 && (have[1] ^ want(1)) & mask(n.saturating_sub(8)) == 0
}

/// Is the current task in (or below) one of the `--cgroup` directories?
/// Only the levels those directories sit at are looked at: with `--cgroup`
/// off this is dead code the verifier drops, so kernels whose tracing
/// programs lack `bpf_get_current_ancestor_cgroup_id` (before 5.10) load
/// as before. Not inlined: a BPF subprogram, whose loop keeps its stack
/// out of the write start's (near the verifier's 512 bytes on 6.1).
#[inline(never)]
fn in_kept_cgroup() -> bool {
    let levels = config!(filter.cgroup_levels);
    let mut level = 0;
    while level < 32 {
        if levels & (1 << level) != 0 {
            // SAFETY: helper without preconditions; 0 when the task's
            // cgroup is above this level.
            let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
            // SAFETY: read-only lookup of a plain u8 value.
            if id != 0 && unsafe { CGROUPS.get(id) }.is_some() {
                return true;
            }
        }
        level += 1;
    }
    false
}

/// The armed entry of an inode (by address), if a counted write to it is
/// in flight: the first and, for unarmed inodes, only thing every probe but
/// the write's start does.
#[inline(always)]
pub fn armed(via: Via, inode: *const u8) -> Option<*mut ArmedWrite> {
    let ino: u64 = read(via, inode, config!(offsets.inode_i_ino)).ok()?;
    if !maybe_armed(ino) {
        return None;
    }
    let entry = ARMED.get_ptr_mut(inode as u64)?;
    // SAFETY: map value pointer, valid while the program runs.
    (unsafe { (*entry).state } & ARM_SENT == 0).then_some(entry)
}
