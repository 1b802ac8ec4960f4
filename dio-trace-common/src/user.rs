//! User-space extras: the loader passes these as globals, so they must be `Pod`.

use crate::{arm::ArmedWrite, config::Config, counters::CounterSlots, ordered::OrderedKey, record::CpuBatch};

// SAFETY: `Config` is `#[repr(C)]`, `Copy`, made only of integers and byte
// arrays, with explicit padding: every bit pattern is valid.
unsafe impl aya::Pod for Config {}

// SAFETY: as above; user space reads the armed map's values at the end of a
// session (writes still in flight).
unsafe impl aya::Pod for ArmedWrite {}

// SAFETY: as above; user space reads the per-CPU counters.
unsafe impl aya::Pod for CounterSlots {}

// SAFETY: as above; user space reads the per-CPU batches left at the end of
// a session.
unsafe impl aya::Pod for CpuBatch {}

// SAFETY: as above; user space reads the kernel's ordered-write counts.
unsafe impl aya::Pod for OrderedKey {}
