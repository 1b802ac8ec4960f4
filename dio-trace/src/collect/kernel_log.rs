//! `--debug`: the kernel programs' own words, through aya-log.
//!
//! The programs log why each direct write they saw was not counted; this
//! prints those records on stderr as `dio-trace: kernel: ...`, beside the
//! report on stdout, so NDJSON stays machine-readable. The log ring is
//! drained on the session's tick, like the counters.

use aya::Ebpf;
use aya_log::EbpfLogger;
use log::{Log, Metadata, Record};

/// Prints every record the programs send, whatever the host's log filter.
struct Stderr;

impl Log for Stderr {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        eprintln!("dio-trace: kernel: {}", record.args());
    }

    fn flush(&self) {}
}

/// The reader of the programs' log ring.
pub struct KernelLog(EbpfLogger<Stderr>);

impl KernelLog {
    /// Takes the log ring out of `ebpf`. Fails when the object has none
    /// (a build mismatch): `--debug` then says so instead of staying quiet.
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        EbpfLogger::init_with_logger(ebpf, Stderr)
            .map(Self)
            .map_err(|e| anyhow::anyhow!("--debug: the kernel programs' log ring: {e}"))
    }

    /// Print what arrived since the last call.
    pub fn drain(&mut self) {
        self.0.flush();
    }
}
