//! How `verify --crash` shows each write's verdict beside its crash truth:
//! a table per pattern, one NDJSON line per write, one JUnit test case per
//! write. Every disagreement is named.

use std::io::Write;

use serde_json::json;

use super::truth::WriteTruth;
use crate::report::junit::{CrashCase, write_crash_cases};

/// The human table: per pattern, each counted write's verdict and crash.
pub fn table(out: &mut dyn Write, truths: &[WriteTruth]) -> std::io::Result<()> {
    writeln!(
        out,
        "\ncrash truth: each counted write's verdict against a dm-log-writes replay to its return"
    )?;
    let mut last = None;
    for t in truths {
        if last != Some(t.pattern) {
            writeln!(
                out,
                "{}\n  {:>6} {:>5}  {:<12} {:<10} {:<8} left",
                t.pattern.name(),
                "writer",
                "write",
                "verdict",
                "crash",
                "result"
            )?;
            last = Some(t.pattern);
        }
        writeln!(
            out,
            "  {:>6} {:>5}  {:<12} {:<10} {:<8} {}",
            t.writer,
            t.index,
            t.verdict,
            t.crash(),
            t.result(),
            t.left()
        )?;
    }
    let bad: Vec<String> = truths.iter().filter_map(WriteTruth::disagreement).collect();
    let hidden = truths.iter().filter(|t| t.hidden()).count();
    let unjudged = truths.iter().filter(|t| t.unjudged()).count();
    writeln!(
        out,
        "crash truth agrees on {} of {} writes{}{}",
        truths.len() - bad.len() - unjudged,
        truths.len(),
        if unjudged > 0 {
            format!(" ({unjudged} unjudged: the tracer said inconclusive, so there is nothing to agree with)")
        } else {
            String::new()
        },
        if hidden > 0 {
            format!(
                " ({hidden} violations hidden: another writer's commit made them durable before they returned)"
            )
        } else {
            String::new()
        }
    )?;
    for b in bad {
        writeln!(out, "  disagreement: {b}")?;
    }
    Ok(())
}

/// One NDJSON line per write: `{"type":"crash_write", "pattern", "writer",
/// "index", "mark", "verdict", "crash", "agrees", "hidden", "unjudged",
/// "size", "data", "error"}` (`hidden`: a violation kept because another
/// writer's commit closed its window, which agrees; `unjudged`: an
/// inconclusive verdict, which neither agrees nor disagrees)
/// (`size`/`data` null when the file is gone or there was no replay;
/// `error` only without a replay).
pub fn ndjson(out: &mut dyn Write, truths: &[WriteTruth]) -> std::io::Result<()> {
    use dio_trace_common::crash::Survived;
    for t in truths {
        let (size, data) = match t.survived {
            Ok(Survived::File { size, data }) => (Some(size), Some(data)),
            _ => (None, None),
        };
        serde_json::to_writer(
            &mut *out,
            &json!({
                "type": "crash_write",
                "pattern": t.pattern.name(),
                "writer": t.writer,
                "index": t.index,
                "mark": t.mark(),
                "verdict": t.verdict,
                "crash": t.crash(),
                "agrees": t.agrees(),
                "hidden": t.hidden(),
                "unjudged": t.unjudged(),
                "size": size,
                "data": data,
                "error": t.survived.as_ref().err(),
            }),
        )?;
        writeln!(out)?;
    }
    Ok(())
}

/// JUnit XML: one test case per write, failing when verdict and crash
/// disagree.
pub fn junit(out: &std::path::Path, kernel: &str, truths: &[WriteTruth]) -> std::io::Result<()> {
    write_crash_cases(
        out,
        &format!("verify --crash on {kernel}"),
        truths.iter().map(|t| {
            (
                format!("dio-trace.crash.{}", t.pattern.name()),
                format!("{}: {} / {}", t.mark(), t.verdict, t.crash()),
                match t.disagreement() {
                    Some(why) => CrashCase::Disagrees(why),
                    None if t.unjudged() => CrashCase::Unjudged(format!(
                        "{}: the tracer could not judge it (inconclusive); the crash left {}",
                        t.mark(),
                        t.left()
                    )),
                    None => CrashCase::Agrees,
                },
            )
        }),
    )
}

#[cfg(test)]
mod tests {
    use dio_trace_common::crash::Survived;

    use super::*;
    use crate::workload::Pattern;

    fn truths() -> Vec<WriteTruth> {
        let p = Pattern::OSyncAppend;
        let f = |size| Ok(Survived::File { size, data: size });
        vec![
            WriteTruth::new(p, (0, 0), Some("violation"), f(0), (2, 4096)),
            WriteTruth::new(p, (0, 1), Some("ordered"), f(4096), (2, 4096)),
        ]
    }

    #[test]
    fn every_format_names_the_disagreement() {
        let mut human = Vec::new();
        table(&mut human, &truths()).unwrap();
        let human = String::from_utf8(human).unwrap();
        assert!(human.contains("agrees on 1 of 2 writes"), "{human}");
        assert!(human.contains("disagreement: o-sync-append/0/1: verdict ordered but crash size-lost"));

        let mut lines = Vec::new();
        ndjson(&mut lines, &truths()).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(lines)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["verdict"], "ordered");
        assert_eq!(lines[1]["crash"], "size-lost");
        assert_eq!(lines[1]["agrees"], false);
        assert_eq!(lines[0]["size"], 0);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.xml");
        junit(&path, "6.1.0-test", &truths()).unwrap();
        let xml = std::fs::read_to_string(&path).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
        assert_eq!(cases.len(), 2);
        assert_eq!(
            cases.iter().filter(|c| c.first_element_child().is_some()).count(),
            1
        );
    }
}
