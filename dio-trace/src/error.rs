//! Error types whose kind decides the exit status (see `exit.rs`).

use thiserror::Error;

/// The command line asked for something impossible (exit 2).
#[derive(Debug, Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The job cannot be done here: privileges, kernel, filesystem, unreadable
/// input (exit 4). Carries the cause and the fix.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct EnvError(pub String);

impl EnvError {
    /// A failed environment check, its whole context chain on one line.
    pub fn of(e: anyhow::Error) -> Self {
        EnvError(format!("{e:#}"))
    }
}

/// Loading the programs into the kernel failed.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("loading dio-trace's BPF object failed (kernel {release}): {source}")]
    Object {
        release: String,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("the BPF object has no map {0} (build mismatch)")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

/// Render an error with its whole chain on one line (`a: b: c`).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
