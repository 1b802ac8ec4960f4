//! The kernel's per-CPU batches of settled writes (`emit::batched` in the
//! kernel programs): turned on once a flush is proven to work, flushed on
//! every CPU at each tick, and read out after detaching.
//!
//! Sixteen writes to one ring record instead of one each is most of what
//! batching saves (the ring costs per record). A batch waits until it is
//! full, so a CPU whose writer went quiet would hold its last writes
//! indefinitely: user space runs the flush program on each CPU at every
//! tick (`BPF_PROG_TEST_RUN` on a chosen CPU, Linux 5.10+). Where that
//! does not work, batching stays off and every write goes alone, as
//! before: the same records, only more of them.

use aya::{
    Ebpf,
    maps::{MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{RawTracePoint, RawTracePointRunOptions, TestRun as _},
    util::{nr_cpus, online_cpus},
};
use dio_trace_common::{
    kind::RecordKind,
    record::{CpuBatch, SettledBatch},
};

use crate::error::chain;

/// The map and program names (dio-trace-ebpf's `maps.rs`, `probes/flush.rs`).
pub const BATCH_MAP: &str = "BATCH";
pub const FLUSH_PROGRAM: &str = "flush_batch";

/// Load the flush program, run it once on every online CPU, and only then
/// turn batching on. Before any probe is attached: the kernel programs
/// must not be filling a batch while user space writes the map. `Err`
/// says why batching stays off (then nothing was turned on).
pub fn enable(ebpf: &mut Ebpf) -> Result<(), String> {
    let cpus = online_cpus().map_err(|(_, e)| format!("reading the online CPUs: {e}"))?;
    let prog: &mut RawTracePoint = ebpf
        .program_mut(FLUSH_PROGRAM)
        .ok_or_else(|| format!("the object has no {FLUSH_PROGRAM} program"))?
        .try_into()
        .map_err(|e| chain(&e))?;
    prog.load()
        .map_err(|e| format!("loading {FLUSH_PROGRAM}: {}", chain(&e)))?;
    for &cpu in &cpus {
        run_on(prog, cpu)?;
    }
    let map = ebpf
        .map_mut(BATCH_MAP)
        .ok_or_else(|| format!("the object has no {BATCH_MAP} map"))?;
    let mut batches: PerCpuArray<_, CpuBatch> = PerCpuArray::try_from(map).map_err(|e| chain(&e))?;
    let n = nr_cpus().map_err(|(_, e)| format!("reading the possible CPUs: {e}"))?;
    let on = CpuBatch { on: 1, ..empty() };
    let values = PerCpuValues::try_from(vec![on; n]).map_err(|e| e.to_string())?;
    batches.set(0, values, 0).map_err(|e| chain(&e))
}

/// Run the flush on `cpu`.
fn run_on(prog: &RawTracePoint, cpu: u32) -> Result<(), String> {
    prog.test_run(RawTracePointRunOptions {
        cpu: Some(cpu),
        ..RawTracePointRunOptions::new()
    })
    .map(|_| ())
    .map_err(|e| format!("running {FLUSH_PROGRAM} on CPU {cpu}: {}", chain(&e)))
}

/// Send every online CPU's batch now. A CPU whose batch was busy (the
/// flush interrupted a program filling it) or that went offline keeps it
/// until the next tick or the end: held back, never lost.
pub fn flush(ebpf: &Ebpf) {
    let Some(Ok(prog)) = ebpf.program(FLUSH_PROGRAM).map(<&RawTracePoint>::try_from) else {
        return;
    };
    if let Ok(cpus) = online_cpus() {
        for cpu in cpus {
            let _ = run_on(prog, cpu);
        }
    }
}

/// How many CPU numbers there are (the possible CPUs): every CPU that can
/// fill a batch is numbered below it.
pub fn cpus() -> usize {
    nr_cpus().unwrap_or(1)
}

/// After detaching: each CPU's batch still holding writes, as the batch
/// record the kernel would have sent.
pub fn leftovers(map: &PerCpuArray<MapData, CpuBatch>) -> Result<Vec<SettledBatch>, MapError> {
    let values = map.get(&0, 0)?;
    Ok(values
        .iter()
        .filter(|b| b.batch.count > 0)
        .map(|b| SettledBatch {
            kind: RecordKind::SettledBatch as u32,
            ..b.batch
        })
        .collect())
}

/// A batch with nothing in it.
fn empty() -> CpuBatch {
    // SAFETY: `CpuBatch` is `#[repr(C)]` integers and byte arrays, for
    // which all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}
