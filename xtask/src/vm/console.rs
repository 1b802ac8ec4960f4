//! Reading the guest's serial console: what each line tells about how the
//! boot is going, and how it ended.

use std::fmt;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::initramfs::{BEGIN_MARKER, EXIT_MARKER, INIT_ERROR_MARKER, INIT_START_MARKER};

/// Lines of console shown with a failure.
pub const TAIL_LINES: usize = 30;

/// How a boot ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The script ran and exited with this status.
    Exited(i32),
    /// `/init` could not set the guest up (message from the guest).
    InitFailed(String),
    /// The kernel panicked (a crash test's `echo c > /proc/sysrq-trigger`
    /// ends this way too).
    Panicked,
    /// The kernel reported a lockup or stall and then went quiet.
    Hung(String),
    /// The time limit ran out.
    TimedOut(Duration),
    /// QEMU exited without the guest saying anything conclusive.
    Vanished(String),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "guest script exited with status {code}"),
            Self::InitFailed(msg) => write!(f, "guest setup failed: {msg}"),
            Self::Panicked => f.write_str("guest kernel panicked"),
            Self::Hung(why) => write!(f, "guest kernel hung ({why})"),
            Self::TimedOut(t) => write!(f, "guest did not finish within {} s", t.as_secs()),
            Self::Vanished(status) => write!(f, "QEMU exited ({status}) before the guest reported a result"),
        }
    }
}

/// The result of one boot.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub end: End,
    /// Every console line (and QEMU's own stderr, prefixed `qemu: `).
    pub console: String,
    /// Wall time from starting QEMU to its exit.
    pub elapsed: Duration,
    /// Whether the console was already shown while it ran.
    pub streamed: bool,
}

impl Outcome {
    /// The script's exit status, or an error saying how the boot ended
    /// instead (with the console's last lines unless they were streamed).
    pub fn exit_code(&self) -> Result<i32> {
        match self.end {
            End::Exited(code) => Ok(code),
            _ => bail!("{}", self.failure()),
        }
    }

    /// "how it ended" plus the console's tail when it was not shown.
    pub fn failure(&self) -> String {
        if self.streamed {
            return self.end.to_string();
        }
        format!("{}; last console lines:\n{}", self.end, self.tail(TAIL_LINES))
    }

    /// The last `n` console lines.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The guest died (panic, lockup, silence, QEMU gone) before the kernel
    /// ran `/init`: nothing of the test had run, not even the mount of the
    /// scratch disk. Under TCG a distribution kernel very rarely dies this
    /// way while patching its own text at boot (CI once saw `Oops: int3` in
    /// `sched_clock_cpu` from an initcall of Debian's 6.12 cloud kernel).
    pub fn died_before_init(&self) -> bool {
        !matches!(self.end, End::Exited(_) | End::InitFailed(_))
            && !self.console.lines().any(|l| l.contains(INIT_START_MARKER))
    }

    /// Text the guest printed between `/init`'s begin and exit markers:
    /// the script's own output (kernel messages may interleave).
    pub fn script_output(&self) -> String {
        let mut inside = false;
        let mut out = Vec::new();
        for line in self.console.lines() {
            if line.contains(BEGIN_MARKER) {
                inside = true;
            } else if line.contains(EXIT_MARKER) {
                break;
            } else if inside {
                out.push(line);
            }
        }
        // `/init` prints an empty line before the exit marker in case the
        // script's last line had no newline.
        if out.last() == Some(&"") {
            out.pop();
        }
        out.join("\n")
    }
}

/// What a single console line means for the boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    Nothing,
    Exit(i32),
    InitError(String),
    Panic,
    Hang(String),
}

/// Classifies one console line.
pub fn classify(line: &str) -> Signal {
    if let Some(code) = line.split(EXIT_MARKER).nth(1).and_then(|r| r.trim().parse().ok()) {
        return Signal::Exit(code);
    }
    if let Some(msg) = line.split(INIT_ERROR_MARKER).nth(1) {
        return Signal::InitError(msg.trim().to_owned());
    }
    if line.contains("Kernel panic - not syncing") {
        return Signal::Panic;
    }
    const HANGS: [&str; 3] = [
        "BUG: soft lockup",
        "rcu_sched detected stalls",
        "blocked for more than",
    ];
    if let Some(h) = HANGS.iter().find(|h| line.contains(*h)) {
        return Signal::Hang((*h).to_owned());
    }
    Signal::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_recognized() {
        assert_eq!(classify("DIO-TRACE-VM-EXIT=3"), Signal::Exit(3));
        assert_eq!(classify("[    1.2] x DIO-TRACE-VM-EXIT=0"), Signal::Exit(0));
        assert_eq!(classify("echo DIO-TRACE-VM-EXIT=$rc"), Signal::Nothing);
        assert_eq!(
            classify("DIO-TRACE-VM-INIT-ERROR: insmod virtio"),
            Signal::InitError("insmod virtio".into())
        );
        assert_eq!(
            classify("[ 3.1] Kernel panic - not syncing: sysrq triggered crash"),
            Signal::Panic
        );
        assert_eq!(
            classify("watchdog: BUG: soft lockup - CPU#0 stuck for 22s!"),
            Signal::Hang("BUG: soft lockup".into())
        );
        assert_eq!(classify("hello"), Signal::Nothing);
    }

    fn outcome(end: End, console: &str, streamed: bool) -> Outcome {
        Outcome {
            end,
            console: console.into(),
            elapsed: Duration::ZERO,
            streamed,
        }
    }

    #[test]
    fn failures_carry_the_tail_when_quiet() {
        let console: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let o = outcome(End::Panicked, &console, false);
        let err = o.exit_code().unwrap_err().to_string();
        assert!(err.contains("panicked") && err.contains("line 49") && err.contains("line 20"));
        assert!(!err.contains("line 19\n"));
        let o = outcome(End::Panicked, &console, true);
        assert!(!o.exit_code().unwrap_err().to_string().contains("line 49"));
        assert_eq!(outcome(End::Exited(4), "", false).exit_code().ok(), Some(4));
    }

    #[test]
    fn only_deaths_before_init_count_as_boot_failures() {
        let oops = "[ 1.49] Oops: int3: 0000 [#2] PREEMPT SMP NOPTI\n";
        assert!(outcome(End::Panicked, oops, false).died_before_init());
        assert!(outcome(End::TimedOut(Duration::ZERO), "", false).died_before_init());
        let after = format!("{INIT_START_MARKER}\n{oops}");
        assert!(!outcome(End::Panicked, &after, false).died_before_init());
        assert!(!outcome(End::Exited(1), "", false).died_before_init());
        assert!(!outcome(End::InitFailed("insmod".into()), "", false).died_before_init());
    }

    #[test]
    fn script_output_is_between_markers() {
        let o = outcome(
            End::Exited(0),
            "boot\nDIO-TRACE-VM-BEGIN\na\nb\n\nDIO-TRACE-VM-EXIT=0\nreboot\n",
            false,
        );
        assert_eq!(o.script_output(), "a\nb");
    }
}
