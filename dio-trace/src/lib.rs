//! dio-trace: user space.
