//! `kiocb.ki_flags` bit values. They are `#define`s, so BTF cannot say them;
//! the kernel prints them in the `iomap:iomap_dio_rw_begin` tracepoint's
//! format (6.4+), and before that they follow the headers of each release.

use anyhow::{Result, anyhow};
use dio_trace_common::config::IocbBits;

/// Where the bits came from, for `dio-trace info` and bug reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Parsed from the tracepoint's `print fmt` on this kernel.
    TracepointFormat,
    /// From the kernel-version table (include/linux/fs.h of that release).
    VersionTable(&'static str),
}

/// Bits since 5.19 ("fs: align IOCB_* flags with RWF_* flags", ce71bfea207b).
pub const ALIGNED: IocbBits = IocbBits {
    direct: 1 << 17,
    dir_mask: 1,
    dsync: 0x2,
    sync: 0x4,
};

/// Bits from 5.5 (first kernel with the bug) to 5.18.
pub const PRE_5_19: IocbBits = IocbBits {
    direct: 1 << 2,
    dir_mask: 1,
    dsync: 1 << 4,
    sync: 1 << 5,
};

/// Resolve the bits: the tracepoint format when we have it, else the table.
pub fn resolve(format: Option<&str>, version: Option<(u32, u32, u32)>) -> Result<(IocbBits, Source)> {
    if let Some(bits) = format.and_then(from_print_fmt) {
        return Ok((bits, Source::TracepointFormat));
    }
    match version {
        Some(v) if v >= (5, 19, 0) => Ok((ALIGNED, Source::VersionTable("5.19+"))),
        Some(v) if v >= (5, 5, 0) => Ok((PRE_5_19, Source::VersionTable("5.5..5.18"))),
        Some((a, b, c)) => Err(anyhow!(
            "kernel {a}.{b}.{c} is older than 5.5: ext4 did not use iomap for direct I/O then, so there is nothing to trace"
        )),
        None => Err(anyhow!(
            "cannot tell the kernel version to resolve kiocb flag bits"
        )),
    }
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
            _ => {}
        }
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
        assert_eq!(bits, ALIGNED);
    }

    #[test]
    fn format_without_the_flags_is_not_guessed() {
        assert_eq!(from_print_fmt("print fmt: \"nothing\""), None);
    }

    #[test]
    fn falls_back_to_the_version_table() {
        assert_eq!(resolve(None, Some((6, 1, 0))).unwrap().0, ALIGNED);
        assert_eq!(resolve(None, Some((5, 10, 200))).unwrap().0, PRE_5_19);
        assert!(resolve(None, Some((4, 19, 0))).is_err());
        assert_eq!(
            resolve(Some(FMT_6_18), Some((5, 10, 0))).unwrap().1,
            Source::TracepointFormat
        );
    }
}
