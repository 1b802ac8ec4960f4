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
use dio_trace_common::crash::Expect;

/// Direct I/O needs buffers, offsets and lengths aligned to the logical
/// block size; 4096 covers every device in practice.
pub const ALIGN: usize = 4096;

/// Writers of [`Pattern::ConcurrentOSyncAppend`].
pub const CONCURRENT_FILES: u32 = 8;

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
    /// O_DIRECT appends submitted through libaio's io_submit with RWF_DSYNC (counted).
    AioDsyncAppend,
    /// O_DIRECT appends submitted through io_uring with RWF_DSYNC (counted).
    UringDsyncAppend,
    /// 8 threads, each O_DIRECT|O_SYNC appending to its own file FILE/0..7 (counted).
    ConcurrentOSyncAppend,
    /// O_DIRECT|O_DSYNC|O_APPEND writes to a file that already holds a
    /// block, each asked for at offset 0: the kernel moves every one to the
    /// end of the file (counted, at the position the kernel wrote).
    OAppendDsync,
    /// O_DIRECT|O_DSYNC writes into fallocated (unwritten) space inside
    /// the file's size: they extend nothing, but their extents must be
    /// converted durably (counted, for their new blocks).
    ODsyncIntoFallocated,
    /// The same with pwritev2(RWF_DSYNC) (counted).
    RwfDsyncIntoFallocated,
    /// The same with O_SYNC (counted).
    OSyncIntoFallocated,
    /// O_DIRECT|O_SYNC overwrites inside the file's size (not extending: not counted).
    OSyncOverwrite,
    /// O_DIRECT|O_DSYNC overwrites of written blocks: a FUA device may
    /// rightly complete them without a sync (not counted).
    ODsyncOverwrite,
    /// Plain O_DIRECT appends, no sync semantics (not counted).
    DirectAppend,
    /// O_DIRECT appends each followed by fsync() (not counted: the sync is the caller's).
    DirectAppendFsync,
    /// Buffered O_SYNC appends, not direct (not counted).
    BufferedSyncAppend,
}

impl Pattern {
    pub const ALL: [Pattern; 16] = [
        Pattern::OSyncAppend,
        Pattern::ODsyncAppend,
        Pattern::RwfSyncAppend,
        Pattern::RwfDsyncAppend,
        Pattern::AioDsyncAppend,
        Pattern::UringDsyncAppend,
        Pattern::ConcurrentOSyncAppend,
        Pattern::OAppendDsync,
        Pattern::ODsyncIntoFallocated,
        Pattern::RwfDsyncIntoFallocated,
        Pattern::OSyncIntoFallocated,
        Pattern::OSyncOverwrite,
        Pattern::ODsyncOverwrite,
        Pattern::DirectAppend,
        Pattern::DirectAppendFsync,
        Pattern::BufferedSyncAppend,
    ];

    /// Does every write of this pattern count (sync, direct, and
    /// size-extending or into new blocks)?
    pub fn counted(self) -> bool {
        matches!(
            self,
            Pattern::OSyncAppend
                | Pattern::ODsyncAppend
                | Pattern::RwfSyncAppend
                | Pattern::RwfDsyncAppend
                | Pattern::AioDsyncAppend
                | Pattern::UringDsyncAppend
                | Pattern::ConcurrentOSyncAppend
                | Pattern::OAppendDsync
        ) || self.into_fallocated()
    }

    /// Does it write into fallocated space inside the file's size?
    pub fn into_fallocated(self) -> bool {
        matches!(
            self,
            Pattern::ODsyncIntoFallocated | Pattern::RwfDsyncIntoFallocated | Pattern::OSyncIntoFallocated
        )
    }

    /// Files written in parallel (each gets `count` writes).
    pub fn files(self) -> u32 {
        if self == Pattern::ConcurrentOSyncAppend {
            CONCURRENT_FILES
        } else {
            1
        }
    }

    /// Does it write with O_DIRECT (so the tracer must see its writes)?
    pub fn direct(self) -> bool {
        self != Pattern::BufferedSyncAppend
    }

    /// What the file holds once write `index` (of `count`, `size` bytes
    /// each) returned, when it and every earlier one was made durable:
    /// appends grow the file write by write (after the block an O_APPEND
    /// file starts with); writes into fallocated space find the size there
    /// and add data.
    pub fn expect_after(self, index: u32, count: u32, size: u64) -> Expect {
        let done = u64::from(index + 1) * size;
        match self {
            p if p.into_fallocated() => Expect {
                size: u64::from(count) * size,
                data: done,
            },
            Pattern::OAppendDsync => Expect {
                size: done + size,
                data: done + size,
            },
            _ => Expect {
                size: done,
                data: done,
            },
        }
    }

    /// The index of the write a report at `offset` is (the inverse of
    /// where [`run`] writes), if it is one of `count`.
    pub fn index_at(self, offset: i64, count: u32, size: u64) -> Option<u32> {
        let block = u64::try_from(offset).ok()? / size;
        let index = if self == Pattern::OAppendDsync {
            block.checked_sub(1)?
        } else {
            block
        };
        u32::try_from(index).ok().filter(|i| *i < count)
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
            Pattern::OSyncAppend
            | Pattern::OSyncOverwrite
            | Pattern::ConcurrentOSyncAppend
            | Pattern::OSyncIntoFallocated => libc::O_DIRECT | libc::O_SYNC,
            Pattern::ODsyncAppend | Pattern::ODsyncIntoFallocated | Pattern::ODsyncOverwrite => {
                libc::O_DIRECT | libc::O_DSYNC
            }
            Pattern::OAppendDsync => libc::O_DIRECT | libc::O_DSYNC | libc::O_APPEND,
            Pattern::RwfSyncAppend
            | Pattern::RwfDsyncAppend
            | Pattern::RwfDsyncIntoFallocated
            | Pattern::AioDsyncAppend
            | Pattern::UringDsyncAppend
            | Pattern::DirectAppend
            | Pattern::DirectAppendFsync => libc::O_DIRECT,
            Pattern::BufferedSyncAppend => libc::O_SYNC,
        }
    }

    fn rwf(self) -> i32 {
        match self {
            Pattern::RwfSyncAppend => libc::RWF_SYNC,
            Pattern::RwfDsyncAppend
            | Pattern::RwfDsyncIntoFallocated
            | Pattern::AioDsyncAppend
            | Pattern::UringDsyncAppend => libc::RWF_DSYNC,
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

/// Called as each write returns, with the writer (the file's index; 0
/// but for the concurrent pattern) and the write's index: where
/// `verify --crash` drops its dm-log-writes marks.
pub type OnReturn<'a> = &'a (dyn Fn(u32, u32) -> Result<()> + Sync);

/// Run `pattern` against `file` (a directory for the concurrent pattern).
/// Returns the bytes in the file(s) afterwards.
pub fn run(pattern: Pattern, file: &Path, count: u32, size: u64, on_return: Option<OnReturn>) -> Result<u64> {
    if size == 0 || !size.is_multiple_of(ALIGN as u64) {
        bail!("--size must be a positive multiple of {ALIGN} for direct I/O, got {size}");
    }
    let size = usize::try_from(size).context("--size too large")?;
    if pattern.files() == 1 {
        return write_file(pattern, file, count, size, 0, on_return);
    }
    std::fs::create_dir_all(file).with_context(|| format!("cannot create directory {}", file.display()))?;
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..pattern.files())
            .map(|i| {
                let f = file.join(i.to_string());
                s.spawn(move || write_file(pattern, &f, count, size, i, on_return))
            })
            .collect();
        writers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| anyhow::anyhow!("a writer thread panicked"))?
            })
            .sum::<Result<u64>>()
    })
}

fn write_file(
    pattern: Pattern,
    file: &Path,
    count: u32,
    size: usize,
    writer: u32,
    on_return: Option<OnReturn>,
) -> Result<u64> {
    let buf = AlignedBuf::new(size)?;
    let cpath = CString::new(file.as_os_str().as_bytes()).context("file name contains NUL")?;
    let keep = match pattern {
        Pattern::OSyncOverwrite | Pattern::ODsyncOverwrite => count as usize * size,
        p if p.into_fallocated() => count as usize * size,
        Pattern::OAppendDsync => size,
        _ => 0,
    };
    if keep > 0 {
        preallocate(&cpath, file, keep, &buf, size, pattern.into_fallocated())?;
    }
    let flags = pattern.open_flags() & if keep > 0 { !libc::O_TRUNC } else { !0 };
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
    let mut submit: Box<dyn Submit> = match pattern {
        Pattern::AioDsyncAppend => Box::new(aio::Aio::new().context("io_setup")?),
        Pattern::UringDsyncAppend => Box::new(uring::Uring::new().context("io_uring_setup")?),
        _ => Box::new(Pwrite),
    };
    for i in 0..count as usize {
        // O_APPEND: Linux appends whatever offset pwrite names.
        let off = if pattern == Pattern::OAppendDsync {
            0
        } else {
            (i * size) as i64
        };
        let n = submit
            .write(fd.0, &buf, size, off, pattern.rwf())
            .with_context(|| format!("write {i} of {count} to {}", file.display()))?;
        if n != size {
            bail!(
                "short write {i} of {count} to {}: {n} of {size} bytes",
                file.display()
            );
        }
        // SAFETY: fd is open.
        if pattern == Pattern::DirectAppendFsync && unsafe { libc::fsync(fd.0) } != 0 {
            return Err(os_err("fsync failed on", file));
        }
        if let Some(f) = on_return {
            f(writer, i as u32).with_context(|| format!("after write {i} to {}", file.display()))?;
        }
    }
    let len = std::fs::metadata(file)
        .with_context(|| format!("stat {}", file.display()))?
        .len();
    Ok(len)
}

/// One way of submitting a write and waiting for it.
trait Submit {
    fn write(&mut self, fd: i32, buf: &AlignedBuf, len: usize, off: i64, rwf: i32) -> std::io::Result<usize>;
}

struct Pwrite;

impl Submit for Pwrite {
    fn write(&mut self, fd: i32, buf: &AlignedBuf, len: usize, off: i64, rwf: i32) -> std::io::Result<usize> {
        let iov = libc::iovec {
            iov_base: buf.ptr.cast(),
            iov_len: len,
        };
        // SAFETY: fd is open; iov points at a live buffer of `len` bytes.
        let n = unsafe { libc::pwritev2(fd, &iov, 1, off, rwf) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// Linux AIO (what libaio wraps), through the raw syscalls.
mod aio {
    use std::io;

    use super::{AlignedBuf, Submit};

    /// `struct iocb` of linux/aio_abi.h (x86-64, little endian).
    #[repr(C)]
    #[derive(Default)]
    struct Iocb {
        data: u64,
        key: u32,
        rw_flags: u32,
        opcode: u16,
        reqprio: i16,
        fildes: u32,
        buf: u64,
        nbytes: u64,
        offset: i64,
        reserved2: u64,
        flags: u32,
        resfd: u32,
    }
    const _: () = assert!(std::mem::size_of::<Iocb>() == 64);

    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct IoEvent {
        data: u64,
        obj: u64,
        res: i64,
        res2: i64,
    }

    const IOCB_CMD_PWRITE: u16 = 1;

    pub struct Aio {
        ctx: libc::c_ulong,
    }

    fn check(r: libc::c_long) -> io::Result<libc::c_long> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    impl Aio {
        pub fn new() -> io::Result<Self> {
            let mut ctx: libc::c_ulong = 0;
            // SAFETY: io_setup with a valid out-pointer.
            check(unsafe { libc::syscall(libc::SYS_io_setup, 1, &mut ctx) })?;
            Ok(Self { ctx })
        }
    }

    impl Drop for Aio {
        fn drop(&mut self) {
            // SAFETY: our context.
            unsafe { libc::syscall(libc::SYS_io_destroy, self.ctx) };
        }
    }

    impl Submit for Aio {
        fn write(&mut self, fd: i32, buf: &AlignedBuf, len: usize, off: i64, rwf: i32) -> io::Result<usize> {
            let mut cb = Iocb {
                opcode: IOCB_CMD_PWRITE,
                fildes: fd as u32,
                buf: buf.ptr as u64,
                nbytes: len as u64,
                offset: off,
                rw_flags: rwf as u32,
                ..Iocb::default()
            };
            let mut list = [&raw mut cb];
            // SAFETY: one valid iocb pointing at a live buffer.
            check(unsafe { libc::syscall(libc::SYS_io_submit, self.ctx, 1, list.as_mut_ptr()) })?;
            let mut ev = [IoEvent::default()];
            // SAFETY: room for one event; no timeout (wait).
            check(unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    self.ctx,
                    1,
                    1,
                    ev.as_mut_ptr(),
                    std::ptr::null::<u8>(),
                )
            })?;
            if ev[0].res < 0 {
                return Err(io::Error::from_raw_os_error(-ev[0].res as i32));
            }
            Ok(ev[0].res as usize)
        }
    }
}

/// io_uring, one write in flight at a time.
mod uring {
    use std::io;

    use io_uring::{IoUring, opcode, types};

    use super::{AlignedBuf, Submit};

    pub struct Uring {
        ring: IoUring,
    }

    impl Uring {
        pub fn new() -> io::Result<Self> {
            Ok(Self {
                ring: IoUring::new(4)?,
            })
        }
    }

    impl Submit for Uring {
        fn write(&mut self, fd: i32, buf: &AlignedBuf, len: usize, off: i64, rwf: i32) -> io::Result<usize> {
            let sqe = opcode::Write::new(types::Fd(fd), buf.ptr, len as u32)
                .offset(off as u64)
                .rw_flags(rwf)
                .build();
            // SAFETY: the buffer outlives the submission (we wait for it).
            unsafe { self.ring.submission().push(&sqe) }
                .map_err(|_| io::Error::other("io_uring queue full"))?;
            self.ring.submit_and_wait(1)?;
            let cqe = self
                .ring
                .completion()
                .next()
                .ok_or_else(|| io::Error::other("no io_uring completion"))?;
            if cqe.result() < 0 {
                return Err(io::Error::from_raw_os_error(-cqe.result()));
            }
            Ok(cqe.result() as usize)
        }
    }
}

/// Give the file `total` bytes and sync them, so later writes do not
/// extend it: written blocks, or with `unwritten` fallocated ones
/// (`fallocate` mode 0: allocated, unwritten, inside `i_size`).
fn preallocate(
    cpath: &CString,
    file: &Path,
    total: usize,
    buf: &AlignedBuf,
    size: usize,
    unwritten: bool,
) -> Result<()> {
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
    // SAFETY: fd is open; plain integers.
    if unwritten && unsafe { libc::fallocate(fd.0, 0, 0, total as libc::off_t) } != 0 {
        return Err(os_err("cannot fallocate", file));
    }
    for off in (0..total).step_by(size).filter(|_| !unwritten) {
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
