//! The ordering verdict, in plain Rust: events in, findings out, no I/O.
//!
//! Live tracing and trace replay feed exactly this code, so a recorded trace
//! gets the verdict the live run gave.

pub mod engine;
pub mod event;
pub mod judge;
pub mod summary;

pub use engine::{Engine, EngineConfig};
pub use event::{Comm, Event, Frame, Input, Stack};
pub use judge::{Coverage, FsCoverage, Verdict, ViolationKind};
pub use summary::{Overall, Summary};
