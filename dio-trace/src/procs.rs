//! Process tree from /proc, to follow a `--pid` and the children it
//! already has.

use std::collections::BTreeSet;

/// `pids` and every current descendant of them.
pub fn with_descendants(pids: &[u32]) -> BTreeSet<u32> {
    let mut set: BTreeSet<u32> = pids.iter().copied().collect();
    if set.is_empty() {
        return set;
    }
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            Some((pid, ppid_of(&stat)?))
        })
        .collect();
    loop {
        let before = set.len();
        for (pid, ppid) in &parents {
            if set.contains(ppid) {
                set.insert(*pid);
            }
        }
        if set.len() == before {
            return set;
        }
    }
}

/// The 4th field of /proc/PID/stat; the name (2nd) may contain spaces and
/// parentheses, so parse after its last ')'.
fn ppid_of(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        assert_eq!(ppid_of("123 (a) b)) S 77 123 123 0"), Some(77));
    }

    #[test]
    fn our_own_process_is_found() {
        let me = std::process::id();
        assert!(with_descendants(&[me]).contains(&me));
        assert!(with_descendants(&[]).is_empty());
    }
}
