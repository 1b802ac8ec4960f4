//! Facts about the running kernel, read once at start-up.
//!
//! Everything the kernel programs cannot learn for themselves (struct
//! offsets, flag bits, symbol addresses) is resolved here, so that a kernel
//! that lacks a fact is reported before anything is attached.

pub mod btf;
pub mod cgroups;
pub mod facts;
pub mod iocb;
pub mod kallsyms;
pub mod mounts;
pub mod preflight;
pub mod tracefs;

/// A unit test that needs something this machine lacks: SKIPPED, loudly,
/// or a failure under CI (`CI` set), whose machine must have it.
#[cfg(test)]
pub(crate) fn skip_or_fail(test: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {why}, and CI's machine must have it"
    );
    eprintln!("SKIPPED {test}: {why}");
}

/// `uname -r` of the running kernel.
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// (major, minor, patch) parsed from a release string like `6.1.0-27-cloud-amd64`.
pub fn parse_version(release: &str) -> Option<(u32, u32, u32)> {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    let major = it.next()??;
    let minor = it.next()??;
    let patch = it.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// Kernel `dev_t` (as BPF sees `sb->s_dev`: major << 20 | minor) to "major:minor".
pub fn dev_string(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & 0xfffff)
}

/// Kernel `dev_t` from major and minor.
pub fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xfffff)
}

/// Kernel `dev_t` from a user-space `st_dev`.
pub fn kernel_dev_from_st(st_dev: u64) -> u32 {
    kernel_dev(libc::major(st_dev), libc::minor(st_dev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("6.18.44-fc-v669"), Some((6, 18, 44)));
        assert_eq!(parse_version("6.1.0-27-cloud-amd64"), Some((6, 1, 0)));
        assert_eq!(parse_version("6.12"), Some((6, 12, 0)));
        assert_eq!(parse_version("junk"), None);
    }

    #[test]
    fn devs_round_trip() {
        assert_eq!(dev_string(kernel_dev(7, 3)), "7:3");
        assert_eq!(dev_string(kernel_dev(259, 1048575)), "259:1048575");
    }
}
