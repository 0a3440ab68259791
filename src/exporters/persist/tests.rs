//! Unit tests of `persist`.

use super::*;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

fn traces(tag: u8, n: usize) -> Payload {
    Payload::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        span_id: vec![tag, i as u8, 0, 0, 0, 0, 0, 1],
                        name: format!("span-{tag}-{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn cfg(dir: &Path, max_size: u64, segment_size: u64) -> StorageConfig {
    StorageConfig {
        directory: dir.to_path_buf(),
        fsync: true,
        max_size,
        segment_size,
    }
}

fn append_wait(s: &Store, pipeline: &str, p: &Payload) -> u64 {
    let (id, rx) = s.append(pipeline, p, true).unwrap();
    rx.unwrap().blocking_recv().unwrap().unwrap();
    id
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| segment_number(p).is_some())
        .collect();
    v.sort();
    v
}

#[test]
fn unacknowledged_records_survive_a_restart_and_sending_ones_are_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), 1 << 30, 1 << 20);
    let (s, rec) = Store::open(&c).unwrap();
    assert!(rec.records.is_empty() && rec.damage.is_empty());
    let a = append_wait(&s, "traces", &traces(1, 2));
    let b = append_wait(&s, "traces/2", &traces(2, 3));
    let c3 = append_wait(&s, "traces", &traces(3, 1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(s.mark_sending(a));
    s.ack(a);
    rt.block_on(s.mark_sending(b));
    s.close();
    drop(s);
    let (s2, rec) = Store::open(&c).unwrap();
    assert!(rec.damage.is_empty());
    let got: Vec<(u64, &str, bool, u64)> = rec
        .records
        .iter()
        .map(|r| (r.id, r.pipeline.as_str(), r.was_sending, r.items))
        .collect();
    assert_eq!(
        got,
        vec![(b, "traces/2", true, 3), (c3, "traces", false, 1)]
    );
    assert_eq!(read_payload(&rec.records[0].location), Ok(traces(2, 3)));
    // New ids never reuse old ones.
    let d = append_wait(&s2, "traces", &traces(4, 1));
    assert!(d > c3);
}

#[test]
fn torn_tail_keeps_every_complete_record_and_moves_the_rest_aside() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), 1 << 30, 1 << 20);
    let (s, _) = Store::open(&c).unwrap();
    for t in 1..=3 {
        append_wait(&s, "traces", &traces(t, 4));
    }
    s.close();
    drop(s);
    let seg = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 7).unwrap();
    drop(f);
    let (_s, rec) = Store::open(&c).unwrap();
    let tags: Vec<u8> = rec.records.iter().map(|r| r.id as u8).collect();
    assert_eq!(tags, vec![1, 2]);
    assert_eq!(rec.damage.len(), 1);
    let dmg = &rec.damage[0];
    let moved_to = dmg.moved_to.as_ref().unwrap();
    assert!(dmg.bytes > 0 && moved_to.exists());
    assert_eq!(fs::metadata(moved_to).unwrap().len(), dmg.bytes);
    drop(_s);
    // The segment was rewritten clean: a second start finds no damage and the same data.
    let (_s, rec) = Store::open(&c).unwrap();
    assert!(rec.damage.is_empty());
    assert_eq!(rec.records.len(), 2);
}

#[test]
fn flipped_bytes_mid_file_lose_only_the_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), 1 << 30, 1 << 20);
    let (s, _) = Store::open(&c).unwrap();
    for t in 1..=5 {
        append_wait(&s, "traces", &traces(t, 4));
    }
    s.close();
    drop(s);
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    // Damage record 2: its span name "span-2-1".
    let pos = bytes.windows(8).position(|w| w == b"span-2-1").unwrap();
    bytes[pos] ^= 0xff;
    bytes[pos + 3] ^= 0x55;
    fs::write(&seg, &bytes).unwrap();
    let (_s, rec) = Store::open(&c).unwrap();
    let ids: Vec<u64> = rec.records.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![1, 3, 4, 5]);
    assert_eq!(read_payload(&rec.records[1].location), Ok(traces(3, 4)));
    assert_eq!(read_payload(&rec.records[3].location), Ok(traces(5, 4)));
    assert_eq!(rec.damage.len(), 1);
}

#[test]
fn damaged_header_and_garbage_between_records_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), 1 << 30, 1 << 20);
    let (s, _) = Store::open(&c).unwrap();
    for t in 1..=3 {
        append_wait(&s, "traces", &traces(t, 2));
    }
    s.close();
    drop(s);
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    // A flipped length byte in the first record's header.
    bytes[5] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    let (_s, rec) = Store::open(&c).unwrap();
    let ids: Vec<u64> = rec.records.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![2, 3]);
    assert_eq!(rec.damage[0].offset, 0);
}

#[test]
fn several_segments_are_replayed_in_order_and_finished_ones_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny segments: every record rotates.
    let c = cfg(dir.path(), 1 << 30, 64);
    let (s, _) = Store::open(&c).unwrap();
    let ids: Vec<u64> = (1..=6)
        .map(|t| append_wait(&s, "traces", &traces(t, 2)))
        .collect();
    assert!(segments(dir.path()).len() >= 6);
    // Acknowledge the first three and the fifth.
    for id in [ids[0], ids[1], ids[2], ids[4]] {
        s.ack(id);
    }
    s.close();
    drop(s);
    let (_s, rec) = Store::open(&c).unwrap();
    let left: Vec<u64> = rec.records.iter().map(|r| r.id).collect();
    assert_eq!(left, vec![ids[3], ids[5]]);
    // The segments of the first three records are gone (only ones from the fourth on remain).
    let first_left = segments(dir.path())
        .first()
        .and_then(|p| segment_number(p))
        .unwrap();
    assert!(first_left >= 3, "oldest remaining segment {first_left}");
}

#[test]
fn disk_use_is_bounded_and_acknowledging_frees_space() {
    let dir = tempfile::tempdir().unwrap();
    let p = traces(1, 20);
    let one = frame(&data_body(1, "traces", &p)).len() as u64;
    let c = cfg(dir.path(), one * 4 + 10, one);
    let (s, _) = Store::open(&c).unwrap();
    let mut ids = Vec::new();
    loop {
        match s.append("traces", &p, true) {
            Ok((id, rx)) => {
                rx.unwrap().blocking_recv().unwrap().unwrap();
                ids.push(id);
            }
            Err(StoreError::Full { used, max }) => {
                assert!(used <= max);
                break;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(ids.len() <= 4, "bound not enforced");
    }
    assert_eq!(ids.len(), 4);
    for id in &ids {
        s.ack(*id);
    }
    // The writer reclaims asynchronously: the next append succeeds once it did.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match s.append("traces", &p, true) {
            Ok((_, rx)) => {
                rx.unwrap().blocking_recv().unwrap().unwrap();
                break;
            }
            Err(StoreError::Full { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("space never freed: {e}"),
        }
    }
    let on_disk: u64 = segments(dir.path())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(on_disk <= c.max_size, "{on_disk} > {}", c.max_size);
}
