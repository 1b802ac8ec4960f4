//! Which kernel hook serves each fact, and how each was chosen.

pub mod catalog;
pub mod select;
