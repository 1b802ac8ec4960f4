//! Known write patterns: what `verify`, the demo and the tests trace, and a
//! reproducer anyone can run under `dio-trace run`.
//!
//! Every pattern creates (truncates) its file, then writes `count` blocks
//! of `size` bytes. Whether the tracer must count a pattern's writes is part
//! of the pattern, so tests and `verify` agree on what to expect.

use std::{
    alloc::{Layout, alloc_zeroed, dealloc},
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::Path,
};

use anyhow::{Context as _, Result, bail};

/// Direct I/O needs buffers, offsets and lengths aligned to the logical
/// block size; 4096 covers every device in practice.
pub const ALIGN: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    /// O_DIRECT|O_SYNC appends (counted).
    OSyncAppend,
    /// O_DIRECT|O_DSYNC appends (counted).
    ODsyncAppend,
    /// O_DIRECT appends with pwritev2(RWF_SYNC) (counted).
    RwfSyncAppend,
    /// O_DIRECT appends with pwritev2(RWF_DSYNC) (counted).
    RwfDsyncAppend,
    /// O_DIRECT|O_SYNC overwrites inside the file's size (not extending: not counted).
    OSyncOverwrite,
    /// Plain O_DIRECT appends, no sync semantics (not counted).
    DirectAppend,
    /// O_DIRECT appends each followed by fsync() (not counted: the sync is the caller's).
    DirectAppendFsync,
    /// Buffered O_SYNC appends, not direct (not counted).
    BufferedSyncAppend,
}

impl Pattern {
    pub const ALL: [Pattern; 8] = [
        Pattern::OSyncAppend,
        Pattern::ODsyncAppend,
        Pattern::RwfSyncAppend,
        Pattern::RwfDsyncAppend,
        Pattern::OSyncOverwrite,
        Pattern::DirectAppend,
        Pattern::DirectAppendFsync,
        Pattern::BufferedSyncAppend,
    ];

    /// Does every write of this pattern count (size-extending, sync, direct)?
    pub fn counted(self) -> bool {
        matches!(
            self,
            Pattern::OSyncAppend | Pattern::ODsyncAppend | Pattern::RwfSyncAppend | Pattern::RwfDsyncAppend
        )
    }

    /// Does it write with O_DIRECT (so the tracer must see its writes)?
    pub fn direct(self) -> bool {
        self != Pattern::BufferedSyncAppend
    }

    /// The name on the command line.
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }

    fn open_flags(self) -> i32 {
        let base = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC;
        base | match self {
            Pattern::OSyncAppend | Pattern::OSyncOverwrite => libc::O_DIRECT | libc::O_SYNC,
            Pattern::ODsyncAppend => libc::O_DIRECT | libc::O_DSYNC,
            Pattern::RwfSyncAppend
            | Pattern::RwfDsyncAppend
            | Pattern::DirectAppend
            | Pattern::DirectAppendFsync => libc::O_DIRECT,
            Pattern::BufferedSyncAppend => libc::O_SYNC,
        }
    }

    fn rwf(self) -> i32 {
        match self {
            Pattern::RwfSyncAppend => libc::RWF_SYNC,
            Pattern::RwfDsyncAppend => libc::RWF_DSYNC,
            _ => 0,
        }
    }
}

/// A zeroed buffer aligned for direct I/O.
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    fn new(size: usize) -> Result<Self> {
        let layout = Layout::from_size_align(size, ALIGN).context("buffer layout")?;
        // SAFETY: size is non-zero (checked by the caller).
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            bail!("cannot allocate {size} bytes");
        }
        // Fill with a recognizable byte so written data is not all zeros.
        // SAFETY: ptr is valid for `size` bytes.
        unsafe { std::ptr::write_bytes(ptr, 0xd1, size) };
        Ok(Self { ptr, layout })
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor.
        unsafe { libc::close(self.0) };
    }
}

fn os_err(what: &str, file: &Path) -> anyhow::Error {
    anyhow::Error::new(std::io::Error::last_os_error()).context(format!("{what} {}", file.display()))
}

/// Run `pattern` against `file`. Returns the file's final size.
pub fn run(pattern: Pattern, file: &Path, count: u32, size: u64) -> Result<u64> {
    if size == 0 || !size.is_multiple_of(ALIGN as u64) {
        bail!("--size must be a positive multiple of {ALIGN} for direct I/O, got {size}");
    }
    let size = usize::try_from(size).context("--size too large")?;
    let buf = AlignedBuf::new(size)?;
    let cpath = CString::new(file.as_os_str().as_bytes()).context("file name contains NUL")?;
    if pattern == Pattern::OSyncOverwrite {
        preallocate(&cpath, file, count as usize * size, &buf, size)?;
    }
    let flags = pattern.open_flags()
        & if pattern == Pattern::OSyncOverwrite {
            !libc::O_TRUNC
        } else {
            !0
        };
    // SAFETY: valid C string; flags are plain open(2) flags.
    let fd = unsafe { libc::open(cpath.as_ptr(), flags, 0o644) };
    if fd < 0 {
        let e = os_err("cannot open", file);
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            return Err(e.context("the filesystem refused O_DIRECT (tmpfs?); use a file on ext4"));
        }
        return Err(e);
    }
    let fd = Fd(fd);
    for i in 0..count as usize {
        let off = (i * size) as i64;
        let iov = libc::iovec {
            iov_base: buf.ptr.cast(),
            iov_len: size,
        };
        // SAFETY: fd is open; iov points at a live buffer of `size` bytes.
        let n = unsafe { libc::pwritev2(fd.0, &iov, 1, off, pattern.rwf()) };
        if n != size as isize {
            return Err(os_err(&format!("write {i} of {count} failed on"), file));
        }
        // SAFETY: fd is open.
        if pattern == Pattern::DirectAppendFsync && unsafe { libc::fsync(fd.0) } != 0 {
            return Err(os_err("fsync failed on", file));
        }
    }
    let len = std::fs::metadata(file)
        .with_context(|| format!("stat {}", file.display()))?
        .len();
    Ok(len)
}

/// Write the file's blocks once and sync them, so overwrites do not extend.
fn preallocate(cpath: &CString, file: &Path, total: usize, buf: &AlignedBuf, size: usize) -> Result<()> {
    // SAFETY: valid C string.
    let fd = unsafe {
        libc::open(
            cpath.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(os_err("cannot create", file));
    }
    let fd = Fd(fd);
    for off in (0..total).step_by(size) {
        // SAFETY: live buffer of `size` bytes.
        let n = unsafe { libc::pwrite(fd.0, buf.ptr.cast(), size, off as i64) };
        if n != size as isize {
            return Err(os_err("cannot preallocate", file));
        }
    }
    // SAFETY: fd is open.
    if unsafe { libc::fsync(fd.0) } != 0 {
        return Err(os_err("fsync failed on", file));
    }
    Ok(())
}
