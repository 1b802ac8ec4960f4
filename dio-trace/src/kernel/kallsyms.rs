//! `/proc/kallsyms`: names for kernel addresses (the callers that size
//! updates report, the frames of kernel stacks), modules included.

use anyhow::{Result, bail};

/// Bytes past a symbol still taken to be in it (the kernel's largest
/// functions are a few tens of KiB).
const MAX_FUNCTION: u64 = 256 << 10;

/// Text symbols sorted by address, for symbolizing.
#[derive(Default)]
pub struct Kallsyms {
    /// (address, name, module): module `None` for the kernel image.
    text: Vec<(u64, String, Option<String>)>,
}

impl Kallsyms {
    /// The running kernel's symbols; an error says why they cannot be read
    /// (addresses hidden by `kernel.kptr_restrict`, or no CAP_SYSLOG).
    pub fn load() -> Result<Self> {
        let raw = match std::fs::read_to_string("/proc/kallsyms") {
            Ok(raw) => raw,
            Err(e) => bail!("cannot read /proc/kallsyms: {e}"),
        };
        Self::readable(&raw)
    }

    /// The symbols of a kallsyms text, or why it names nothing: a kernel
    /// that hides addresses from this process shows every one as zero.
    fn readable(raw: &str) -> Result<Self> {
        let syms = Self::parse(raw);
        if syms.text.is_empty() {
            let restrict = std::fs::read_to_string("/proc/sys/kernel/kptr_restrict")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "?".into());
            bail!(
                "/proc/kallsyms shows no addresses (kernel.kptr_restrict={restrict}: 1 hides them from \
                 processes without CAP_SYSLOG, 2 from everyone); run as root with kernel.kptr_restrict=0 or 1"
            );
        }
        Ok(syms)
    }

    pub fn parse(raw: &str) -> Self {
        let mut text = Vec::new();
        for line in raw.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 {
                continue;
            }
            if matches!(kind, "t" | "T") {
                let module = it
                    .next()
                    .and_then(|m| m.strip_prefix('[')?.strip_suffix(']'))
                    .map(str::to_owned);
                text.push((addr, name.to_owned(), module));
            }
        }
        text.sort_unstable_by_key(|(a, _, _)| *a);
        Self { text }
    }

    /// `name+0xoff` for a kernel text address, `name+0xoff [module]` for
    /// one in a module. kallsyms has no sizes: an address further than
    /// [`MAX_FUNCTION`] past the symbol below it is in none that was listed
    /// when it was read (a BPF program loaded later), and stays unnamed.
    pub fn symbolize(&self, addr: u64) -> Option<String> {
        let i = self.text.partition_point(|(a, _, _)| *a <= addr);
        let (base, name, module) = self.text.get(i.checked_sub(1)?)?;
        let off = addr - base;
        if off > MAX_FUNCTION {
            return None;
        }
        Some(match module {
            Some(m) => format!("{name}+{off:#x} [{m}]"),
            None => format!("{name}+{off:#x}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolizes() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff81200000 t ext4_dio_write_iter\nffffffff81200400 T ext4_file_write_iter\nffffffff82000000 d ext4_fs_type\n",
        );
        assert_eq!(
            k.symbolize(0xffffffff81200123).unwrap(),
            "ext4_dio_write_iter+0x123"
        );
        assert_eq!(k.symbolize(0x10), None);
        assert_eq!(
            k.symbolize(0xffffffff82000000 + (1 << 30)),
            None,
            "far past the last symbol"
        );
    }

    #[test]
    fn hidden_addresses_say_why() {
        let e = Kallsyms::readable("0000000000000000 T _stext\n0000000000000000 t ext4_sync_file\t[ext4]\n")
            .err()
            .expect("no addresses, no symbols");
        assert!(format!("{e}").contains("kernel.kptr_restrict="), "{e}");
    }

    #[test]
    fn names_the_module_of_a_module_symbol() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffffc0a01000 t ext4_sync_file\t[ext4]\nffffffffc0a02000 t ext4_dio_write_iter\t[ext4]\n",
        );
        assert_eq!(
            k.symbolize(0xffffffffc0a01010).unwrap(),
            "ext4_sync_file+0x10 [ext4]"
        );
    }
}
