//! Every reason against "ordered" a finished run can know of, from the
//! kernel's counters and what the tracer could not do: each becomes a
//! line of the summary's `reasons`, and the verdict is inconclusive.

use dio_trace_common::{arm::ARM_MAP_ENTRIES, counters::Counter, fs::Fs};

use crate::{
    analysis::summary::DOUBTED_VIOLATIONS,
    collect::counters::Reading,
    kernel::{btf::FsStatus, facts::KernelFacts},
    probes::{
        catalog::{SIZE_UPDATE, SYNC_ENTER, probe_of_program},
        select::Selection,
    },
};

/// Kernel-side failures that may have hidden a write from the verdict.
pub(super) fn kernel_problems(r: &Reading) -> Vec<String> {
    let mut p = Vec::new();
    if r.get(Counter::ReadFailed) > 0 {
        p.push(format!(
            "{} kernel memory reads failed in the probes: some writes may be missing",
            r.get(Counter::ReadFailed)
        ));
    }
    if r.get(Counter::FlagsUnknown) > 0 {
        p.push(format!(
            "{} direct writes could not be classified: their ki_flags fit no known layout for their open flags \
             (a kernel dio-trace does not know; `dio-trace info` shows the layouts tried)",
            r.get(Counter::FlagsUnknown)
        ));
    }
    if r.get(Counter::ArmFailed) > 0 {
        p.push(format!(
            "{} counted writes could not be tracked (armed-inode map full)",
            r.get(Counter::ArmFailed)
        ));
    }
    p
}

/// Mounts whose writes the write-start probe cannot see, when it is one
/// filesystem's own function: never a silent miss. Only mounts the run
/// could trace (`--dev`/`--path` keep the others out).
pub(super) fn unseen_mounts(selection: &Selection, facts: &KernelFacts, dev: u32) -> Vec<String> {
    let Some(only) = selection.write_begin_only() else {
        return Vec::new();
    };
    facts
        .mounts
        .supported_mounts()
        .filter(|m| m.fstype != only.name() && (dev == 0 || m.dev == dev))
        .map(|m| {
            format!(
                "direct writes to {} at {} cannot be seen: the write-start probe is {}'s own function here \
                 (iomap's cannot be traced with this backend); try --backend kprobe",
                m.fstype,
                m.mount_point,
                only.name()
            )
        })
        .collect()
}

/// Sync-flavoured direct writes the kernel saw on a filesystem it could
/// not judge: never silently left out.
pub(super) fn unjudged_fs(r: &Reading, fs: &[FsStatus]) -> Vec<String> {
    let mut p = Vec::new();
    let other = r.get(Counter::OtherFs);
    if other > 0 {
        p.push(format!(
            "{other} sync-flavoured direct writes went to a filesystem dio-trace has no facts for (it knows {}): \
             not judged; --debug names the filesystem",
            Fs::ALL.map(Fs::name).join(", ")
        ));
    }
    let no_facts = r.get(Counter::NoFsFacts);
    if no_facts > 0 {
        let why: Vec<String> = fs.iter().filter_map(FsStatus::missing).collect();
        p.push(format!(
            "{no_facts} sync-flavoured direct writes were not judged: they went to a filesystem whose facts \
             dio-trace could not read ({})",
            why.join("; ")
        ));
    }
    p
}

/// What skipped program runs (`Tracer::skipped_runs`) cost the verdict:
/// always a reason against "ordered"; and where the skipped program saw
/// size updates or syncs, a missing one is no proof of a violation either.
pub(super) fn skip_problems(skipped: &[(String, u64)]) -> Vec<String> {
    if skipped.is_empty() {
        return Vec::new();
    }
    let total: u64 = skipped.iter().map(|(_, n)| n).sum();
    let each: Vec<String> = skipped.iter().map(|(p, n)| format!("{p} {n}")).collect();
    let mut p = vec![format!(
        "the kernel skipped {total} runs of dio-trace's programs because the same program was already \
         running on that CPU ({}): the writes they would have seen were not judged",
        each.join(", ")
    )];
    let mut blind: Vec<&str> = skipped
        .iter()
        .filter_map(|(prog, _)| probe_of_program(prog))
        .filter(|probe| [SIZE_UPDATE, SYNC_ENTER].contains(probe))
        .collect();
    blind.dedup();
    if !blind.is_empty() {
        p.push(format!(
            "{DOUBTED_VIOLATIONS} the kernel skipped runs of the {} probe, so a size update or sync \
             it did not see may have happened",
            blind.join(" and ")
        ));
    }
    p
}

/// Skipped program runs summed by the probe each program serves (a
/// program the catalog does not name counts under its own name, so no
/// skip goes unreported).
pub(super) fn skipped_by_probe(skipped: &[(String, u64)]) -> std::collections::BTreeMap<String, u64> {
    let mut by = std::collections::BTreeMap::new();
    for (prog, n) in skipped {
        let probe = probe_of_program(prog).map_or_else(|| prog.clone(), str::to_owned);
        *by.entry(probe).or_insert(0) += n;
    }
    by
}

/// Counted writes that neither arrived nor were reported lost: the armed
/// map (LRU) evicted them to make room for newer ones.
pub(super) fn missing_writes(r: &Reading, received: u64) -> Option<String> {
    let missing = r
        .get(Counter::Armed)
        .saturating_sub(received + r.get(Counter::WritesLost));
    (missing > 0).then(|| {
        format!(
            "{missing} counted writes were dropped from the kernel's armed-write map before they finished (more than {ARM_MAP_ENTRIES} in flight)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{analysis::summary::summarize, kernel::btf::Types};
    use dio_trace_common::config::{FS_KNOWN, FsFacts};

    #[test]
    fn skips_are_summed_by_the_probe_they_could_hide() {
        let by = skipped_by_probe(&[
            ("kprobe_iomap_dio_rw".into(), 2),
            ("fentry_iomap_dio_rw".into(), 1),
            ("tp_ext4_sync_file_enter".into(), 4),
            ("not_in_the_catalog".into(), 5),
        ]);
        assert_eq!(by.get(crate::probes::catalog::WRITE_BEGIN), Some(&3));
        assert_eq!(by.get(SYNC_ENTER), Some(&4));
        assert_eq!(by.get("not_in_the_catalog"), Some(&5));
        assert_eq!(by.len(), 3);
    }

    /// An XFS-only host where ext4 was never loaded, and then was: its
    /// writes are counted in the kernel, never judged, and the answer
    /// names ext4 and why (never "ordered").
    #[test]
    fn writes_to_a_filesystem_without_facts_are_named_not_judged() {
        let fs = vec![
            FsStatus {
                fs: Fs::Ext4,
                facts: FsFacts::default(),
                source: Err("ext4 is not in /proc/filesystems".into()),
            },
            FsStatus {
                fs: Fs::Xfs,
                facts: FsFacts {
                    flags: FS_KNOWN,
                    ..FsFacts::default()
                },
                source: Ok(Types::Module),
            },
        ];
        let mut r = Reading::default();
        assert!(unjudged_fs(&r, &fs).is_empty(), "no write there: no reason");
        r.0[Counter::NoFsFacts as usize] = 2;
        let p = unjudged_fs(&r, &fs);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("2 sync-flavoured direct writes were not judged")
                && p[0].contains("(ext4's facts are missing: ext4 is not in /proc/filesystems)"),
            "{p:?}"
        );
        let tally = crate::analysis::engine::Tally {
            ordered: 3,
            ..Default::default()
        };
        let s = summarize(&tally, 5, 0, p);
        assert_eq!(s.overall, crate::analysis::summary::Overall::Inconclusive);
    }
}
