//! Everything the loader needs from the running kernel, gathered in one
//! place before anything is loaded. Each failure is an [`EnvError`] that
//! names the missing fact and the fix.

use std::path::PathBuf;

use dio_trace_common::config::{Config, Filter, IocbBits, Offsets};

use super::{btf::KernelBtf, iocb, kallsyms::Kallsyms, mounts::MountTable, preflight, tracefs};
use crate::error::EnvError;

pub struct KernelFacts {
    pub release: String,
    pub offsets: Offsets,
    pub iocb: IocbBits,
    pub iocb_source: iocb::Source,
    pub kallsyms: Kallsyms,
    pub tracefs: PathBuf,
    pub mounts: MountTable,
}

fn env(e: anyhow::Error) -> EnvError {
    EnvError(format!("{e:#}"))
}

impl KernelFacts {
    /// Check privileges, BTF and tracefs, then read every fact.
    pub fn gather() -> Result<Self, EnvError> {
        preflight::check_privileges().map_err(env)?;
        preflight::check_btf().map_err(env)?;
        let tracefs = tracefs::ensure_mounted().map_err(env)?;
        let release = super::release();
        let btf = KernelBtf::load().map_err(env)?;
        let offsets = btf.offsets().map_err(|e| {
            EnvError(format!(
                "kernel {release} lacks a struct field dio-trace reads: {e:#}; this kernel is not supported"
            ))
        })?;
        let format = tracefs::format(&tracefs, "iomap", "iomap_dio_rw_begin");
        let (iocb, iocb_source) =
            iocb::resolve(format.as_deref(), super::parse_version(&release)).map_err(env)?;
        // Only for naming callers in timelines: a host that hides kernel
        // addresses still traces, with raw addresses in place of names.
        let kallsyms = Kallsyms::load().unwrap_or_else(|e| {
            log::warn!("{e:#}; size-update callers will show as addresses");
            Kallsyms::default()
        });
        let mounts = MountTable::load().map_err(env)?;
        Ok(Self {
            release,
            offsets,
            iocb,
            iocb_source,
            kallsyms,
            tracefs,
            mounts,
        })
    }

    /// The loader global for a run with `filter` (the loader adds what
    /// depends on the ring buffer's size).
    pub fn config(&self, filter: Filter, flags: u32) -> Config {
        Config {
            offsets: self.offsets,
            iocb: self.iocb,
            filter,
            flags,
            wake_bytes: 0,
        }
    }
}
