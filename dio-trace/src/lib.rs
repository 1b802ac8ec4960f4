//! dio-trace: watch how the kernel completes direct-I/O writes and flag any
//! sync that runs before the size update of a size-extending write.
//!
//! Phases, each its own module: `plan` (arguments checked against kernel
//! facts) -> `loader` (programs in, no attaching) -> `attach` (one owner of
//! every link; dropping it detaches) -> `collect` (ring buffer to decoded
//! records) -> `analysis` (pure verdicts) -> `report` (human, NDJSON).

pub mod analysis;
pub mod kernel;
