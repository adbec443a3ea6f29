//! `Qins::parse`, then every accessor a runtime uses: every encoded tensor decoded whole into
//! f32, bf16 and f16 and in random element and row ranges (each checked against the decode
//! rule of §11.4, computed element by element), requests past the end refused, every raw
//! tensor's and asset's bytes read. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qins_read::Qins;

fuzz_target!(|data: &[u8]| {
    let mut rng = qins_fuzz::Rng::from_bytes(data);
    for input in qins_fuzz::candidates(data) {
        let Ok(q) = Qins::parse(&input) else {
            continue;
        };
        for t in q.tensors() {
            qins_fuzz::check_decode(&t, &mut rng);
        }
        for (_, bytes) in q.assets() {
            std::hint::black_box(bytes.iter().fold(0u8, |a, &b| a ^ b));
        }
    }
});
