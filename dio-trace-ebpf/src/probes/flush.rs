//! The flush of a CPU's batch of settled writes (`emit::batched`), which
//! user space runs on each CPU at every tick (`BPF_PROG_TEST_RUN` with
//! `BPF_F_TEST_RUN_ON_CPU`, Linux 5.10+): a CPU that went idle would
//! otherwise hold its last writes until the session ends.
//!
//! A raw tracepoint program only because that is the type the kernel runs
//! on a chosen CPU; it is never attached. It runs in an interrupt on that
//! CPU, so it may land in the middle of a program that is filling the
//! batch: then it leaves the batch alone until the next tick.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::{emit::send_batch, maps::BATCH};

#[raw_tracepoint(tracepoint = "dio_trace_flush")]
pub fn flush_batch(_ctx: RawTracePointContext) -> i32 {
    let Some(b) = BATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU map value, valid while the program runs; `busy`
    // keeps every other program on this CPU out until it is cleared.
    unsafe {
        if (*b).busy != 0 {
            return 1;
        }
        (*b).busy = 1;
        send_batch(b);
        (*b).busy = 0;
    }
    0
}
