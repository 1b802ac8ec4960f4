//! Helpers shared by the integration tests (each test file is its own
//! crate and includes this module).

use std::path::PathBuf;

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
        if std::env::var_os("CI").is_some() {
            panic!("{test}: `{name}` is missing ({from}; `cargo xtask setup` installs it)");
        }
        eprintln!("SKIPPED {test}: `{name}` is missing ({from})");
    }
    found
}
