//! `dio-trace check --perfetto` on the traces recorded on the buggy and
//! fixed kernels (`tests/fixtures`), decoded with Perfetto's own schema
//! (`perfetto_dump.py`, through the `perfetto` PyPI package that `cargo
//! xtask setup` puts in a venv under the kernel cache), and checked for
//! meaning against the live NDJSON of the same run: every write present on
//! a track of its own under its thread and process, its steps in kernel
//! order with their `i_disksize`, violations named so a search finds them,
//! stacks where the kernel sent them. No root needed.

use std::{collections::HashMap, path::Path, process::Command};

use serde_json::Value;

mod common;

use common::fixture;

const BIN: &str = env!("CARGO_BIN_EXE_dio-trace");

/// Packets of the Perfetto trace `check --perfetto` writes for `name`.
fn perfetto_of(py: &Path, name: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.pftrace");
    let status = Command::new(BIN)
        .arg("check")
        .arg(fixture(&format!("{name}.dtr")))
        .arg("--perfetto")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        matches!(status.code(), Some(0 | 1)),
        "{name}: check exited {status}"
    );
    common::perfetto::decode(py, &out)
}

fn num(v: &Value) -> u64 {
    // Perfetto's JSON form writes 64-bit integers as strings.
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

/// One write as the Perfetto trace shows it.
#[derive(Debug)]
struct Track {
    name: String,
    parent: u64,
    /// (timestamp, type, name, arguments), in file order.
    events: Vec<(u64, String, String, HashMap<String, Value>)>,
}

fn args(te: &Value) -> HashMap<String, Value> {
    te["debug_annotations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    let v = ["string_value", "int_value", "uint_value"]
                        .iter()
                        .find_map(|k| d.get(*k).cloned())
                        .unwrap_or(Value::Null);
                    (d["name"].as_str().unwrap().to_owned(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Tracks by uuid, and which uuids are threads and processes.
fn tracks(packets: &[Value]) -> (HashMap<u64, Track>, HashMap<u64, Value>, HashMap<u64, Value>) {
    let (mut writes, mut threads, mut processes) = (HashMap::new(), HashMap::new(), HashMap::new());
    for p in packets {
        assert_eq!(num(&p["trusted_packet_sequence_id"]), 1);
        if let Some(td) = p.get("track_descriptor") {
            let uuid = num(&td["uuid"]);
            if let Some(t) = td.get("thread") {
                threads.insert(uuid, t.clone());
            } else if let Some(pr) = td.get("process") {
                processes.insert(uuid, pr.clone());
            } else if td.get("parent_uuid").is_some() {
                writes.insert(
                    uuid,
                    Track {
                        name: td["name"].as_str().unwrap().to_owned(),
                        parent: num(&td["parent_uuid"]),
                        events: Vec::new(),
                    },
                );
            }
        }
        if let Some(te) = p.get("track_event") {
            let uuid = num(&te["track_uuid"]);
            if let Some(w) = writes.get_mut(&uuid) {
                w.events.push((
                    num(&p["timestamp"]),
                    te["type"].as_str().unwrap().to_owned(),
                    te["name"].as_str().unwrap_or("").to_owned(),
                    args(te),
                ));
            }
        }
    }
    assert_eq!(
        packets[0]["sequence_flags"], 1,
        "the first packet clears incremental state"
    );
    (writes, threads, processes)
}

/// The live run's write lines.
fn live_writes(name: &str) -> Vec<Value> {
    std::fs::read_to_string(fixture(&format!("{name}.live.ndjson")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["type"] == "write")
        .collect()
}

fn check_fixture(name: &str, violations: bool) {
    let Some(py) = common::perfetto::python(name) else {
        return;
    };
    let packets = perfetto_of(&py, name);
    let (writes, threads, processes) = tracks(&packets);
    let live = live_writes(name);
    assert_eq!(writes.len(), live.len(), "{name}: one track per write");
    for w in writes.values() {
        let thread = &threads[&w.parent];
        assert!(
            processes.contains_key(&(1 << 40 | num(&thread["pid"]))),
            "{name}: the write's thread sits under its process"
        );
        let (begin, rest) = w.events.split_first().unwrap();
        let (end, steps) = rest.split_last().unwrap();
        assert_eq!(begin.1, "TYPE_SLICE_BEGIN");
        assert_eq!(end.1, "TYPE_SLICE_END");
        // The live write with this offset: same steps, same order, same sizes.
        let offset = begin.3["offset"].as_str().unwrap().parse::<u64>().unwrap();
        let l = live.iter().find(|l| l["offset"] == offset).unwrap();
        let live_steps: Vec<(String, Value)> = l["events"].as_array().unwrap()[1..]
            .iter()
            .map(|e| (e["event"].as_str().unwrap().to_owned(), e["i_disksize"].clone()))
            .collect();
        let steps_seen: Vec<(String, Value)> = steps
            .iter()
            .map(|(_, ty, name, a)| {
                assert_eq!(ty, "TYPE_INSTANT");
                let disk = a["i_disksize"].as_str().unwrap().parse::<u64>().unwrap();
                (name.split(' ').next().unwrap().to_owned(), disk.into())
            })
            .collect();
        assert_eq!(
            steps_seen, live_steps,
            "{name} off={offset}: steps in kernel order"
        );
        let times: Vec<u64> = steps.iter().map(|s| s.0).collect();
        assert!(times.windows(2).all(|t| t[0] <= t[1]), "{name}: kernel order");
        assert!(begin.0 <= times[0] && end.0 >= begin.0);
        assert_eq!(
            begin.3["verdict"], l["verdict"],
            "{name}: the verdict is an argument"
        );
        if violations {
            assert!(
                begin.2.starts_with("VIOLATION sync_before_size_update"),
                "{name}: searchable by name: {}",
                begin.2
            );
            let sync = steps.iter().find(|s| s.2.starts_with("sync_enter")).unwrap();
            assert!(sync.2.contains("VIOLATION"), "{name}: the early sync is named");
            let stack = sync.3["stack"]
                .as_str()
                .expect("the early sync carries its stack");
            assert!(stack.contains("iomap_dio_complete"), "{name}: {stack}");
            let size = steps
                .iter()
                .find(|s| s.2.starts_with("mark_inode_dirty"))
                .unwrap();
            assert!(
                size.3["stack"].as_str().is_some(),
                "{name}: the late size update carries its stack"
            );
        } else {
            assert!(begin.2.starts_with("ORDERED"), "{name}: {}", begin.2);
            assert!(
                steps.iter().all(|s| !s.3.contains_key("stack")),
                "{name}: ordered writes take no stacks"
            );
        }
        assert!(w.name.contains(&format!("off={offset}")));
    }
}

#[test]
fn buggy_kernel_fentry_trace_as_perfetto() {
    check_fixture("debian-5.10-fentry", true);
}

#[test]
fn buggy_kernel_kprobe_trace_as_perfetto() {
    check_fixture("buggy-6.1-kprobe", true);
}

#[test]
fn fixed_6_1_fentry_trace_as_perfetto() {
    check_fixture("debian-6.1-fentry", false);
}

#[test]
fn fixed_6_12_tracepoint_trace_as_perfetto() {
    check_fixture("debian-6.12-tracepoint", false);
}
