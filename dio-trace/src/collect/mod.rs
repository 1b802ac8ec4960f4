//! From the kernel's ring buffer and counters to engine inputs.

pub mod batch;
pub mod counters;
pub mod decode;
pub mod feed;
pub mod hold;
pub mod kernel_log;
pub mod ordered;
pub mod paths;
pub mod ringbuf;
