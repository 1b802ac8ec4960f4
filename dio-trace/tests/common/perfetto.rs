//! Decoding `--perfetto` output with Perfetto's own schema, for the tests
//! that check it (`perfetto.rs`, `live_host.rs`).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// The venv's Python: `DIO_TRACE_PERFETTO_PYTHON`, else the one `cargo
/// xtask setup` made under the cache. `None` (SKIPPED, or a failure under
/// CI) when it cannot decode Perfetto traces.
pub fn python(test: &str) -> Option<PathBuf> {
    let py = std::env::var_os("DIO_TRACE_PERFETTO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("DIO_TRACE_CACHE")
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from("/var/cache/dio-trace"), PathBuf::from);
            cache.join("py-perfetto/bin/python")
        });
    super::required_at(
        test,
        py,
        "the perfetto PyPI package in a venv under the kernel cache",
    )
}

/// The packets of a Perfetto trace file, decoded by `perfetto_dump.py`;
/// panics when Perfetto's schema refuses it.
pub fn decode(py: &Path, trace: &Path) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/perfetto_dump.py");
    let dump = Command::new(py).arg(script).arg(trace).output().unwrap();
    assert!(
        dump.status.success(),
        "Perfetto's schema refused {}: {}",
        trace.display(),
        String::from_utf8_lossy(&dump.stderr)
    );
    serde_json::from_slice(&dump.stdout).unwrap()
}
