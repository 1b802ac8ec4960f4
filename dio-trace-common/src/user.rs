//! User-space extras: the loader passes these as globals, so they must be `Pod`.

use crate::config::Config;

// SAFETY: `Config` is `#[repr(C)]`, `Copy`, made only of integers and byte
// arrays, with explicit padding: every bit pattern is valid.
unsafe impl aya::Pod for Config {}
