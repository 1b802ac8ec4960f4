//! dio-trace's kernel programs.
//!
//! Each probe family lives in `probes/<family>.rs` as thin entry points (one
//! per mechanism) that call a shared `try_*` body in `facts.rs`/`emit.rs`;
//! whatever mechanism serves a probe, the records that leave are the same.
#![no_std]
#![no_main]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]

mod emit;
mod facts;
mod maps;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL: tracing programs call GPL-only helpers (`bpf_probe_read_kernel`).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
