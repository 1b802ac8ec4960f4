//! Records shared by the kernel programs (`dio-trace-ebpf`) and user space.
//!
//! Layout only, no policy: every type here is `#[repr(C)]`, carries explicit
//! padding, and has its size checked at compile time so both sides agree.
//! Bump [`FORMAT_VERSION`] whenever a layout or a kind number changes: trace
//! files carry it and readers refuse versions they do not know.
#![no_std]

pub mod arm;
pub mod config;
pub mod counters;
pub mod crash;
pub mod fs;
pub mod kind;
pub mod ordered;
pub mod probe;
pub mod record;
pub mod verdict;

#[cfg(feature = "user")]
mod user;

/// Version of the record layouts in this crate (and of trace files).
pub const FORMAT_VERSION: u32 = 4;

/// The oldest trace format this version still reads (1 lacks `Write`
/// records; 1 and 2 know ext4 only; 1 to 3 lack `Settled` records).
pub const OLDEST_FORMAT_VERSION: u32 = 1;
