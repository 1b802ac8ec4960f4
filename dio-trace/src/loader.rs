//! The embedded object, loaded with this kernel's facts. No attaching here.

use aya::{Ebpf, EbpfLoader};
use dio_trace_common::config::{CONFIG_DEBUG, CONFIG_GLOBAL, Config, LOG_LEVEL_DEBUG, LOG_LEVEL_GLOBAL};

use crate::error::LoadError;

/// The kernel programs, built by build.rs and carried inside the binary.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dio-trace"));

/// Map names (declared in dio-trace-ebpf/src/maps.rs).
pub const EVENTS_MAP: &str = "EVENTS";
pub const COUNTERS_MAP: &str = "COUNTERS";
pub const FOLLOW_MAP: &str = "FOLLOW";
pub const ARMED_MAP: &str = "ARMED";
pub const CGROUPS_MAP: &str = "CGROUPS";

/// Create the maps and parse the programs with `config` baked in, and a
/// ring buffer of `ringbuf_bytes` that wakes user space a quarter full.
pub fn load(config: &Config, ringbuf_bytes: u32) -> Result<Ebpf, LoadError> {
    let config = Config {
        wake_bytes: ringbuf_bytes / 4,
        ..*config
    };
    // Off, every aya-log call site is dead code the verifier drops.
    let log_level: u8 = if config.flags & CONFIG_DEBUG != 0 {
        LOG_LEVEL_DEBUG
    } else {
        0
    };
    EbpfLoader::new()
        .override_global(CONFIG_GLOBAL, &config, true)
        .override_global(LOG_LEVEL_GLOBAL, &log_level, true)
        .map_max_entries(EVENTS_MAP, ringbuf_bytes)
        .load(OBJECT)
        .map_err(|source| LoadError::Object {
            release: crate::kernel::release(),
            source: Box::new(source),
        })
}
