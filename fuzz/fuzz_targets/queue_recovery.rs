//! Persistent-queue recovery over arbitrary segment bytes: opening must never fail on
//! damage (only on directory I/O), every recovered record must read back, and a second
//! open must find the same records and no new damage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::exporters::persist::{read_payload, StorageConfig, Store};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("tollgate-fuzz-queue-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Up to three segments from the input, split at 0xFE bytes.
    let mut n = 0u64;
    for part in data.split(|b| *b == 0xFE).take(3) {
        std::fs::write(dir.join(format!("{n:016}.seg")), part).unwrap();
        n += 1;
    }
    let cfg = StorageConfig {
        directory: dir.clone(),
        fsync: false,
        max_size: 1 << 30,
        segment_size: 1 << 20,
    };
    let (store, rec) = Store::open(&cfg).expect("recovery never fails on damaged bytes");
    for r in &rec.records {
        let p = read_payload(&r.location).expect("a recovered record reads back");
        assert_eq!(p.signal(), r.signal);
        assert_eq!(p.item_count(), r.items);
    }
    let ids: Vec<u64> = rec.records.iter().map(|r| r.id).collect();
    store.close();
    drop(store);
    let (store, again) = Store::open(&cfg).expect("second open");
    let again_ids: Vec<u64> = again.records.iter().map(|r| r.id).collect();
    assert_eq!(ids, again_ids);
    assert!(again.damage.is_empty(), "{:?}", again.damage);
    store.close();
});
