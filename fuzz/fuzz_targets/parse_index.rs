//! `Index::parse` (a set's index, spec §21.2) on arbitrary bytes never panics; an index it
//! accepts keeps the rules it checked (shards listed once, plain file names, the weight map
//! pointing at listed shards, the total the sum of the sizes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qins_read::Index;

fuzz_target!(|data: &[u8]| {
    match Index::parse(data) {
        Ok(i) => {
            assert!(!i.shards().is_empty());
            let mut names = std::collections::BTreeSet::new();
            for s in i.shards() {
                assert!(qins_format::set::is_valid_file_name(&s.file));
                assert!(names.insert(s.file.clone()));
            }
            assert_eq!(i.shards().iter().map(|s| s.size).sum::<u64>(), i.total_size());
            assert_eq!(i.version().0, 1);
        }
        Err(e) => {
            assert!(matches!(e.kind(), "BadIndex" | "UnsupportedVersion" | "LimitExceeded"));
            assert!(!e.to_string().is_empty());
        }
    }
});
