//! Where `verify` puts each pattern's file: on f2fs the place decides the
//! sync's path, and so what a crash keeps (NOTES §8). An fsync takes a
//! checkpoint of the in-memory inode, with whatever size it had, when the
//! file has a second hard link (`CP_HARDLINK`) or its directory was never
//! checkpointed (a new directory's first fsync, `CP_NODE_NEED_CP`);
//! otherwise it writes the file's node pages for roll-forward recovery,
//! which rebuilds the size. On ext4 and XFS the place changes nothing the
//! verdict rests on, which a run there shows too.

use std::{
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Layout {
    /// In the filesystem's root (checkpointed by mkfs): f2fs's fsyncs roll
    /// forward.
    Root,
    /// In a directory made just before: on f2fs the first fsync takes a
    /// checkpoint, later ones roll forward.
    NewDir,
    /// In a directory made and synced before (`syncfs`): f2fs's fsyncs
    /// roll forward.
    SyncedDir,
    /// In the root, each file with a second hard link (`NAME.link`) made
    /// before the first write: every f2fs fsync takes a checkpoint.
    Hardlinked,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Root => "root",
            Layout::NewDir => "new-dir",
            Layout::SyncedDir => "synced-dir",
            Layout::Hardlinked => "hardlinked",
        }
    }

    /// The path, relative to the directory verify writes in, of the file
    /// (or, for a pattern with several writers, the folder of files)
    /// called `name`.
    pub fn place(self, name: &str) -> PathBuf {
        match self {
            Layout::Root | Layout::Hardlinked => PathBuf::from(name),
            Layout::NewDir | Layout::SyncedDir => Path::new(&format!("{name}.d")).join(name),
        }
    }

    /// Make what the layout needs before a pattern writes `rel` under
    /// `root`: its directory (synced or not), or its files with their
    /// second links. `writers` above 1: `rel` is a folder of files named
    /// 0, 1, ... (the concurrent pattern).
    pub fn prepare(self, root: &Path, rel: &Path, writers: u32) -> Result<()> {
        let at = root.join(rel);
        match self {
            Layout::Root => {}
            Layout::NewDir | Layout::SyncedDir => {
                let dir = at.parent().expect("a placed file has a folder");
                std::fs::create_dir(dir)
                    .with_context(|| format!("cannot create directory {}", dir.display()))?;
                if self == Layout::SyncedDir {
                    syncfs(dir)?;
                }
            }
            Layout::Hardlinked => {
                let files: Vec<PathBuf> = if writers > 1 {
                    std::fs::create_dir(&at)
                        .with_context(|| format!("cannot create directory {}", at.display()))?;
                    (0..writers).map(|w| at.join(w.to_string())).collect()
                } else {
                    vec![at]
                };
                for f in files {
                    std::fs::File::create(&f).with_context(|| format!("cannot create {}", f.display()))?;
                    let mut link = f.clone().into_os_string();
                    link.push(".link");
                    std::fs::hard_link(&f, &link)
                        .with_context(|| format!("cannot give {} a second hard link", f.display()))?;
                }
            }
        }
        Ok(())
    }
}

/// `syncfs(2)` on the filesystem holding `dir`: on f2fs a checkpoint,
/// which makes the directory's node durable.
fn syncfs(dir: &Path) -> Result<()> {
    let d = std::fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    // SAFETY: `d` is open for the call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("syncfs on {}", dir.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_layout_makes_what_it_says() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for (l, writers) in [
            (Layout::Root, 1),
            (Layout::NewDir, 1),
            (Layout::SyncedDir, 1),
            (Layout::Hardlinked, 1),
            (Layout::Hardlinked, 3),
            (Layout::NewDir, 3),
        ] {
            let name = format!("{}-{writers}", l.name());
            let rel = l.place(&name);
            l.prepare(root, &rel, writers).unwrap();
            let at = root.join(&rel);
            match l {
                Layout::Root => assert!(!at.exists() && rel == Path::new(&name)),
                Layout::NewDir | Layout::SyncedDir => {
                    assert!(at.parent().unwrap().is_dir() && !at.exists(), "{rel:?}");
                    assert_ne!(at.parent().unwrap(), root);
                }
                Layout::Hardlinked => {
                    let files: Vec<PathBuf> = if writers > 1 {
                        (0..writers).map(|w| at.join(w.to_string())).collect()
                    } else {
                        vec![at.clone()]
                    };
                    for f in files {
                        use std::os::unix::fs::MetadataExt as _;
                        assert_eq!(std::fs::metadata(&f).unwrap().nlink(), 2, "{f:?}");
                    }
                }
            }
        }
        // A second prepare of a made directory is an error, not a reuse.
        let rel = Layout::NewDir.place("new-dir-1");
        assert!(Layout::NewDir.prepare(root, &rel, 1).is_err());
    }
}
