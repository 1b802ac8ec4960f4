#![no_std]
// This file exists to enable the library target (dio-trace's build.rs
// depends on this package to get rebuilt when it changes).
