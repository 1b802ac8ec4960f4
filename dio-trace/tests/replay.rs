//! `dio-trace check` on traces recorded on real kernels (fixtures made by
//! `cargo xtask vm fixtures` on the buggy 6.1 build and on Debian 6.1 and
//! 6.12): the replay must give exactly the verdicts seen live, for traces of
//! this format (settled writes as compact records), of format 3
//! (`fixtures/v3/`, whole-write records naming their filesystem, cgroup
//! records and stacks), of format 2 (`fixtures/v2/`, ext4 only, no cgroups,
//! no stacks) and of format 1 (`fixtures/v1/`, one record per event), each
//! recorded by the version of its day. The stacks of this format replay as
//! they were shown live. And every kind of bad file gets one clear line
//! and exit 4. No root needed.

use std::process::Command;

use serde_json::Value;

mod common;

use common::fixture;

const BIN: &str = env!("CARGO_BIN_EXE_dio-trace");

fn ndjson(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// (offset, verdict, kind) of every write line, sorted.
fn verdicts(lines: &[Value]) -> Vec<(u64, String, String)> {
    let mut v: Vec<_> = lines
        .iter()
        .filter(|l| l["type"] == "write")
        .map(|l| {
            (
                l["offset"].as_u64().unwrap(),
                l["verdict"].to_string(),
                l["kind"].to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).arg("check").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The fixture `name` in every format replays to its live run.
fn replay_matches_live(name: &str, want_exit: i32, want_verdict: &str) {
    replay_matches_live_as(name, name, want_exit, want_verdict);
}

/// As [`replay_matches_live`], where the older formats' recording has
/// another name (`old`): it was made on a kernel the matrix no longer has.
fn replay_matches_live_as(name: &str, old: &str, want_exit: i32, want_verdict: &str) {
    for (dir, version, name) in [
        ("", dio_trace_common::FORMAT_VERSION, name),
        ("v3/", 3, old),
        ("v2/", 2, old),
        ("v1/", 1, old),
    ] {
        let trace = fixture(&format!("{dir}{name}.dtr"));
        let bytes = std::fs::read(&trace).unwrap();
        assert_eq!(bytes[8..12], version.to_le_bytes(), "{dir}{name}: format");
        replay_one(&format!("{dir}{name}"), want_exit, want_verdict);
    }
}

fn replay_one(name: &str, want_exit: i32, want_verdict: &str) {
    let trace = fixture(&format!("{name}.dtr"));
    let live = ndjson(&std::fs::read_to_string(fixture(&format!("{name}.live.ndjson"))).unwrap());
    let (code, out, err) = check(&["--json", trace.to_str().unwrap()]);
    let replayed = ndjson(&out);
    assert_eq!(code, want_exit, "{name}: stderr {err}");
    assert_eq!(
        verdicts(&replayed),
        verdicts(&live),
        "{name}: per-write verdicts differ from the live run"
    );
    assert_eq!(
        verdicts(&replayed).len(),
        3,
        "{name}: three counted writes were recorded"
    );
    let (s_live, s_replay) = (live.last().unwrap(), replayed.last().unwrap());
    assert_eq!(s_replay["verdict"], want_verdict);
    for k in [
        "verdict",
        "counted",
        "ordered",
        "violations",
        "writes",
        "probes",
        "kernel",
    ] {
        assert_eq!(s_replay[k], s_live[k], "{name}: summary field {k}");
    }
}

#[test]
fn buggy_kernel_fentry_trace_replays_as_violations() {
    // The old formats were recorded on buggy-6.1 when it was a kernel of
    // our own, with ext4 built in (now ext4 is a module there: no fentry).
    replay_matches_live_as("debian-5.10-fentry", "buggy-6.1-fentry", 1, "violation");
}

#[test]
fn buggy_kernel_kprobe_trace_replays_as_violations() {
    replay_matches_live("buggy-6.1-kprobe", 1, "violation");
}

#[test]
fn fixed_6_1_fentry_trace_replays_as_ordered() {
    replay_matches_live("debian-6.1-fentry", 0, "ordered");
}

#[test]
fn fixed_6_12_tracepoint_trace_replays_as_ordered() {
    replay_matches_live("debian-6.12-tracepoint", 0, "ordered");
}

/// (offset, event, stack) of every step of every write line that has a stack.
fn stacks(lines: &[Value]) -> Vec<(u64, String, Value)> {
    let mut v: Vec<_> = lines
        .iter()
        .filter(|l| l["type"] == "write")
        .flat_map(|l| {
            l["events"].as_array().unwrap().iter().filter_map(move |e| {
                e.get("stack").map(|s| {
                    (
                        l["offset"].as_u64().unwrap(),
                        e["event"].as_str().unwrap().to_owned(),
                        s.clone(),
                    )
                })
            })
        })
        .collect();
    v.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    v
}

/// The stacks the kernel sent replay exactly as live showed them: on the
/// buggy kernel the early sync's (through `iomap_dio_complete`) and the
/// late size update's (from the write path after it), named, no BPF frames,
/// no raw addresses; on the fixed kernels none at all.
#[test]
fn stacks_replay_as_they_were_shown_live() {
    for name in ["debian-5.10-fentry", "buggy-6.1-kprobe"] {
        let live = ndjson(&std::fs::read_to_string(fixture(&format!("{name}.live.ndjson"))).unwrap());
        let (_, out, _) = check(&["--json", fixture(&format!("{name}.dtr")).to_str().unwrap()]);
        let replayed = stacks(&ndjson(&out));
        assert_eq!(replayed, stacks(&live), "{name}: stacks differ from the live run");
        assert_eq!(
            replayed.len(),
            6,
            "{name}: a sync and a size-update stack per write"
        );
        for (off, event, stack) in &replayed {
            let frames: Vec<&str> = stack
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect();
            let text = frames.join(" <- ");
            match event.as_str() {
                "sync_enter" => {
                    assert!(frames[0].starts_with("vfs_fsync_range+"), "{name} {off}: {text}");
                    assert!(text.contains("iomap_dio_complete+"), "{name} {off}: {text}");
                }
                "mark_inode_dirty" => {
                    assert!(
                        frames[0].starts_with("__ext4_mark_inode_dirty+"),
                        "{name} {off}: {text}"
                    );
                    assert!(
                        !text.contains("iomap_dio_complete"),
                        "{name} {off}: after the completion: {text}"
                    );
                }
                other => panic!("{name}: a stack on {other}"),
            }
            assert!(!text.contains("bpf_"), "{name} {off}: BPF frames left in: {text}");
        }
        assert!(!out.contains("0xffffffff"), "{name}: no raw addresses by default");
        let (_, raw, _) = check(&[
            "--json",
            "--raw-addresses",
            fixture(&format!("{name}.dtr")).to_str().unwrap(),
        ]);
        assert!(
            raw.contains("\"stack_addresses\":[\"0xffffffff"),
            "{name}: --raw-addresses shows them"
        );
    }
    for name in ["debian-6.1-fentry", "debian-6.12-tracepoint"] {
        let (_, out, _) = check(&["--json", fixture(&format!("{name}.dtr")).to_str().unwrap()]);
        assert!(
            stacks(&ndjson(&out)).is_empty(),
            "{name}: ordered writes take no stacks"
        );
    }
}

#[test]
fn expect_violation_turns_the_bug_into_a_pass_and_a_fix_into_a_failure() {
    let buggy = fixture("buggy-6.1-kprobe.dtr");
    let fixed = fixture("debian-6.1-fentry.dtr");
    assert_eq!(check(&["--expect", "violation", buggy.to_str().unwrap()]).0, 0);
    assert_eq!(check(&["--expect", "violation", fixed.to_str().unwrap()]).0, 1);
    assert_eq!(check(&["--expect", "ordered", fixed.to_str().unwrap()]).0, 0);
    assert_eq!(check(&["--expect", "ordered", buggy.to_str().unwrap()]).0, 1);
}

#[test]
fn junit_is_well_formed_with_one_case_per_write() {
    let dir = tempfile::tempdir().unwrap();
    let xml_path = dir.path().join("out.xml");
    let buggy = fixture("debian-5.10-fentry.dtr");
    let (code, _, _) = check(&["--junit", xml_path.to_str().unwrap(), buggy.to_str().unwrap()]);
    assert_eq!(code, 1);
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("JUnit XML parses");
    let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), 4, "three writes and the whole-trace case");
    let failures: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("failure")).collect();
    assert_eq!(failures.len(), 3);
    let f = failures[0];
    assert_eq!(f.attribute("message"), Some("sync_before_size_update"));
    let timeline = f.text().unwrap();
    assert!(
        timeline.contains("sync_enter") && timeline.contains("mark_inode_dirty"),
        "{timeline}"
    );
    let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).unwrap();
    assert_eq!(suite.attribute("failures"), Some("3"));
    assert_eq!(suite.attribute("tests"), Some("4"));

    // With --expect violation the same trace is all green.
    check(&[
        "--expect",
        "violation",
        "--junit",
        xml_path.to_str().unwrap(),
        buggy.to_str().unwrap(),
    ]);
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert_eq!(doc.descendants().filter(|n| n.has_tag_name("failure")).count(), 0);
}

/// One clear line on stderr, exit 4, no panic.
fn assert_refused(bytes: &[u8], what: &str, says: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.dtr");
    std::fs::write(&p, bytes).unwrap();
    let (code, out, err) = check(&[p.to_str().unwrap()]);
    assert_eq!(code, 4, "{what}: stderr {err}");
    assert!(out.is_empty(), "{what}: nothing on stdout, got {out}");
    assert_eq!(err.lines().count(), 1, "{what}: one line, got {err}");
    assert!(err.contains(says), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
}

#[test]
fn bad_input_gets_one_line_and_exit_4() {
    let good = std::fs::read(fixture("debian-6.1-fentry.dtr")).unwrap();
    assert_refused(b"", "empty", "empty file");
    assert_refused(b"#!/bin/sh\necho hi\n", "not a trace", "not a dio-trace trace");
    assert_refused(&good[..good.len() / 2], "truncated", "truncated");
    assert_refused(&good[..good.len() - 1], "truncated by one byte", "truncated");
    let mut flipped = good.clone();
    let mid = good.len() / 2;
    flipped[mid] ^= 0x40;
    assert_refused(&flipped, "corrupted", "corrupt");
    let mut version = good.clone();
    version[8] = 99;
    assert_refused(&version, "wrong version", "format version 99");
    let (code, _, err) = check(&["/no/such/trace.dtr"]);
    assert_eq!(code, 4);
    assert!(err.contains("cannot read trace"), "{err}");
}

#[test]
fn every_truncation_and_bit_flip_is_an_error_not_a_panic() {
    use dio_trace::trace::reader::parse;
    let good = std::fs::read(fixture("buggy-6.1-kprobe.dtr")).unwrap();
    assert!(parse(&good).is_ok());
    for n in 0..good.len() {
        assert!(parse(&good[..n]).is_err(), "a prefix of {n} bytes was accepted");
    }
    for i in (0..good.len()).step_by(7) {
        let mut b = good.clone();
        b[i] ^= 1;
        assert!(parse(&b).is_err(), "a flipped bit at {i} was accepted");
    }
}
