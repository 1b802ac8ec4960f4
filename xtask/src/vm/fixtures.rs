//! `cargo xtask vm fixtures`: record traces on real kernels for the replay
//! tests. In each guest, `dio-trace record` traces O_SYNC appends with a
//! forced backend and keeps the live NDJSON beside the trace; both come
//! back over the console (base64) into dio-trace/tests/fixtures/.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use super::{VmOptions, traced};
use crate::kernel::{self, Cache, KernelSpec};

/// (kernel, backend) pairs worth keeping: the bug through both function
/// backends (fentry on debian-5.10, whose ext4 is built in: buggy-6.1's is
/// a rebuilt module, which aya cannot fentry), and fixed kernels through
/// each mechanism family.
pub const RECORDINGS: [(&str, &str); 4] = [
    ("debian-5.10", "fentry"),
    ("buggy-6.1", "kprobe"),
    ("debian-6.1", "fentry"),
    ("debian-6.12", "tracepoint"),
];

pub fn fixtures_dir() -> PathBuf {
    crate::build::workspace().join("dio-trace/tests/fixtures")
}

fn script(backend: &str) -> String {
    format!(
        "dio-trace record --backend {backend} --json -o /tmp/t.dtr -- dio-trace write --pattern o-sync-append --count 3 /mnt/wal >/tmp/live.ndjson 2>/dev/null\n\
         echo \"@@EXIT $?\"\n\
         echo @@TRACE; base64 /tmp/t.dtr; echo @@END\n\
         echo @@LIVE; base64 /tmp/live.ndjson; echo @@END\n"
    )
}

/// The base64 block after `start` up to `@@END`, decoded.
fn block(console: &str, start: &str) -> Result<Vec<u8>> {
    let mut lines = console.lines().skip_while(|l| !l.ends_with(start)).skip(1);
    let mut text = String::new();
    for l in lines.by_ref() {
        if l.ends_with("@@END") {
            return decode_base64(&text);
        }
        text.push_str(l.trim());
    }
    bail!("no {start} block in the console")
}

fn decode_base64(s: &str) -> Result<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).context("not base64")? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// Records every fixture of [`RECORDINGS`], or those named in `only`.
pub fn run(only: &[String], opts: &VmOptions) -> Result<()> {
    let known: Vec<String> = RECORDINGS.iter().map(|(k, b)| format!("{k}-{b}")).collect();
    if let Some(unknown) = only.iter().find(|o| !known.contains(o)) {
        bail!("no fixture {unknown}; the fixtures are {}", known.join(", "));
    }
    let cache = Cache::from_env()?;
    let dio = traced::dio_trace_file()?;
    std::fs::create_dir_all(fixtures_dir())?;
    for ((kernel_name, backend), name) in RECORDINGS.iter().zip(known) {
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let spec = KernelSpec::named(kernel_name);
        let kernel = kernel::resolve(&spec, &cache)?;
        let outcome = traced::boot_with_dio(&kernel, &dio, &script(backend), opts)?;
        let trace =
            block(&outcome.console, "@@TRACE").with_context(|| format!("{name}: {}", outcome.failure()))?;
        let live = block(&outcome.console, "@@LIVE")?;
        std::fs::write(fixtures_dir().join(format!("{name}.dtr")), &trace)?;
        std::fs::write(fixtures_dir().join(format!("{name}.live.ndjson")), &live)?;
        println!("xtask: fixture {name}: {} bytes of trace", trace.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(
            block("x\n@@TRACE\naGVs\nbG8=\n@@END\n", "@@TRACE").unwrap(),
            b"hello"
        );
        assert!(block("nothing", "@@TRACE").is_err());
    }
}
