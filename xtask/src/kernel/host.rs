//! Running host programs and installing the Debian packages they come from.
//!
//! CI starts from a fresh Debian machine, so every task that shells out
//! first makes sure the package providing the tool is installed, and says
//! what it installs.

use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Set once `apt-get update` ran in this process: one refresh is enough.
static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Refreshes apt's package lists, at most once per process. A fresh
/// machine has empty lists, so searches and installs find nothing before.
pub fn apt_update_once() -> Result<bool> {
    if APT_UPDATED.swap(true, Ordering::SeqCst) {
        return Ok(false);
    }
    progress("running apt-get update (package lists are empty or stale)");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    Ok(true)
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
    if install().is_err() && apt_update_once()? {
        install()?;
    }
    let still: Vec<&str> = missing.iter().copied().filter(|p| !is_installed(p)).collect();
    if !still.is_empty() {
        bail!("apt-get could not install: {}", still.join(" "));
    }
    Ok(())
}

/// Package names matching the regular expression `pattern`
/// (`apt-cache search --names-only`). Refreshes the lists once if nothing
/// matches, since a fresh machine has none.
pub fn search_names(pattern: &str) -> Result<Vec<String>> {
    let search = || -> Result<Vec<String>> {
        let out = output(Command::new("apt-cache").args(["search", "--names-only", pattern]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(" - ").next())
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect())
    };
    let found = search()?;
    if found.is_empty() && apt_update_once()? {
        return search();
    }
    Ok(found)
}

/// The version apt would install for `package`, if any.
pub fn candidate_version(package: &str) -> Result<Option<String>> {
    let out = output(Command::new("apt-cache").args(["policy", package]))?;
    Ok(parse_candidate(&out))
}

/// Extracts `Candidate:` from `apt-cache policy` output.
fn parse_candidate(policy: &str) -> Option<String> {
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_owned)
}

/// Downloads `package=version` into `dir` with `apt-get download` and
/// returns the .deb's path.
pub fn download(package: &str, version: &str, dir: &std::path::Path) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    progress(format_args!("downloading {package} {version}"));
    run(Command::new("apt-get")
        .args(["download", "-q"])
        .arg(format!("{package}={version}"))
        .current_dir(dir))?;
    // apt names the file <package>_<version with ':' as %3a>_<arch>.deb.
    let prefix = format!("{package}_{}_", version.replace(':', "%3a"));
    let found = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        });
    found.with_context(|| format!("apt-get download left no {prefix}*.deb in {}", dir.display()))
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

    #[test]
    fn candidate_is_parsed() {
        let policy = "linux-source-6.1:\n  Installed: (none)\n  Candidate: 6.1.192-2\n  Version table:\n";
        assert_eq!(parse_candidate(policy).as_deref(), Some("6.1.192-2"));
        assert_eq!(
            parse_candidate("x:\n  Installed: (none)\n  Candidate: (none)\n"),
            None
        );
        assert_eq!(parse_candidate(""), None);
    }
}
