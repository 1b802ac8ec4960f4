//! Starting QEMU and watching its serial console.

use std::io::{BufRead as _, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::console::{End, Outcome, Signal, classify};
use super::{ConsoleMode, DiskBus, VmOptions};
use crate::kernel::Kernel;
use crate::kernel::host::{describe, ensure_packages, progress};

/// How long to keep reading after a panic or lockup report before killing
/// QEMU (with `panic=-1` a panicking guest resets, and `-no-reboot` makes
/// QEMU exit, so this is only a backstop).
const GRACE: Duration = Duration::from_secs(10);

/// Inputs of one QEMU run.
pub struct Boot<'a> {
    pub kernel: &'a Kernel,
    pub initrd: &'a Path,
    pub disk: Option<&'a Path>,
    pub opts: &'a VmOptions,
}

/// Runs QEMU for `boot` until the guest is done, dead or out of time.
pub fn run(boot: &Boot<'_>) -> Result<Outcome> {
    ensure_packages(&["qemu-system-x86"])?;
    let mut cmd = command(boot);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{}`", describe(&cmd)))?;
    let lines = pump(&mut child)?;
    let watched = watch(&lines, boot.opts, start);
    if watched.kill {
        // Already-exited children make kill fail harmlessly.
        let _ = child.kill();
    }
    let status = child.wait().context("waiting for QEMU")?;
    let outcome = Outcome {
        end: watched.end.unwrap_or_else(|| End::Vanished(status.to_string())),
        console: watched.console,
        elapsed: start.elapsed(),
        streamed: boot.opts.console == ConsoleMode::Stream,
    };
    progress(format_args!(
        "{} ({:.1} s in QEMU)",
        outcome.end,
        outcome.elapsed.as_secs_f64()
    ));
    Ok(outcome)
}

/// The QEMU command line. `-no-reboot` turns the guest's `reboot -f` and
/// `panic=-1` resets into a QEMU exit.
fn command(boot: &Boot<'_>) -> Command {
    let opts = boot.opts;
    let mut append = vec![
        "console=ttyS0".to_owned(),
        "panic=-1".to_owned(),
        "rdinit=/init".to_owned(),
    ];
    append.extend(opts.append.iter().cloned());
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
    ])
    .arg("-m")
    .arg(format!("{}M", opts.memory_mib))
    .arg("-smp")
    .arg(opts.cpus.to_string())
    .arg("-kernel")
    .arg(&boot.kernel.bzimage)
    .arg("-initrd")
    .arg(boot.initrd)
    .arg("-append")
    .arg(append.join(" "));
    if let Some(disk) = boot.disk {
        let mut drive = std::ffi::OsString::from("file=");
        drive.push(disk);
        match opts.disk_bus {
            DiskBus::Virtio => {
                drive.push(",format=raw,if=virtio");
                cmd.arg("-drive").arg(drive);
            }
            DiskBus::Nvme => {
                drive.push(",format=raw,if=none,id=scratch");
                cmd.arg("-drive")
                    .arg(drive)
                    .args(["-device", "nvme,drive=scratch,serial=dio-trace"]);
            }
        }
    }
    cmd
}

/// Forwards QEMU's stdout (the serial console) and stderr line by line into
/// one channel; it disconnects when both pipes close, i.e. QEMU exited.
fn pump(child: &mut Child) -> Result<Receiver<String>> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().context("QEMU has no stdout pipe")?;
    let stderr = child.stderr.take().context("QEMU has no stderr pipe")?;
    forward(stdout, "", tx.clone());
    forward(stderr, "qemu: ", tx);
    Ok(rx)
}

fn forward(pipe: impl Read + Send + 'static, prefix: &'static str, tx: Sender<String>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = clean(&String::from_utf8_lossy(&buf));
                    if tx.send(format!("{prefix}{line}")).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// Drops carriage returns and terminal escapes (the firmware clears the
/// screen on the line where the kernel's first message starts).
fn clean(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' | '\n' => {}
            // CSI: ESC [ parameters, then one final byte in '@'..='~'.
            '\x1b' if chars.peek() == Some(&'[') => {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // Any other escape: ESC plus one character (e.g. ESC c, reset).
            '\x1b' => {
                chars.next();
            }
            c => out.push(c),
        }
    }
    out
}

/// What watching the console found.
struct Watched {
    end: Option<End>,
    console: String,
    /// QEMU is still running and must be killed.
    kill: bool,
}

/// Reads console lines until QEMU exits, the guest reports its status, or
/// a deadline passes. Once the outcome is known QEMU gets [`GRACE`] to exit
/// by itself (the guest unmounts and reboots after its exit marker; a
/// panicking kernel resets).
fn watch(lines: &Receiver<String>, opts: &VmOptions, start: Instant) -> Watched {
    let deadline = start + opts.timeout;
    let mut end: Option<End> = None;
    let mut stop_by: Option<Instant> = None;
    let mut console = String::new();
    loop {
        let limit = stop_by.map_or(deadline, |t| t.min(deadline));
        let now = Instant::now();
        if now >= limit {
            let end = end.unwrap_or(End::TimedOut(opts.timeout));
            return Watched {
                end: Some(end),
                console,
                kill: true,
            };
        }
        match lines.recv_timeout(limit - now) {
            Ok(line) => {
                if opts.console == ConsoleMode::Stream {
                    println!("{line}");
                }
                update(&mut end, classify(&line));
                if end.is_some() && stop_by.is_none() {
                    stop_by = Some(Instant::now() + GRACE);
                }
                console.push_str(&line);
                console.push('\n');
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Watched {
                    end,
                    console,
                    kill: false,
                };
            }
        }
    }
}

/// Folds one line's signal into the outcome so far: the script's exit
/// status is final; a panic outranks a lockup report.
fn update(end: &mut Option<End>, signal: Signal) {
    match signal {
        Signal::Exit(code) => *end = Some(End::Exited(code)),
        Signal::InitError(msg) if end.is_none() => *end = Some(End::InitFailed(msg)),
        Signal::Panic if matches!(end, None | Some(End::Hung(_))) => *end = Some(End::Panicked),
        Signal::Hang(why) if end.is_none() => *end = Some(End::Hung(why)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch_lines(lines: &[&str], timeout: Duration) -> Watched {
        let (tx, rx) = mpsc::channel();
        for l in lines {
            tx.send((*l).to_owned()).ok();
        }
        drop(tx);
        let opts = VmOptions {
            timeout,
            console: ConsoleMode::Quiet,
            ..VmOptions::default()
        };
        watch(&rx, &opts, Instant::now())
    }

    #[test]
    fn escapes_are_removed() {
        assert_eq!(
            clean("Booting from ROM..\x1bc\x1b[?7l\x1b[2JLinux version 6.1\r\n"),
            "Booting from ROM..Linux version 6.1"
        );
        assert_eq!(clean("plain"), "plain");
    }

    #[test]
    fn exit_marker_wins() {
        let w = watch_lines(
            &["boot", "DIO-TRACE-VM-EXIT=7", "reboot: Restarting system"],
            Duration::from_secs(5),
        );
        assert_eq!(w.end, Some(End::Exited(7)));
        assert!(!w.kill);
        assert!(w.console.contains("reboot: Restarting system"));
    }

    #[test]
    fn panic_is_reported() {
        let w = watch_lines(
            &["x", "Kernel panic - not syncing: sysrq triggered crash"],
            Duration::from_secs(5),
        );
        assert_eq!(w.end, Some(End::Panicked));
    }

    #[test]
    fn silence_times_out() {
        let (_tx, rx) = mpsc::channel::<String>();
        let opts = VmOptions {
            timeout: Duration::from_millis(50),
            console: ConsoleMode::Quiet,
            ..VmOptions::default()
        };
        let w = watch(&rx, &opts, Instant::now());
        assert_eq!(w.end, Some(End::TimedOut(Duration::from_millis(50))));
        assert!(w.kill);
    }

    #[test]
    fn qemu_gets_disk_and_console() {
        let kernel = Kernel {
            spec: crate::kernel::KernelSpec::named("buggy-6.1"),
            bzimage: "/k".into(),
            modules: None,
            ext4_btf: None,
        };
        let opts = VmOptions::default();
        let boot = Boot {
            kernel: &kernel,
            initrd: Path::new("/i"),
            disk: Some(Path::new("/d.img")),
            opts: &opts,
        };
        let line = describe(&command(&boot));
        assert!(line.contains("-accel tcg -cpu max"), "{line}");
        assert!(line.contains("-no-reboot"), "{line}");
        assert!(line.contains("-drive file=/d.img,format=raw,if=virtio"), "{line}");
        assert!(line.contains("console=ttyS0 panic=-1"), "{line}");
        let nvme = VmOptions {
            disk_bus: DiskBus::Nvme,
            ..VmOptions::default()
        };
        let line = describe(&command(&Boot { opts: &nvme, ..boot }));
        assert!(
            line.contains("-drive file=/d.img,format=raw,if=none,id=scratch -device nvme,drive=scratch"),
            "{line}"
        );
    }
}
