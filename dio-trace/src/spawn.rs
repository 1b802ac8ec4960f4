//! `dio-trace run -- CMD`: fork the command and hold it before `exec` until
//! its pid is in the follow map, so not one of its writes is missed (perf
//! and bpftrace's `-c` do the same). std's `Command::spawn` cannot do this:
//! it waits for the exec that our gate holds back.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::process::ExitStatusExt as _,
    },
    process::ExitStatus,
};

use crate::error::UsageError;

pub struct GatedChild {
    pid: i32,
    gate: Option<OwnedFd>,
    errors: Option<OwnedFd>,
    prog: String,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: valid out-array of two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these fds; we own them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Refuse a command that cannot be run, as `execvp` would find it, before
/// anything is loaded or attached: a typo is a usage error (exit 2) at
/// once, not after every program is in the kernel.
pub fn check_runnable(argv: &[String]) -> Result<(), UsageError> {
    let prog = argv
        .first()
        .ok_or_else(|| UsageError("no command given".into()))?;
    let runnable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file())
            && std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
                // SAFETY: a valid NUL-terminated path; access only reads it.
                .is_ok_and(|c| unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0)
    };
    let found = if prog.contains('/') {
        runnable(std::path::Path::new(prog))
    } else {
        std::env::var_os("PATH")
            .as_deref()
            .map(std::env::split_paths)
            .into_iter()
            .flatten()
            .any(|dir| runnable(&dir.join(prog)))
    };
    if found {
        Ok(())
    } else if prog.contains('/') {
        Err(UsageError(format!(
            "{prog}: no such executable file; check the path and its execute permission"
        )))
    } else {
        Err(UsageError(format!(
            "{prog}: command not found in PATH; give its path (./{prog}) or install it"
        )))
    }
}

/// Fork `argv`, held before exec until [`GatedChild::release`]. With
/// `stdout_to_stderr`, the command's stdout goes to our stderr (keeps NDJSON
/// on stdout parseable).
pub fn spawn_gated(argv: &[String], stdout_to_stderr: bool) -> anyhow::Result<GatedChild> {
    let prog = argv
        .first()
        .ok_or_else(|| UsageError("no command given".into()))?
        .clone();
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| UsageError("command arguments must not contain NUL bytes".into()))?;
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (gate_rd, gate_wr) = pipe()?;
    let (err_rd, err_wr) = pipe()?;
    // SAFETY: the child calls only async-signal-safe functions (read,
    // dup2, execvp, write, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error().into());
    }
    if pid == 0 {
        // SAFETY: see above; never returns.
        unsafe {
            libc::close(gate_wr.as_raw_fd());
            libc::close(err_rd.as_raw_fd());
            let mut b = 0u8;
            while libc::read(gate_rd.as_raw_fd(), (&raw mut b).cast(), 1) < 0
                && *libc::__errno_location() == libc::EINTR
            {}
            if stdout_to_stderr {
                libc::dup2(2, 1);
            }
            libc::execvp(ptrs[0], ptrs.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(err_wr.as_raw_fd(), (&raw const errno).cast(), 4);
            libc::_exit(127);
        }
    }
    drop(gate_rd);
    drop(err_wr);
    Ok(GatedChild {
        pid,
        gate: Some(gate_wr),
        errors: Some(err_rd),
        prog,
    })
}

impl GatedChild {
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Let the command exec; fails (a usage error) if exec failed.
    pub fn release(&mut self) -> anyhow::Result<()> {
        if let Some(gate) = self.gate.take() {
            // SAFETY: one byte from a live buffer to our pipe end.
            if unsafe { libc::write(gate.as_raw_fd(), [1u8].as_ptr().cast(), 1) } != 1 {
                return Err(io::Error::last_os_error().into());
            }
        }
        if let Some(errors) = self.errors.take() {
            // The write end closes on a successful exec: EOF means it ran.
            let mut errno = 0i32;
            // SAFETY: reading 4 bytes into a live i32.
            let n = unsafe { libc::read(errors.as_raw_fd(), (&raw mut errno).cast(), 4) };
            if n == 4 {
                let _ = self.wait_blocking();
                return Err(UsageError(format!(
                    "cannot run {}: {}",
                    self.prog,
                    io::Error::from_raw_os_error(errno)
                ))
                .into());
            }
        }
        Ok(())
    }

    /// Wait for the command to end (blocking; run it off the async thread).
    pub fn wait_blocking(&self) -> io::Result<ExitStatus> {
        let mut status = 0;
        loop {
            // SAFETY: our own child's pid; valid out-pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                return Ok(ExitStatus::from_raw(status));
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_that_cannot_run_are_refused_at_once() {
        let argv = |s: &str| vec![s.to_owned()];
        assert!(check_runnable(&argv("sh")).is_ok());
        assert!(check_runnable(&argv("/bin/sh")).is_ok());
        let err = check_runnable(&argv("no-such-cmd-dio-trace")).unwrap_err();
        assert!(err.0.contains("not found in PATH"), "{}", err.0);
        let err = check_runnable(&argv("/nonexistent-cmd")).unwrap_err();
        assert!(err.0.contains("no such executable"), "{}", err.0);
        // A file that exists but is not executable.
        assert!(check_runnable(&argv("/etc/passwd")).is_err());
        assert!(check_runnable(&[]).is_err());
    }
}
