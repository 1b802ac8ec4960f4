//! Any byte string as a ring-buffer record: decode must return a record or
//! an error, never panic.
#![no_main]

use dio_trace::collect::decode::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
});
