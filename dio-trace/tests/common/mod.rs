//! Helpers shared by the integration tests (each test file is its own
//! crate and includes this module, and uses a part of it).
#![allow(dead_code)]

pub mod perfetto;

use std::path::{Path, PathBuf};

/// A program the tests run (from a Debian or PyPI package that `cargo
/// xtask setup` installs): its path, or None after saying SKIPPED; under
/// CI (`CI` set) its absence fails instead. `from` says where it comes from.
pub fn required_tool(test: &str, name: &str, from: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        missing(test, &format!("`{name}` is missing ({from})"));
    }
    found
}

/// A program at a fixed place (a venv's Python), as [`required_tool`].
pub fn required_at(test: &str, path: PathBuf, from: &str) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path);
    }
    missing(test, &format!("{} is missing ({from})", path.display()));
    None
}

/// Say why a test cannot run: SKIPPED, or a failure under CI.
pub fn missing(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why}; CI's machine must have it (`cargo xtask setup` installs what it can)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// A recorded trace or its live NDJSON, from `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}
