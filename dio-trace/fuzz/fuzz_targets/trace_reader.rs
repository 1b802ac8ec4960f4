//! Any byte string through the trace-file reader, and whatever it accepts
//! through the replay (the same feed and engine as live tracing): errors
//! are fine, panics and hangs are bugs.
#![no_main]

use dio_trace::{
    replay::replay,
    report::{Show, ndjson::Ndjson},
    trace::reader::parse,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(trace) = parse(data) {
        let mut sink = Ndjson::new(std::io::sink(), Show::All);
        let _ = replay(&trace, None, &mut sink);
    }
});
