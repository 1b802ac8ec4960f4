//! One file per probe family. Each has a `try_*` body that takes the raw
//! kernel pointers, and thin entry points per mechanism that only unpack
//! their context and call it.

pub mod complete;
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
    let n = config!(filter.comm_len) as usize;
    if n > 0 {
        let want = config!(filter.comm);
        let comm = bpf_get_current_comm().unwrap_or([0; 16]);
        let mut i = 0;
        while i < 16 {
            if i < n && comm[i] != want[i] {
                return false;
            }
            i += 1;
        }
    }
    let levels = config!(filter.cgroup_levels);
    if levels != 0 {
        return in_kept_cgroup(levels);
    }
    true
}

/// Is the current task in (or below) one of the `--cgroup` directories?
/// Only the levels those directories sit at are looked at: with `--cgroup`
/// off this is dead code the verifier drops, so kernels whose tracing
/// programs lack `bpf_get_current_ancestor_cgroup_id` (before 5.10) load
/// as before.
#[inline(always)]
fn in_kept_cgroup(levels: u32) -> bool {
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
