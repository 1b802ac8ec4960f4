//! `cargo xtask dist`: what goes onto hosts. The release binary built
//! statically (glibc with `+crt-static`, as the QEMU guests run it: no
//! glibc version to match, so it runs on Debian 11, whose 5.10 kernel has
//! the bug), and a Debian package with the binary, the systemd unit and
//! the alert rules. Then it checks both: no dynamic dependencies, and the
//! package installed into a scratch root gives a `dio-trace info` that
//! runs and the unit in place.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::build::workspace;

/// What `dist` made.
pub struct Dist {
    pub binary: PathBuf,
    pub deb: PathBuf,
}

/// Files of the package besides the binary: (source under the workspace,
/// installed path, mode).
const PACKAGED: &[(&str, &str, u32)] = &[
    (
        "deploy/systemd/dio-trace.service",
        "lib/systemd/system/dio-trace.service",
        0o644,
    ),
    (
        "deploy/prometheus/dio-trace.rules.yml",
        "usr/share/dio-trace/prometheus/dio-trace.rules.yml",
        0o644,
    ),
    (
        "deploy/kubernetes/dio-trace.yaml",
        "usr/share/dio-trace/kubernetes/dio-trace.yaml",
        0o644,
    ),
    ("README.md", "usr/share/doc/dio-trace/README.md", 0o644),
    (
        "deploy/lintian-overrides",
        "usr/share/lintian/overrides/dio-trace",
        0o644,
    ),
];

pub fn run() -> Result<()> {
    let d = build()?;
    check(&d)?;
    println!("dist: {}", d.binary.display());
    println!("dist: {}", d.deb.display());
    println!(
        "dist: on a host: dpkg -i {} && systemctl enable --now dio-trace",
        d.deb.file_name().unwrap_or_default().to_string_lossy()
    );
    Ok(())
}

/// `docs/`'s pages (and the pictures they show) beside the README, so the
/// README's links work in `/usr/share/doc/dio-trace` too.
fn install_docs(to: &Path) -> Result<()> {
    let from = workspace().join("docs");
    for entry in std::fs::read_dir(&from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md" || e == "svg") {
            let name = path.file_name().context("a docs file without a name")?;
            install(&path, &to.join(name), 0o644)?;
        }
    }
    Ok(())
}

/// Build the static binary and the package into `target/dist/`.
pub fn build() -> Result<Dist> {
    let out = workspace().join("target/dist");
    std::fs::create_dir_all(&out)?;
    let binary = out.join("dio-trace");
    std::fs::copy(crate::build::static_binary()?, &binary).context("copying the static binary")?;
    let version = env!("CARGO_PKG_VERSION");
    let stage = out.join("deb-root");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    install(&binary, &stage.join("usr/bin/dio-trace"), 0o755)?;
    // Debian installs binaries stripped (the symbols stay in target/dist).
    run_ok(
        Command::new("strip")
            .arg("--strip-unneeded")
            .arg(stage.join("usr/bin/dio-trace")),
    )?;
    for (src, dst, mode) in PACKAGED {
        install(&workspace().join(src), &stage.join(dst), *mode)?;
    }
    install_docs(&stage.join("usr/share/doc/dio-trace/docs"))?;
    manuals_and_completions(&binary, &stage)?;
    let doc = stage.join("usr/share/doc/dio-trace");
    std::fs::write(doc.join("copyright"), COPYRIGHT)?;
    gzip_to(&changelog(version).into_bytes(), &doc.join("changelog.gz"))?;
    let control = format!(
        "Package: dio-trace\n\
         Version: {version}\n\
         Architecture: amd64\n\
         Maintainer: dio-trace developers <dio-trace@example.invalid>\n\
         Section: admin\n\
         Priority: optional\n\
         Description: flag direct-I/O syncs that run before the file-size update\n \
         dio-trace watches, with eBPF, how the kernel completes O_DIRECT writes\n \
         with O_SYNC/O_DSYNC semantics, and flags any sync that runs before the\n \
         size update of a size-extending write (the ext4 bug of Linux 5.5-6.6).\n \
         Statically linked. Ships a systemd unit (dio-trace.service, NDJSON to the\n \
         journal, Prometheus metrics on 127.0.0.1:9436) and alert rules.\n"
    );
    std::fs::create_dir_all(stage.join("DEBIAN"))?;
    std::fs::write(stage.join("DEBIAN/control"), control)?;
    let deb = out.join(format!("dio-trace_{version}_amd64.deb"));
    run_ok(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    Ok(Dist { binary, deb })
}

/// `debian/copyright` in the machine-readable format lintian reads.
const COPYRIGHT: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
Upstream-Name: dio-trace\n\
\n\
Files: *\n\
Copyright: 2026 dio-trace developers\n\
License: MIT or Apache-2.0\n \
dio-trace is dual-licensed under the MIT license and the Apache License,\n \
Version 2.0, at your option.\n \
.\n \
On Debian systems, the complete text of the Apache License, Version 2.0,\n \
can be found in /usr/share/common-licenses/Apache-2.0.\n";

/// A native package's changelog: one entry for this version.
fn changelog(version: &str) -> String {
    format!(
        "dio-trace ({version}) unstable; urgency=medium\n\n  \
         * Built by `cargo xtask dist`; the project's history is its git log.\n\n \
         -- dio-trace developers <dio-trace@example.invalid>  Sat, 05 Dec 2026 00:00:00 +0000\n"
    )
}

/// The manual pages and shell completions, from the binary itself (its
/// `clap` definitions), where Debian's man and shells look for them.
fn manuals_and_completions(binary: &Path, stage: &Path) -> Result<()> {
    let pages = tempfile::tempdir()?;
    run_ok(Command::new(binary).arg("man").arg(pages.path()))?;
    let man1 = stage.join("usr/share/man/man1");
    std::fs::create_dir_all(&man1)?;
    for page in std::fs::read_dir(pages.path())? {
        let page = page?.path();
        let name = page
            .file_name()
            .context("a page has a name")?
            .to_string_lossy()
            .into_owned();
        gzip_to(&std::fs::read(&page)?, &man1.join(format!("{name}.gz")))?;
    }
    for (shell, dst) in COMPLETIONS {
        // stdout alone: run_ok's text has stderr after it.
        let out = Command::new(binary)
            .args(["completions", shell])
            .output()
            .context("running dio-trace completions")?;
        ensure!(
            out.status.success(),
            "dio-trace completions {shell} exited {}",
            out.status
        );
        let script = out.stdout;
        let path = stage.join(dst);
        std::fs::create_dir_all(path.parent().expect("a folder"))?;
        std::fs::write(&path, script)?;
    }
    Ok(())
}

/// (shell, where Debian's packages put its completions).
pub const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "usr/share/bash-completion/completions/dio-trace"),
    ("zsh", "usr/share/zsh/vendor-completions/_dio-trace"),
    ("fish", "usr/share/fish/vendor_completions.d/dio-trace.fish"),
];

/// `gzip -9n`: no name or time stamp, as Debian's packages compress.
fn gzip_to(data: &[u8], dst: &Path) -> Result<()> {
    use std::io::Write as _;
    let mut out = flate2::GzBuilder::new().write(std::fs::File::create(dst)?, flate2::Compression::best());
    out.write_all(data)?;
    out.finish()?;
    Ok(())
}

fn install(src: &Path, dst: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dst.parent().expect("absolute"))?;
    std::fs::copy(src, dst).with_context(|| format!("copying {}", src.display()))?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{cmd:?} failed with {}:\n{text}", out.status);
    }
    Ok(text)
}

/// The binary needs no loader and no shared library; the package installs
/// with `dpkg -i` (into a scratch root with its own dpkg database, so the
/// host's is untouched) and what it installed works.
pub fn check(d: &Dist) -> Result<()> {
    let needed = dynamic_needs(&std::fs::read(&d.binary)?)
        .with_context(|| format!("reading {} as ELF", d.binary.display()))?;
    ensure!(
        needed.is_empty(),
        "{} is not static: it needs {}",
        d.binary.display(),
        needed.join(", ")
    );
    println!("dist: {} has no dynamic dependencies", d.binary.display());

    let root = tempfile::tempdir()?;
    let admin = root.path().join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(dir))?;
    }
    std::fs::write(admin.join("status"), "")?;
    run_ok(
        Command::new("dpkg")
            .arg(format!("--root={}", root.path().display()))
            .args(["--force-not-root", "--force-script-chrootless", "-i"])
            .arg(&d.deb),
    )?;
    let listed = run_ok(
        Command::new("dpkg")
            .arg(format!("--root={}", root.path().display()))
            .args(["-s", "dio-trace"]),
    )?;
    ensure!(
        listed.contains("Status: install ok installed"),
        "dpkg -s dio-trace:\n{listed}"
    );
    let unit = root.path().join("lib/systemd/system/dio-trace.service");
    ensure!(
        std::fs::read(&unit)? == std::fs::read(workspace().join("deploy/systemd/dio-trace.service"))?,
        "{} is not the repository's unit",
        unit.display()
    );
    installed_docs(root.path())?;
    lintian(&d.deb)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        ensure!(
            std::env::var_os("CI").is_none(),
            "dist check: must run as root in CI"
        );
        println!("dist: SKIPPED running the installed dio-trace info: not root");
        return Ok(());
    }
    let info = Command::new(root.path().join("usr/bin/dio-trace"))
        .arg("info")
        .output()
        .context("running the installed dio-trace info")?;
    let text = String::from_utf8_lossy(&info.stdout);
    ensure!(
        info.status.success() && text.contains("write_begin"),
        "the installed `dio-trace info` exited {}:\n{text}{}",
        info.status,
        String::from_utf8_lossy(&info.stderr)
    );
    println!("dist: dpkg -i into a scratch root: the unit in place, `dio-trace info` exits 0");
    Ok(())
}

/// The installed package has `man dio-trace` and a page per subcommand,
/// and its bash completion loads in bash and completes `dio-trace`.
fn installed_docs(root: &Path) -> Result<()> {
    let man1 = root.join("usr/share/man/man1");
    for page in MAN_PAGES {
        let path = man1.join(format!("{page}.1.gz"));
        ensure!(path.is_file(), "the package has no {}", path.display());
    }
    let bash = root.join(COMPLETIONS[0].1);
    let loaded = run_ok(
        Command::new("bash")
            .arg("-c")
            .arg(format!("source '{}' && complete -p dio-trace", bash.display())),
    )?;
    ensure!(
        loaded.contains("dio-trace"),
        "bash did not load the completion: {loaded}"
    );
    for (_, dst) in &COMPLETIONS[1..] {
        ensure!(root.join(dst).is_file(), "the package has no {dst}");
    }
    println!(
        "dist: {} manual pages, completions for bash (loads), zsh and fish",
        MAN_PAGES.len()
    );
    Ok(())
}

/// The pages the package must carry, in xtask's own words: the tool's and
/// one per subcommand a user calls.
const MAN_PAGES: [&str; 9] = [
    "dio-trace",
    "dio-trace-run",
    "dio-trace-watch",
    "dio-trace-verify",
    "dio-trace-record",
    "dio-trace-check",
    "dio-trace-info",
    "dio-trace-write",
    "dio-trace-completions",
];

/// Debian's own package checks: no error and no warning, but for the tags
/// `deploy/lintian-overrides` explains (the package installs it, where
/// lintian reads it).
fn lintian(deb: &Path) -> Result<()> {
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--tag-display-limit", "0"])
        .arg(deb)
        .output()
        .context("running lintian (Debian package lintian; `cargo xtask setup` installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "lintian found errors or warnings in {}:\n{text}{}",
        deb.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "dist: lintian: no error, no warning ({} info or override lines)",
        text.lines().count()
    );
    Ok(())
}

/// What an ELF file needs at run time: a program interpreter (the dynamic
/// loader, `PT_INTERP`) and shared libraries (`DT_NEEDED`). Empty for a
/// static binary (static-pie keeps a `PT_DYNAMIC` for its own relocations,
/// with no `DT_NEEDED`).
fn dynamic_needs(data: &[u8]) -> Result<Vec<String>> {
    use object::{
        elf,
        read::elf::{Dyn as _, FileHeader as _, ProgramHeader as _},
    };
    let header = elf::FileHeader64::<object::Endianness>::parse(data)?;
    let endian = header.endian()?;
    let mut needs = Vec::new();
    for ph in header.program_headers(endian, data)? {
        if ph.p_type(endian) == elf::PT_INTERP {
            needs.push("a dynamic loader (PT_INTERP)".to_owned());
        }
        if let Some(entries) = ph.dynamic(endian, data)? {
            let n = entries
                .iter()
                .filter(|d| d.tag32(endian) == Some(elf::DT_NEEDED as i32))
                .count();
            if n > 0 {
                needs.push(format!("{n} shared libraries (DT_NEEDED)"));
            }
        }
    }
    Ok(needs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_is_told_from_a_static_one() {
        // This test binary is linked dynamically, as cargo builds it.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let needs = dynamic_needs(&me).unwrap();
        assert!(needs.iter().any(|n| n.contains("PT_INTERP")), "{needs:?}");
        assert!(needs.iter().any(|n| n.contains("DT_NEEDED")), "{needs:?}");
    }
}
