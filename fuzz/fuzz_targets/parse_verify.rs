//! `Qins::parse` then `Qins::verify` never panics.
//!
//! Besides the input as it is and with its header fixed up, every accepted file is verified
//! again with all its section checksums recomputed: that copy must still parse (checksums are
//! not structure), and its verification may then fail only on what the checksums do not cover
//! (`NonZeroPadding`, `StraySignBits`, `BadScale`, §14), never with `DataChecksum`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qins_read::Qins;

fuzz_target!(|data: &[u8]| {
    for input in qins_fuzz::candidates(data) {
        let Ok(q) = Qins::parse(&input) else {
            continue;
        };
        let first = q.verify();
        let fixed = qins_fuzz::with_data_checksums(&input);
        let q2 = Qins::parse(&fixed).expect("recomputing checksums broke a valid structure");
        match q2.verify() {
            Ok(()) => {}
            Err(e) => {
                let kind = e.kind();
                assert!(
                    matches!(kind, "NonZeroPadding" | "StraySignBits" | "BadScale"),
                    "verification failed with {kind} after every checksum was recomputed: {e}"
                );
                // The same problem was there before (or hidden behind a checksum error).
                let before = first.expect_err("a file that verified fails after fixing CRCs");
                assert!(before.kind() == kind || before.kind() == "DataChecksum");
            }
        }
    }
});
