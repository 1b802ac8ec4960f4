//! dio-trace: watch how the kernel completes direct-I/O writes and flag any
//! sync that runs before the size update of a size-extending write.
//!
//! Phases, each its own module: `plan` (arguments checked against the
//! system) -> `kernel::facts` (offsets, flag bits, symbols) -> `loader`
//! (programs in, no attaching) -> `attach` (one owner of every link;
//! dropping it detaches) -> `collect` (ring buffer to engine inputs) ->
//! `analysis` (pure verdicts) -> `report` (human, NDJSON).

pub mod analysis;
pub mod attach;
pub mod cli;
pub mod collect;
pub mod commands;
pub mod crash;
pub mod docs;
pub mod error;
pub mod exit;
pub mod info;
pub mod kernel;
pub mod layout;
pub mod loader;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod probes;
pub mod procs;
pub mod replay;
pub mod report;
pub mod scratch;
pub mod session;
pub mod spawn;
pub mod trace;
pub mod verify;
pub mod workload;
