//! `watch --output FILE`: reports appended to a file that SIGHUP reopens,
//! so logrotate can move it away (`postrotate: systemctl kill -s HUP`,
//! or `kill -HUP PID`) and the next line goes to a new file.
//!
//! Reporters flush once per line; the file is reopened only at a flush,
//! so a line never straddles two files.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

/// Set by the SIGHUP handler, taken by the next flush.
static REOPEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sighup(_: libc::c_int) {
    // Async-signal-safe: one atomic store.
    REOPEN.store(true, Ordering::Relaxed);
}

pub struct Output {
    path: PathBuf,
    file: File,
    pending: Vec<u8>,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Output {
    /// Open `path` for appending and make SIGHUP reopen it.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = open(path)?;
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(libc::SIGHUP, on_sighup as *const () as libc::sighandler_t) };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            pending: Vec::new(),
        })
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if REOPEN.swap(false, Ordering::Relaxed) {
            self.file = open(&self.path)?;
        }
        self.file.write_all(&self.pending)?;
        self.pending.clear();
        self.file.flush()
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}
