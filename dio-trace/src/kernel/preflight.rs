//! Can this process trace here? Each failure names the cause and the fix.

use anyhow::{Result, bail};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Root, or CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN.
pub fn check_privileges() -> Result<()> {
    let caps = effective_caps().unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!(
        "dio-trace needs to load BPF programs: run it as root (sudo dio-trace ...) or grant CAP_BPF and CAP_PERFMON (setcap cap_bpf,cap_perfmon,cap_sys_resource+ep $(command -v dio-trace))"
    )
}

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// The kernel publishes its BTF (needed for offsets and tp_btf).
pub fn check_btf() -> Result<()> {
    if !std::path::Path::new(super::btf::VMLINUX_BTF).exists() {
        bail!(
            "this kernel has no {}: dio-trace needs CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.x have it)",
            super::btf::VMLINUX_BTF
        );
    }
    Ok(())
}
