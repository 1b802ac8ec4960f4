//! Running host programs and installing the Debian packages they come from.
//!
//! CI starts from a fresh Debian machine, so every task that shells out
//! first makes sure the package providing the tool is installed, and says
//! what it installs.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// Prints one progress line. Progress goes to stderr so that `vm run`'s
/// stdout carries only the guest console.
pub fn progress(msg: impl std::fmt::Display) {
    eprintln!("xtask: {msg}");
}

/// Renders a command line for error messages.
pub fn describe(cmd: &Command) -> String {
    let args = cmd.get_args().map(OsStr::to_string_lossy);
    std::iter::once(cmd.get_program().to_string_lossy())
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with inherited stdout/stderr and fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed: {status}", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; on failure the error carries stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}\n{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", describe(cmd)))
}

/// Whether dpkg says `package` is installed.
fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).ends_with(" installed"))
}

/// Installs whichever of `packages` are missing, with `apt-get install -y`.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    progress(format_args!("installing Debian packages: {}", missing.join(" ")));
    let install = || {
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if install().is_err() && super::apt::Apt::host().update_once()? {
        install()?;
    }
    let still: Vec<&str> = missing.iter().copied().filter(|p| !is_installed(p)).collect();
    if !still.is_empty() {
        bail!("apt-get could not install: {}", still.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_packages_are_told_apart() {
        // dpkg itself is installed on every Debian machine.
        assert!(is_installed("dpkg"));
        assert!(!is_installed("dio-trace-no-such-package"));
    }
}
