//! `dio-trace verify --crash` in the guests: per-write crash truth from a
//! dm-log-writes replay, run in the same boot as the matrix's `verify`
//! (its pattern lines are scored as before) on kernels whose row says
//! they ship dm-log-writes. Every counted write of every pattern must be
//! what the row's facts say ([`matrix::expected`]): a violation that was
//! lost, or ordered and kept; and exactly `COUNT` writes per writer of
//! each counted pattern ([`matrix::shape`]) must be reported, no fewer and
//! no more. verify's own exit status must match (1 where the kernel has
//! the bug, 0 where not; 5, a disagreement, always fails).

use std::collections::BTreeMap;

use serde_json::Value;

use super::matrix::{self, Score, Want};
use super::verify;
use crate::kernel::Named;

/// Writes per writer of each pattern: two replays per pattern keep the
/// boot short (TCG) and still show a write that follows another.
pub const COUNT: u32 = 2;

/// The guest script: the disk init mounted on /mnt is the fresh
/// filesystem the rig starts from (the guests have no mkfs); verify's
/// NDJSON goes to the console with `@@V `, its exit status with `@@VEXIT`.
pub fn script(btf: &str) -> String {
    // Not `dio-trace ... | sed`: `$?` would be sed's status.
    format!(
        "{}--json >/tmp/verify.out 2>/tmp/verify.err\n\
         rc=$?\n\
         sed 's/^/@@V /' /tmp/verify.out\n\
         echo \"@@VEXIT $rc\"\n\
         tail -5 /tmp/verify.err\n",
        verify_line(btf, COUNT)
    )
}

/// The guest lines that run `dio-trace verify --crash` on the fresh disk
/// init mounted on /mnt (unmounted first: it is only copied), open-ended
/// for more arguments.
pub fn verify_line(btf: &str, count: u32) -> String {
    format!(
        "disk=$(awk '$2 == \"/mnt\" {{ print $1 }}' /proc/mounts)\n\
         umount /mnt\n\
         dio-trace verify{btf} --crash --fresh-fs \"$disk\" --count {count} "
    )
}

/// Writes a counted pattern makes under crash truth: `COUNT` per writer
/// (verify's own table says how many writers).
fn writes(pattern: &str) -> u32 {
    let writers = verify::counted_patterns()
        .find(|(p, _)| *p == pattern)
        .map_or(1, |(_, w)| w);
    COUNT * writers as u32
}

/// What a write's verdict and crash must be where its pattern must show
/// `want`; `None`: nothing says (fails). Writers sharing a journal may
/// close each other's windows: a violation there may be kept (dio-trace
/// calls it `hidden`), never an ordered write lost.
fn must(want: Want, pattern: &str) -> Option<(&'static str, &'static [&'static str])> {
    let shared = pattern == "concurrent-o-sync-append";
    match want {
        Want::Ordered => Some(("ordered", &["kept"])),
        Want::Violation(_) if shared => Some(("violation", &["size-lost", "data-lost", "file-lost", "kept"])),
        Want::Violation(_) => Some(("violation", &["size-lost", "data-lost", "file-lost"])),
        _ => None,
    }
}

/// Score the `crash_write` lines and verify's exit status in `console`:
/// one case per counted pattern (each of its writes right, the count
/// exact) and one for the exit status.
pub fn score(label: &str, row: &Named, console: &str, score: &mut Score) {
    let lines: Vec<Value> = console
        .lines()
        .filter_map(|l| l.split("@@V ").nth(1))
        .filter_map(|j| serde_json::from_str(j).ok())
        .filter(|v: &Value| v["type"] == "crash_write")
        .collect();
    let mut by_pattern: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for l in &lines {
        by_pattern
            .entry(l["pattern"].as_str().unwrap_or("?").to_owned())
            .or_default()
            .push(l);
    }
    let counted: Vec<&str> = verify::counted_patterns().map(|(p, _)| p).collect();
    let mut any_violation = false;
    for pattern in counted.iter().copied().chain(
        by_pattern
            .keys()
            .map(String::as_str)
            .filter(|p| !counted.contains(p)),
    ) {
        let got = by_pattern.get(pattern).map_or(&[][..], Vec::as_slice);
        let want = matrix::expected(row, pattern);
        any_violation |= matches!(want, Want::Violation(_));
        let why = match must(want, pattern) {
            None => Some(format!("no shape says what {pattern} must show")),
            Some((verdict, crashes)) => {
                let bad: Vec<String> = got
                    .iter()
                    .filter(|w| w["verdict"] != verdict || !crashes.iter().any(|c| w["crash"] == *c))
                    .map(|w| format!("{} {}/{}", w["mark"], w["verdict"], w["crash"]))
                    .collect();
                let n = writes(pattern) as usize;
                if got.len() != n {
                    Some(format!("want {n} writes, the guest reported {}", got.len()))
                } else if !bad.is_empty() {
                    Some(format!(
                        "want every write {verdict} and {}, got {}",
                        crashes.join("|"),
                        bad.join(", ")
                    ))
                } else {
                    None
                }
            }
        };
        let summary = got.first().map_or("no writes".into(), |w| {
            format!("{} writes {}/{}", got.len(), w["verdict"], w["crash"])
        });
        score.record(why, format_args!("crash-truth {label} {pattern}: {summary}"));
    }
    let exit = console
        .lines()
        .find_map(|l| l.split("@@VEXIT ").nth(1))
        .and_then(|c| c.trim().parse::<i32>().ok());
    let want_exit = i32::from(any_violation);
    let why = (exit != Some(want_exit)).then(|| {
        format!(
            "want verify --crash to exit {want_exit}, got {} (5: a verdict and its crash disagree; 4: no dm-log-writes)",
            exit.map_or("nothing".into(), |c| c.to_string())
        )
    });
    score.record(
        why,
        format_args!("crash-truth {label} exit status: {}", exit.unwrap_or(-1)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::named::find;

    /// The console a guest prints when every write is `verdict`/`crash`.
    fn console(verdict: &str, crash: &str, exit: i32) -> String {
        let mut c = String::from("[ 1.0] booting\n");
        for (p, _) in verify::counted_patterns() {
            for i in 0..writes(p) {
                c += &format!(
                    "@@V {{\"type\":\"crash_write\",\"pattern\":\"{p}\",\"mark\":\"{p}/0/{i}\",\"verdict\":\"{verdict}\",\"crash\":\"{crash}\"}}\n"
                );
            }
        }
        c + &format!("@@VEXIT {exit}\n")
    }

    fn run(kernel: &str, console: &str) -> Score {
        let mut s = Score::default();
        score(kernel, find(kernel).unwrap(), console, &mut s);
        s
    }

    /// Writes into fallocated space extend nothing: on a kernel with only
    /// the size bug they are ordered and kept.
    fn buggy_510() -> String {
        let c = console("violation", "size-lost", 1);
        c.lines()
            .map(|l| {
                if l.contains("into-fallocated") {
                    l.replace("\"violation\"", "\"ordered\"")
                        .replace("size-lost", "kept")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_script_reports_verifys_own_status_not_a_pipes() {
        let s = script("");
        let run = s.lines().find(|l| l.contains("dio-trace verify")).unwrap();
        assert!(!run.contains('|'), "{run}");
        assert!(s.contains("rc=$?") && s.contains("@@VEXIT $rc"));
    }

    #[test]
    fn right_guests_pass() {
        let s = run("debian-6.1", &console("ordered", "kept", 0));
        assert_eq!((s.passed, s.failed), (12, 0));
        let s = run("debian-5.10", &buggy_510());
        assert_eq!((s.passed, s.failed), (12, 0));
    }

    #[test]
    fn faulty_guests_fail() {
        // An ordered write that was lost: the worst outcome.
        let c = console("ordered", "kept", 0).replacen("\"crash\":\"kept\"", "\"crash\":\"size-lost\"", 1);
        assert_eq!(run("debian-6.1", &c).failed, 1);
        // A violation that was kept (a single writer's: nothing hides it).
        let c = buggy_510().replacen("\"crash\":\"size-lost\"", "\"crash\":\"kept\"", 1);
        assert_eq!(run("debian-5.10", &c).failed, 1);
        // Among 8 writers another's commit may close the window: passes.
        let c = buggy_510().replacen(
            "\"pattern\":\"concurrent-o-sync-append\",\"mark\":\"concurrent-o-sync-append/0/0\",\"verdict\":\"violation\",\"crash\":\"size-lost\"",
            "\"pattern\":\"concurrent-o-sync-append\",\"mark\":\"concurrent-o-sync-append/0/0\",\"verdict\":\"violation\",\"crash\":\"kept\"",
            1,
        );
        assert!(c.contains("/0/0\",\"verdict\":\"violation\",\"crash\":\"kept"));
        assert_eq!(run("debian-5.10", &c).failed, 0);
        // A buggy kernel whose writes all look fixed.
        assert!(run("debian-5.10", &console("ordered", "kept", 0)).failed >= 9);
        // A write short, a write too many.
        let short: String = console("ordered", "kept", 0)
            .lines()
            .skip(2)
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(run("debian-6.1", &short).failed, 1);
        let c = console("ordered", "kept", 0);
        let extra = c.lines().nth(1).unwrap().to_owned();
        assert_eq!(run("debian-6.1", &format!("{extra}\n{c}")).failed, 1);
        // Disagreement exit status, and no status at all.
        assert_eq!(run("debian-6.1", &console("ordered", "kept", 5)).failed, 1);
        let none = console("ordered", "kept", 0).replace("@@VEXIT 0", "");
        assert_eq!(run("debian-6.1", &none).failed, 1);
        // Nothing at all: every pattern and the status fail.
        assert_eq!(run("debian-6.1", "kernel panic").failed, 12);
        // A pattern nothing knows.
        let c = console("ordered", "kept", 0)
            + "@@V {\"type\":\"crash_write\",\"pattern\":\"new-pattern\",\"verdict\":\"ordered\",\"crash\":\"kept\"}\n";
        assert_eq!(run("debian-6.1", &c).failed, 1);
    }
}
