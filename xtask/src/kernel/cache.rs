//! The download/build cache, outside the work tree.
//!
//! Every entry is a directory named after a key derived from its inputs
//! (package version, or a hash of patch + config + source version). An
//! entry is filled in a temporary sibling and renamed into place, so a
//! killed build never leaves a half-made entry that looks finished.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use sha2::{Digest as _, Sha256};

use super::host::progress;

/// Default cache root; `DIO_TRACE_CACHE` overrides it.
const DEFAULT_ROOT: &str = "/var/cache/dio-trace";

/// Handle on the cache root.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache named by `DIO_TRACE_CACHE`, else `/var/cache/dio-trace`.
    pub fn from_env() -> Result<Self> {
        let root = std::env::var_os("DIO_TRACE_CACHE")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from);
        Self::at(root)
    }

    /// A cache rooted at `root` (created if missing).
    pub fn at(root: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&root).with_context(|| {
            format!(
                "creating cache directory {} (set DIO_TRACE_CACHE to move it)",
                root.display()
            )
        })?;
        Ok(Self { root })
    }

    /// A path inside the cache (not created).
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// Returns the entry directory `rel`, first filling it with `fill` if
    /// it does not exist yet. `fill` gets an empty temporary directory that
    /// becomes the entry when `fill` succeeds.
    pub fn entry(
        &self,
        rel: impl AsRef<Path>,
        what: &str,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let dir = self.path(rel);
        if dir.is_dir() {
            progress(format_args!("cached: {what} ({})", dir.display()));
            return Ok(dir);
        }
        let parent = dir.parent().context("cache entry has no parent")?;
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempdir_in(parent)
            .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
        fill(tmp.path()).with_context(|| format!("preparing {what}"))?;
        let tmp = tmp.keep();
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            // Another process may have finished the same entry first.
            let _ = std::fs::remove_dir_all(&tmp);
            if !dir.is_dir() {
                return Err(e).with_context(|| format!("moving {} to {}", tmp.display(), dir.display()));
            }
        }
        Ok(dir)
    }
}

/// Hex SHA-256 over `parts`, each length-prefixed so that moving bytes
/// from one part to the next changes the hash.
pub fn hash_parts(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex(&h.finalize())
}

/// Hex SHA-256 of a file's contents.
pub fn hash_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_length_prefixed() {
        assert_ne!(hash_parts(&[b"ab", b"c"]), hash_parts(&[b"a", b"bc"]));
        assert_eq!(hash_parts(&[b"x"]).len(), 64);
    }

    #[test]
    fn entry_is_filled_once() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let cache = Cache::at(tmp.path().to_owned())?;
        let mut calls = 0;
        for _ in 0..2 {
            let dir = cache.entry("a/b", "test entry", |d| {
                calls += 1;
                std::fs::write(d.join("f"), "x")?;
                Ok(())
            })?;
            assert_eq!(std::fs::read_to_string(dir.join("f"))?, "x");
        }
        assert_eq!(calls, 1);
        Ok(())
    }

    #[test]
    fn failed_fill_leaves_no_entry() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let cache = Cache::at(tmp.path().to_owned())?;
        assert!(cache.entry("e", "failing", |_| anyhow::bail!("no")).is_err());
        assert!(!cache.path("e").exists());
        assert_eq!(std::fs::read_dir(tmp.path())?.count(), 0);
        Ok(())
    }
}
