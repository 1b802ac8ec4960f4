//! dio-trace inside a guest: the static binary, a scratch ext4 on /mnt, and
//! the dio-trace command line the user gave.

use anyhow::{Context as _, Result};

use super::{Disk, Guest, Outcome, VmOptions, boot};
use crate::initramfs::GuestFile;
use crate::kernel::Kernel;

/// The static dio-trace, as a guest file in /bin.
pub fn dio_trace_file() -> Result<GuestFile> {
    GuestFile::in_bin(&crate::build::static_binary()?)
}

/// Quote one argument for the guest's sh.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Where a kernel's ext4 BTF ([`Kernel::ext4_btf`]) is in the guest.
pub const GUEST_EXT4_BTF: &str = "/ext4.btf";

/// ` --btf /ext4.btf` for a kernel that needs ext4's BTF from a file, else
/// nothing: what goes after a tracing subcommand in a guest script.
pub fn btf_arg(kernel: &Kernel) -> String {
    if kernel.ext4_btf.is_some() {
        format!(" --btf {GUEST_EXT4_BTF}")
    } else {
        String::new()
    }
}

/// dio-trace for the guest's /bin, and the kernel's ext4 BTF where it has
/// one (at [`GUEST_EXT4_BTF`], for [`btf_arg`]).
pub fn guest_files(kernel: &Kernel, dio: &GuestFile) -> Vec<GuestFile> {
    let mut files = vec![dio.clone()];
    if let Some(btf) = &kernel.ext4_btf {
        files.push(GuestFile {
            host: btf.clone(),
            guest: GUEST_EXT4_BTF.into(),
        });
    }
    files
}

/// Boot `kernel` with dio-trace in /bin (and its ext4 BTF, if it has one)
/// and a fresh scratch ext4 on /mnt, and run `script`.
pub fn boot_with_dio(kernel: &Kernel, dio: &GuestFile, script: &str, opts: &VmOptions) -> Result<Outcome> {
    boot_with_dio_on("ext4", kernel, dio, script, opts)
}

/// [`boot_with_dio`] with a scratch disk of `fs` ("ext4", "xfs", "f2fs").
pub fn boot_with_dio_on(
    fs: &'static str,
    kernel: &Kernel,
    dio: &GuestFile,
    script: &str,
    opts: &VmOptions,
) -> Result<Outcome> {
    boot_with_dio_and(fs, kernel, dio, &[], script, opts)
}

/// [`boot_with_dio_on`] with `extra` files in the guest.
pub fn boot_with_dio_and(
    fs: &'static str,
    kernel: &Kernel,
    dio: &GuestFile,
    extra: &[GuestFile],
    script: &str,
    opts: &VmOptions,
) -> Result<Outcome> {
    let disk = Disk::of(fs, 256)?;
    let mut files = guest_files(kernel, dio);
    files.extend_from_slice(extra);
    boot(
        &Guest {
            kernel,
            files: &files,
            script,
            disk: Some(&disk),
        },
        opts,
    )
    .with_context(|| format!("booting {}", kernel.spec))
}

/// Boot `kernel` as [`boot_with_dio`] and run `dio-trace ARGS` in /mnt.
pub fn run_dio_trace(kernel: &Kernel, dio: &GuestFile, args: &[String], opts: &VmOptions) -> Result<Outcome> {
    let line: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
    boot_with_dio(
        kernel,
        dio,
        &format!("cd /mnt\ndio-trace {}\n", line.join(" ")),
        opts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("o-sync-append"), "o-sync-append");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
