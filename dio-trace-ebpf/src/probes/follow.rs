//! `dio-trace run -- CMD` and `--pid`: children of a followed process are
//! followed too, from the moment they are forked.
//!
//! Tracepoint `sched:sched_process_fork(struct task_struct *parent,
//! struct task_struct *child)`; it runs in the parent.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext};
use dio_trace_common::probe::Mechanism;

use crate::{
    facts::{Via, read},
    maps::{FOLLOW, config},
};

#[btf_tracepoint(function = "sched_process_fork")]
pub fn tp_sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let child: *const u8 = ctx.arg(1);
    try_follow_fork(child);
    0
}

#[inline(always)]
pub fn try_follow_fork(child: *const u8) {
    if config!(filter.follow) == 0 {
        return;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: read-only lookup of a plain u8 value.
    if unsafe { FOLLOW.get(tgid) }.is_none() {
        return;
    }
    if let Ok(pid) = read::<i32>(
        Via::of(Mechanism::Tracepoint),
        child,
        config!(offsets.task_struct_pid),
    ) {
        let _ = FOLLOW.insert(pid as u32, 1, 0);
    }
}
