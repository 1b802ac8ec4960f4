//! `kiocb.ki_flags` bit values. They are `#define`s, so BTF cannot say them.
//! The kernel prints them in the `iomap:iomap_dio_rw_begin` tracepoint's
//! format (6.4+); without it, the kernel programs choose per write between
//! the two layouts Linux has had, by which one agrees with the file's UAPI
//! open flags (`O_DIRECT`, `O_DSYNC`, `__O_SYNC`), and count a write
//! neither fits. The kernel version cannot decide: Debian's 5.10.218 has
//! the 5.19 layout.

use anyhow::{Result, anyhow};
use dio_trace_common::config::{IOCB_LAYOUTS, IocbBits, OpenFlags};

/// Where the bits came from, for `dio-trace info` and bug reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Parsed from the tracepoint's `print fmt` on this kernel.
    TracepointFormat,
    /// Chosen per write in the kernel among the known layouts, checked
    /// against the file's open flags.
    PerWrite,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::TracepointFormat => "the iomap_dio_rw_begin tracepoint's format on this kernel",
            Source::PerWrite => {
                "no tracepoint prints them here: each write's layout is the candidate its file's open flags agree with"
            }
        })
    }
}

/// "fs: align IOCB_* flags with RWF_* flags" (ce71bfea207b, 5.19; also in
/// some distribution kernels before that).
pub const ALIGNED: IocbBits = IocbBits {
    direct: 1 << 17,
    dir_mask: 1,
    dsync: 0x2,
    sync: 0x4,
    append: 0x10,
};

/// The layout before it (5.5, the first kernel with the bug, onwards).
pub const PRE_ALIGNED: IocbBits = IocbBits {
    direct: 1 << 2,
    dir_mask: 1,
    dsync: 1 << 4,
    sync: 1 << 5,
    append: 1 << 1,
};

/// The open flags of this architecture, as the kernel's UAPI defines them.
pub fn open_flags() -> OpenFlags {
    OpenFlags {
        direct: libc::O_DIRECT as u32,
        dsync: libc::O_DSYNC as u32,
        // O_SYNC is __O_SYNC | O_DSYNC; __O_SYNC is what sets IOCB_SYNC.
        sync: (libc::O_SYNC & !libc::O_DSYNC) as u32,
        _pad: 0,
    }
}

/// The candidate layouts, in the order the programs try them: the known
/// one twice when the tracepoint says it, else the aligned layout first
/// (its `IOCB_DIRECT`, bit 17, is no flag at all in the older layout, whose
/// `IOCB_DIRECT`, bit 2, is `IOCB_SYNC` in the aligned one).
pub fn resolve(
    format: Option<&str>,
    version: Option<(u32, u32, u32)>,
) -> Result<([IocbBits; IOCB_LAYOUTS], Source)> {
    if let Some((a, b, c)) = version.filter(|v| *v < (5, 5, 0)) {
        return Err(anyhow!(
            "kernel {a}.{b}.{c} is older than 5.5: ext4 did not use iomap for direct I/O then, so there is nothing to trace"
        ));
    }
    if let Some(bits) = format.and_then(from_print_fmt) {
        return Ok(([bits; IOCB_LAYOUTS], Source::TracepointFormat));
    }
    Ok(([ALIGNED, PRE_ALIGNED], Source::PerWrite))
}

/// Parse `{ value, "NAME" }` pairs out of a tracepoint `print fmt`.
pub fn from_print_fmt(fmt: &str) -> Option<IocbBits> {
    let mut bits = IocbBits {
        dir_mask: 1,
        ..IocbBits::default()
    };
    for (value, name) in flag_pairs(fmt) {
        match name {
            "DIRECT" => bits.direct = value,
            "DSYNC" => bits.dsync = value,
            "SYNC" => bits.sync = value,
            "APPEND" => bits.append = value,
            _ => {}
        }
    }
    // Formats that do not print APPEND: the aligned layout's, if the rest is.
    let aligned = (bits.direct, bits.dsync, bits.sync) == (ALIGNED.direct, ALIGNED.dsync, ALIGNED.sync);
    if bits.append == 0 && aligned {
        bits.append = ALIGNED.append;
    }
    (bits.direct != 0 && bits.dsync != 0 && bits.sync != 0).then_some(bits)
}

/// Every `{ expr, "NAME" }` whose expr is a hex literal or `1 << n`.
fn flag_pairs(fmt: &str) -> impl Iterator<Item = (u32, &str)> {
    fmt.split('{').skip(1).filter_map(|chunk| {
        let body = chunk.split('}').next()?;
        let (expr, name) = body.rsplit_once(',')?;
        let name = name.trim().trim_matches('"');
        Some((eval(expr)?, name))
    })
}

fn eval(expr: &str) -> Option<u32> {
    if let Some(i) = expr.rfind("0x") {
        let hex: String = expr[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect();
        return u32::from_str_radix(&hex, 16).ok();
    }
    let (_, rhs) = expr.split_once("<<")?;
    let n: String = rhs.trim().chars().take_while(|c| c.is_ascii_digit()).collect();
    let lhs: String = expr
        .split("<<")
        .next()?
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    let base: u32 = lhs.parse().ok()?;
    base.checked_shl(n.parse().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The print fmt of 6.18's iomap_dio_rw_begin, trimmed.
    const FMT_6_18: &str = r#"print fmt: "dev %d:%d", __print_flags(REC->ki_flags, "|", { ( int) (( __kernel_rwf_t)0x00000001), "HIPRI" }, { ( int) (( __kernel_rwf_t)0x00000002), "DSYNC" }, { ( int) (( __kernel_rwf_t)0x00000004), "SYNC" }, { (1 << 16), "EVENTFD"}, { (1 << 17), "DIRECT" }, { (1 << 18), "WRITE" }), __print_flags(REC->dio_flags, "|", {(1 << 0), "DIO_FORCE_WAIT" })"#;

    #[test]
    fn parses_the_tracepoint_format() {
        let bits = from_print_fmt(FMT_6_18).unwrap();
        assert_eq!(bits, ALIGNED, "APPEND comes with the aligned layout");
    }

    #[test]
    fn format_without_the_flags_is_not_guessed() {
        assert_eq!(from_print_fmt("print fmt: \"nothing\""), None);
    }

    #[test]
    fn without_a_format_both_layouts_are_candidates_aligned_first() {
        for v in [(6, 1, 0), (5, 10, 218)] {
            let (bits, source) = resolve(None, Some(v)).unwrap();
            assert_eq!(bits, [ALIGNED, PRE_ALIGNED]);
            assert_eq!(source, Source::PerWrite);
        }
        assert!(resolve(None, Some((4, 19, 0))).is_err());
        let (bits, source) = resolve(Some(FMT_6_18), Some((5, 10, 0))).unwrap();
        assert_eq!((bits, source), ([ALIGNED, ALIGNED], Source::TracepointFormat));
    }

    /// The choice the programs make (`iocb_layout` in dio-trace-ebpf),
    /// replayed over both layouts: aligned first never mistakes one for
    /// the other on writes whose open flags are those of real patterns.
    #[test]
    fn the_aligned_direct_bit_is_no_flag_in_the_older_layout() {
        let old_flags = [
            PRE_ALIGNED.direct,
            PRE_ALIGNED.dsync,
            PRE_ALIGNED.sync,
            PRE_ALIGNED.append,
            1 << 9,
        ];
        assert!(old_flags.iter().all(|f| f & ALIGNED.direct == 0));
        assert_eq!(PRE_ALIGNED.direct, ALIGNED.sync);
    }
}
