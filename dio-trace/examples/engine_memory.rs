//! Memory per write in flight: open 100 000 writes that never complete and
//! read the resident set size before and after. `cargo run --release
//! --example engine_memory`; the result is written down in BENCHMARKS.md.

use dio_trace::analysis::{Engine, EngineConfig, Event, Input};
use dio_trace_common::{
    kind::RecordKind,
    probe::Mechanism,
    record::{EVENT_DSYNC, EVENT_SYNC},
};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("rss");
    pages * 4096
}

fn main() {
    const IN_FLIGHT: u64 = 100_000;
    let mut engine = Engine::new(EngineConfig {
        max_open: IN_FLIGHT as usize,
        ..EngineConfig::default()
    });
    let before = rss_bytes();
    for ino in 0..IN_FLIGHT {
        let begin = Event {
            kind: RecordKind::WriteBegin,
            mechanism: Mechanism::Tracepoint,
            ts_ns: ino,
            pid: 1,
            tgid: 1,
            cpu: 0,
            lost: 0,
            dev: 7 << 20,
            ino,
            flags: EVENT_SYNC | EVENT_DSYNC,
            i_size: 0,
            i_disksize: 0,
            pos: 0,
            len: 4096,
            arg: 0,
            comm: "writer".into(),
            caller: None,
            cgroup: None,
            stack: None,
        };
        engine.push(Input::Event(begin));
        engine.push(Input::Path {
            dev: 7 << 20,
            ino,
            path: Some(format!("/srv/db/data/{ino:08}").into()),
        });
    }
    let after = rss_bytes();
    assert_eq!(engine.open_writes() as u64, IN_FLIGHT);
    println!(
        "{IN_FLIGHT} writes in flight: RSS {:.1} MiB -> {:.1} MiB, {} bytes per write",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after - before) / IN_FLIGHT
    );
}
