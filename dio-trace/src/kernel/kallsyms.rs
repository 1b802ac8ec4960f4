//! `/proc/kallsyms`: names for the caller addresses that
//! `ext4:ext4_mark_inode_dirty` reports.

use anyhow::{Context as _, Result, bail};

/// Text symbols sorted by address, for symbolizing.
#[derive(Default)]
pub struct Kallsyms {
    text: Vec<(u64, String)>,
}

impl Kallsyms {
    pub fn load() -> Result<Self> {
        let raw = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
        let syms = Self::parse(&raw);
        if syms.text.is_empty() {
            bail!(
                "/proc/kallsyms shows no addresses (kernel.kptr_restrict?); run as root or set: sysctl kernel.kptr_restrict=1"
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
                text.push((addr, name.to_owned()));
            }
        }
        text.sort_unstable_by_key(|(a, _)| *a);
        Self { text }
    }

    /// `name+0xoff` for a kernel text address.
    pub fn symbolize(&self, addr: u64) -> Option<String> {
        let i = self.text.partition_point(|(a, _)| *a <= addr);
        let (base, name) = self.text.get(i.checked_sub(1)?)?;
        Some(format!("{name}+{:#x}", addr - base))
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
    }
}
