//! apt, for kernel packages: the host's own suites, or another Debian suite
//! (bullseye, trixie-backports, ...) through a private sources list.
//!
//! The host's apt sources are never changed (NOTES §7): another suite gets
//! its own `sources.list`, package lists and download cache under the
//! kernel cache, built from the URI and keyring of the machine's own
//! Debian source with only the suite name changed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context as _, Result, bail};

use super::cache::Cache;
use super::host::{self, progress};

/// One way to ask apt: the host's configuration, or one other suite's.
pub struct Apt {
    /// `-o` options that point apt at a private configuration.
    options: Vec<String>,
    /// For messages: "the host's suites" or the suite's name.
    label: String,
}

/// Suites (by label) whose lists were refreshed in this process.
static UPDATED: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl Apt {
    /// apt as the host has it configured.
    pub fn host() -> Self {
        Self {
            options: Vec::new(),
            label: "the host's suites".into(),
        }
    }

    /// apt for Debian suite `suite` alone, configured under `cache`.
    pub fn suite(suite: &str, cache: &Cache) -> Result<Self> {
        let (uri, keyring) = debian_source()?;
        let dir = cache.path(format!("apt/{suite}"));
        for sub in ["lists/partial", "archives/partial"] {
            std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("creating {}", dir.display()))?;
        }
        let signed = keyring.map(|k| format!("[signed-by={k}] ")).unwrap_or_default();
        let list = dir.join("sources.list");
        std::fs::write(&list, format!("deb {signed}{uri} {suite} main\n"))
            .with_context(|| format!("writing {}", list.display()))?;
        let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
        Ok(Self {
            options: vec![
                opt("Dir::Etc::sourcelist", &list),
                "Dir::Etc::sourceparts=/nonexistent".into(),
                opt("Dir::State::Lists", &dir.join("lists")),
                opt("Dir::Cache", &dir),
                opt("Dir::Cache::archives", &dir.join("archives")),
            ],
            label: format!("Debian {suite}"),
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for o in &self.options {
            cmd.arg("-o").arg(o);
        }
        cmd
    }

    /// Refreshes the package lists, at most once per process and suite. A
    /// fresh machine (or a new private suite) has empty lists.
    pub fn update_once(&self) -> Result<bool> {
        {
            let mut done = UPDATED.lock().unwrap_or_else(|p| p.into_inner());
            if done.contains(&self.label) {
                return Ok(false);
            }
            done.push(self.label.clone());
        }
        progress(format_args!("running apt-get update for {}", self.label));
        host::run(self.command("apt-get").args(["update", "-q"]))?;
        Ok(true)
    }

    /// Package names matching the regular expression `pattern`; refreshes
    /// the lists once if nothing matches.
    pub fn search_names(&self, pattern: &str) -> Result<Vec<String>> {
        let search = || -> Result<Vec<String>> {
            let out = host::output(
                self.command("apt-cache")
                    .args(["search", "--names-only", pattern]),
            )?;
            Ok(out
                .lines()
                .filter_map(|l| l.split(" - ").next())
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect())
        };
        let found = search()?;
        if found.is_empty() && self.update_once()? {
            return search();
        }
        Ok(found)
    }

    /// The version apt would install for `package`, if any (refreshing
    /// the lists once if it knows none).
    pub fn candidate_version(&self, package: &str) -> Result<Option<String>> {
        let policy = || host::output(self.command("apt-cache").args(["policy", package]));
        if let Some(v) = parse_candidate(&policy()?) {
            return Ok(Some(v));
        }
        if self.update_once()? {
            return Ok(parse_candidate(&policy()?));
        }
        Ok(None)
    }

    /// `package=version`'s .deb in `dir`, downloaded unless already there.
    pub fn fetch(&self, package: &str, version: &str, dir: &Path) -> Result<PathBuf> {
        // apt names the file <package>_<version with ':' as %3a>_<arch>.deb.
        let prefix = format!("{package}_{}_", version.replace(':', "%3a"));
        let find = || -> Option<PathBuf> {
            std::fs::read_dir(dir)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
                })
        };
        if let Some(found) = find() {
            progress(format_args!("cached: {}", found.display()));
            return Ok(found);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        progress(format_args!(
            "downloading {package} {version} from {}",
            self.label
        ));
        host::run(
            self.command("apt-get")
                .args(["download", "-q"])
                .arg(format!("{package}={version}"))
                .current_dir(dir),
        )?;
        find().with_context(|| format!("apt-get download left no {prefix}*.deb in {}", dir.display()))
    }
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

/// The URI and keyring of the host's main Debian source (the one whose
/// path ends in `/debian`), from deb822 `.sources` files or one-line lists.
fn debian_source() -> Result<(String, Option<String>)> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        if let Some(found) = parse_debian_source(&text) {
            return Ok(found);
        }
    }
    bail!(
        "no Debian archive (a URI ending in /debian) in /etc/apt/sources.list or sources.list.d: \
         cannot reach other Debian suites for kernel packages"
    )
}

fn is_debian_uri(uri: &str) -> bool {
    uri.trim_end_matches('/').ends_with("/debian")
}

/// One file's Debian source: deb822 stanzas (`URIs:`, `Signed-By:`) or
/// `deb [signed-by=K] URI suite ...` lines.
fn parse_debian_source(text: &str) -> Option<(String, Option<String>)> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| v.trim().to_owned())
            })
        };
        if let Some(uris) = field("URIs")
            && let Some(uri) = uris.split_whitespace().find(|u| is_debian_uri(u))
        {
            return Some((uri.to_owned(), field("Signed-By")));
        }
    }
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("deb ") else {
            continue;
        };
        let mut keyring = None;
        let rest = match rest.trim_start().strip_prefix('[') {
            Some(opts) => {
                let (opts, after) = opts.split_once(']')?;
                keyring = opts
                    .split_whitespace()
                    .find_map(|o| o.strip_prefix("signed-by="))
                    .map(str::to_owned);
                after
            }
            None => rest,
        };
        if let Some(uri) = rest.split_whitespace().next().filter(|u| is_debian_uri(u)) {
            return Some((uri.to_owned(), keyring));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn debian_source_from_deb822_skips_security_and_others() {
        let text = "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\n\
                    Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\
                    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
        assert_eq!(
            parse_debian_source(text),
            Some((
                "http://deb.debian.org/debian".into(),
                Some("/usr/share/keyrings/debian-archive-keyring.gpg".into())
            ))
        );
        assert_eq!(parse_debian_source("URIs: https://example.org/apt\n"), None);
    }

    #[test]
    fn debian_source_from_one_line_lists() {
        assert_eq!(
            parse_debian_source("# x\ndeb [arch=amd64 signed-by=/k.gpg] http://m/debian/ bookworm main\n"),
            Some(("http://m/debian/".into(), Some("/k.gpg".into())))
        );
        assert_eq!(
            parse_debian_source("deb http://m/debian bookworm main"),
            Some(("http://m/debian".into(), None))
        );
        assert_eq!(
            parse_debian_source("deb https://packages.example/apt x main"),
            None
        );
    }
}
