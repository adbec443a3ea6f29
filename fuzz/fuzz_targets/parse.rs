//! `Qins::parse` on arbitrary bytes never panics, and every file it accepts passes the
//! accessor checks (names resolve, section lengths as §4 requires, bytes accounted for).
//!
//! Each input is parsed as it is and with its header fixed up (`file_size`, `header_size` and
//! the header CRC recomputed), so that mutations reach the checks behind the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qins_read::Qins;

fuzz_target!(|data: &[u8]| {
    for input in qins_fuzz::candidates(data) {
        match Qins::parse(&input) {
            Ok(q) => qins_fuzz::check_accessors(&q),
            Err(e) => {
                // Every refusal is one of §17's kinds and renders a message.
                assert_ne!(e.kind(), "Io");
                assert!(!e.to_string().is_empty());
            }
        }
    }
});
