//! The `cost` processor's duplicate detector: which (attribution, trace id, span id) was
//! already priced within `dedup_window`.
//!
//! Each key is reduced to a 64-bit fingerprint by SipHash-1-3 under a random key drawn once
//! per process (`std`'s `RandomState`), so nobody outside the process can choose ids that
//! collide with someone else's. Fingerprints live in [`BUCKETS`] time buckets, each a
//! fixed-size open-addressing table (linear probing, load ≤ 3/4) allocated once at start:
//! the memory is fixed, nothing grows or rehashes on the request path.
//!
//! * The window is cut in `BUCKETS − 1` slices; the newest bucket receives the slice being
//!   filled, the others the previous slices. When a slice ends the oldest bucket is cleared
//!   and becomes the newest, so a key is remembered for at least the window and at most
//!   `window × BUCKETS / (BUCKETS − 1)`.
//! * A bucket holds at most `ceil(max_entries / (BUCKETS − 1))` keys, so a window's worth of
//!   `max_entries` keys spread over the slices is always tracked.
//! * **At the bound** (a slice receives more than a bucket holds) the next bucket is started
//!   early: the oldest one is cleared although it may still be inside the window. Every new
//!   key is still recorded (deduplication never stops); what shrinks is how far back it
//!   reaches. [`Seen::NewEvicting`] reports the keys dropped before their time, which the
//!   processor counts and logs.
//! * **False positives** (a new key whose fingerprint equals a remembered one, so a span
//!   wrongly counted as a duplicate): at most `BUCKETS × per_bucket` fingerprints are live,
//!   each equal to a new key's with probability 2⁻⁶⁴, so the rate is below
//!   `BUCKETS × per_bucket / 2⁶⁴` per span: 6.2 × 10⁻¹⁴ at the default 1,000,000 (README).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Time buckets (the window is `BUCKETS − 1` slices).
pub const BUCKETS: usize = 8;

/// What [`Dedup::seen`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time within the window (now recorded).
    New,
    Duplicate,
    /// First time, recorded; to make room the oldest bucket was cleared before the window had
    /// passed over it.
    NewEvicting(Evicted),
}

/// Keys dropped before their window ended (the table was at its bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    pub entries: usize,
    /// How long ago the youngest dropped key was recorded (less than the window).
    pub youngest_age: Duration,
}

/// The sizes derived from `max_entries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    /// Keys one bucket holds.
    pub per_bucket: usize,
    /// Slots of one bucket's table (a power of two, ≥ 4/3 × `per_bucket`).
    pub slots: usize,
}

impl Sizing {
    pub fn of(max_entries: usize) -> Sizing {
        let per_bucket = max_entries.div_ceil(BUCKETS - 1).max(1);
        let slots = (per_bucket * 4).div_ceil(3).next_power_of_two().max(2);
        Sizing { per_bucket, slots }
    }
    /// Bytes of all the tables.
    pub fn bytes(&self) -> usize {
        BUCKETS * self.slots * std::mem::size_of::<u64>()
    }
}

struct Table {
    /// 0 = empty; fingerprints are never 0.
    slots: Box<[u64]>,
    len: usize,
    start: Instant,
    last_insert: Instant,
}

impl Table {
    fn contains(&self, fp: u64) -> bool {
        if self.len == 0 {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut i = fp as usize & mask;
        loop {
            let v = self.slots[i];
            if v == fp {
                return true;
            }
            if v == 0 {
                return false;
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts a fingerprint known to be absent (the load is kept ≤ 3/4, so a free slot
    /// exists).
    fn insert(&mut self, fp: u64, now: Instant) {
        let mask = self.slots.len() - 1;
        let mut i = fp as usize & mask;
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = fp;
        self.len += 1;
        self.last_insert = now;
    }

    fn clear(&mut self, start: Instant) {
        if self.len > 0 {
            self.slots.fill(0);
        }
        self.len = 0;
        self.start = start;
        self.last_insert = start;
    }
}

struct Buckets {
    tables: Vec<Table>,
    /// The bucket receiving new keys.
    current: usize,
    len: usize,
    evicted_early: u64,
}

/// Remembers priced spans' keys for `window` in a fixed amount of memory (module docs).
pub struct Dedup {
    window: Duration,
    slice: Duration,
    sizing: Sizing,
    hasher: RandomState,
    /// Bits of the fingerprint kept (all 64 but in tests of the false-positive arithmetic).
    fp_mask: u64,
    inner: Option<Mutex<Buckets>>,
}

impl Dedup {
    /// `window` zero turns deduplication off (no memory).
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Self::with_fingerprint_bits(window, max_entries, 64, Instant::now())
    }

    /// As [`Dedup::new`], keeping only `bits` bits of each fingerprint (tests measure the
    /// false-positive rate with few bits, where it is large enough to count), with the first
    /// slice starting at `now`.
    pub fn with_fingerprint_bits(
        window: Duration,
        max_entries: usize,
        bits: u32,
        now: Instant,
    ) -> Self {
        let sizing = Sizing::of(max_entries);
        let inner = (!window.is_zero()).then(|| {
            Mutex::new(Buckets {
                tables: (0..BUCKETS)
                    .map(|_| Table {
                        slots: vec![0u64; sizing.slots].into_boxed_slice(),
                        len: 0,
                        start: now,
                        last_insert: now,
                    })
                    .collect(),
                current: 0,
                len: 0,
                evicted_early: 0,
            })
        });
        Dedup {
            window,
            slice: window / (BUCKETS as u32 - 1),
            sizing,
            hasher: RandomState::new(),
            fp_mask: if bits >= 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            },
            inner,
        }
    }

    pub fn sizing(&self) -> Sizing {
        self.sizing
    }

    /// Bytes held by the tables (0 when off).
    pub fn allocated_bytes(&self) -> usize {
        self.lock().map_or(0, |b| {
            b.tables
                .iter()
                .map(|t| std::mem::size_of_val(&*t.slots))
                .sum()
        })
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Buckets>> {
        self.inner.as_ref().map(|m| match m.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        })
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.lock().map_or(0, |b| b.len)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys dropped before their window ended, since start.
    pub fn evicted_early(&self) -> u64 {
        self.lock().map_or(0, |b| b.evicted_early)
    }

    /// The key's fingerprint; `None` when an id does not have its OTLP length (such a span
    /// is never tracked, never a duplicate; the receivers refuse them).
    fn fingerprint(&self, tenant: Option<&str>, trace_id: &[u8], span_id: &[u8]) -> Option<u64> {
        if trace_id.len() != 16 || span_id.len() != 8 {
            return None;
        }
        let fp = self.hasher.hash_one((tenant, trace_id, span_id)) & self.fp_mask;
        Some(fp.max(1))
    }

    /// Starts the buckets the clock has reached (clearing the oldest each time).
    fn advance(&self, b: &mut Buckets, now: Instant) -> Option<Evicted> {
        let mut evicted: Option<Evicted> = None;
        let cur_start = b.tables[b.current].start;
        if now.duration_since(cur_start) >= self.slice * BUCKETS as u32 {
            // Idle for longer than every bucket: all of it has expired.
            for t in &mut b.tables {
                t.clear(now);
            }
            b.len = 0;
            return None;
        }
        while now.duration_since(b.tables[b.current].start) >= self.slice {
            let start = b.tables[b.current].start + self.slice;
            if let Some(e) = self.rotate(b, start, now) {
                evicted = Some(e);
            }
        }
        evicted
    }

    /// Clears the oldest bucket and makes it the current one, starting at `start`.
    fn rotate(&self, b: &mut Buckets, start: Instant, now: Instant) -> Option<Evicted> {
        let next = (b.current + 1) % BUCKETS;
        let t = &mut b.tables[next];
        let age = now.duration_since(t.last_insert);
        let early = (t.len > 0 && age < self.window).then_some(Evicted {
            entries: t.len,
            youngest_age: age,
        });
        b.len -= t.len;
        t.clear(start);
        b.current = next;
        if let Some(e) = early {
            b.evicted_early += e.entries as u64;
        }
        early
    }

    /// Whether this priced span was already priced within the window under the same
    /// attribution (`tenant`: the verified tenant, `None` for the unattributed bucket), and
    /// records it if not. Call it only for spans that are priced.
    pub fn seen(
        &self,
        tenant: Option<&str>,
        trace_id: &[u8],
        span_id: &[u8],
        now: Instant,
    ) -> Seen {
        let Some(fp) = self.fingerprint(tenant, trace_id, span_id) else {
            return Seen::New;
        };
        let Some(mut b) = self.lock() else {
            return Seen::New;
        };
        let mut evicted = self.advance(&mut b, now);
        if b.tables.iter().any(|t| t.contains(fp)) {
            return Seen::Duplicate;
        }
        if b.tables[b.current].len >= self.sizing.per_bucket {
            // At the bound: start the next bucket now.
            if let Some(e) = self.rotate(&mut b, now, now) {
                evicted = Some(e);
            }
        }
        let cur = b.current;
        b.tables[cur].insert(fp, now);
        b.len += 1;
        match evicted {
            Some(e) => Seen::NewEvicting(e),
            None => Seen::New,
        }
    }

    /// Whether the key is remembered (records nothing).
    pub fn contains(&self, tenant: Option<&str>, trace_id: &[u8], span_id: &[u8]) -> bool {
        match (self.fingerprint(tenant, trace_id, span_id), self.lock()) {
            (Some(fp), Some(b)) => b.tables.iter().any(|t| t.contains(fp)),
            _ => false,
        }
    }

    /// Clears the buckets the clock has passed (the processor calls it periodically, so an
    /// idle gateway's gauge falls too).
    pub fn sweep(&self, now: Instant) -> Option<Evicted> {
        let mut b = self.lock()?;
        self.advance(&mut b, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of distinct-looking 24-byte ids (splitmix64).
    struct Ids(u64);
    impl Ids {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn next(&mut self) -> ([u8; 16], [u8; 8]) {
            let mut t = [0u8; 16];
            t[..8].copy_from_slice(&self.next_u64().to_le_bytes());
            t[8..].copy_from_slice(&self.next_u64().to_le_bytes());
            (t, self.next_u64().to_le_bytes())
        }
    }

    #[test]
    fn window_and_attribution() {
        let w = Duration::from_secs(7);
        let t0 = Instant::now();
        let d = Dedup::with_fingerprint_bits(w, 1000, 64, t0);
        let (t, s) = ([1u8; 16], [1u8; 8]);
        assert_eq!(d.seen(Some("a"), &t, &s, t0), Seen::New);
        assert_eq!(d.seen(Some("a"), &t, &s, t0), Seen::Duplicate);
        // The same ids under another attribution are not a duplicate.
        assert_eq!(d.seen(None, &t, &s, t0), Seen::New);
        assert_eq!(d.seen(Some("b"), &t, &s, t0), Seen::New);
        // Still a duplicate just before the window ends ...
        assert_eq!(
            d.seen(Some("a"), &t, &s, t0 + w - Duration::from_millis(1)),
            Seen::Duplicate
        );
        // ... and forgotten once the window plus one slice (1 s here) has passed.
        assert_eq!(
            d.seen(Some("a"), &t, &s, t0 + w + Duration::from_secs(1)),
            Seen::New
        );
        // Ids of the wrong length are never tracked.
        assert_eq!(d.seen(None, &[1; 15], &s, t0), Seen::New);
        assert_eq!(d.seen(None, &[1; 15], &s, t0), Seen::New);
        // Off: never a duplicate, no memory.
        let off = Dedup::new(Duration::ZERO, 1000);
        assert_eq!(off.seen(None, &t, &s, t0), Seen::New);
        assert_eq!(off.seen(None, &t, &s, t0), Seen::New);
        assert_eq!(off.allocated_bytes(), 0);
    }

    #[test]
    fn buckets_expire_one_slice_at_a_time() {
        // Window 7 s = 7 slices of 1 s; 8 buckets.
        let t0 = Instant::now();
        let d = Dedup::with_fingerprint_bits(Duration::from_secs(7), 7000, 64, t0);
        let mut ids = Ids(1);
        let at = |s: u64| t0 + Duration::from_millis(s);
        // 100 keys in each of the first 10 seconds.
        let mut per_second = Vec::new();
        for sec in 0..10u64 {
            let keys: Vec<_> = (0..100).map(|_| ids.next()).collect();
            for (i, (t, s)) in keys.iter().enumerate() {
                assert_eq!(d.seen(None, t, s, at(sec * 1000 + i as u64)), Seen::New);
            }
            per_second.push(keys);
        }
        // At 9.5 s the current bucket started at 9 s; the 8 buckets hold the slices starting
        // at 2 s .. 9 s; seconds 0 and 1 are forgotten (each kept >= 7 s after its last key).
        d.sweep(at(9_500));
        assert_eq!(d.len(), 800);
        for (sec, keys) in per_second.iter().enumerate() {
            for (t, s) in keys {
                assert_eq!(d.contains(None, t, s), sec >= 2, "second {sec}");
            }
        }
        // Each key was kept at least the window: a key of second 2 recorded at 2.099 s is
        // still known at 9.098 s.
        let (t, s) = per_second[2][99];
        assert_eq!(d.seen(None, &t, &s, at(9_098)), Seen::Duplicate);
        // One more second: second 2 goes.
        d.sweep(at(10_000));
        assert_eq!(d.len(), 700);
        assert!(!d.contains(None, &t, &s));
        // Idle for longer than all buckets: everything expires.
        d.sweep(at(30_000));
        assert_eq!(d.len(), 0);
        assert_eq!(d.evicted_early(), 0);
    }

    #[test]
    fn one_million_pairs_within_32_mib_and_the_bound() {
        let max = 1_000_000usize;
        let window = Duration::from_secs(700);
        let t0 = Instant::now();
        let d = Dedup::with_fingerprint_bits(window, max, 64, t0);
        // Sizing computed here: a bucket holds ceil(1e6 / 7) = 142,858 keys in a table of
        // the next power of two ≥ 4/3 of that (190,478 -> 262,144) u64 slots; 8 buckets.
        assert_eq!(d.sizing().per_bucket, 142_858);
        assert_eq!(d.sizing().slots, 262_144);
        assert_eq!(d.allocated_bytes(), 8 * 262_144 * 8);
        assert!(d.allocated_bytes() <= 32 << 20);
        // 1,000,000 keys evenly over the 700 s window (one slice = 100 s).
        let at = |i: usize| t0 + Duration::from_micros(i as u64 * 700);
        let mut ids = Ids(42);
        let keys: Vec<_> = (0..max).map(|_| ids.next()).collect();
        for (i, (t, s)) in keys.iter().enumerate() {
            assert_eq!(d.seen(Some("t"), t, s, at(i)), Seen::New, "key {i}");
        }
        assert_eq!(d.len(), max);
        assert_eq!(d.evicted_early(), 0);
        // Every one of them is a duplicate at the end of the window.
        let end = at(max - 1);
        for (t, s) in &keys {
            assert_eq!(d.seen(Some("t"), t, s, end), Seen::Duplicate);
        }
        // At the bound: a burst beyond what the current bucket holds starts the next
        // bucket early, dropping the oldest slice before its time, and says so ...
        let room = 7 * d.sizing().per_bucket + d.sizing().per_bucket - d.len();
        let burst: Vec<_> = (0..room + 10).map(|_| ids.next()).collect();
        let mut evictions = Vec::new();
        for (t, s) in &burst {
            match d.seen(Some("t"), t, s, end) {
                Seen::New => {}
                Seen::NewEvicting(e) => evictions.push(e),
                Seen::Duplicate => panic!("a new key counted as a duplicate"),
            }
        }
        assert_eq!(evictions.len(), 1);
        // The oldest bucket held the first slice: keys 0..=142,857 at 700 µs apart.
        let first_slice = (0..max)
            .filter(|&i| at(i) < t0 + Duration::from_secs(100))
            .count();
        assert_eq!(evictions[0].entries, first_slice);
        assert!(evictions[0].youngest_age < window);
        assert_eq!(d.evicted_early(), first_slice as u64);
        // ... and never stops deduplicating: every key of the burst is now a duplicate, and
        // so is every key of the slices that were kept.
        for (t, s) in &burst {
            assert_eq!(d.seen(Some("t"), t, s, end), Seen::Duplicate);
        }
        for (t, s) in &keys[first_slice..] {
            assert!(d.contains(Some("t"), t, s));
        }
        assert!(d.len() <= 8 * d.sizing().per_bucket);
    }

    #[test]
    fn false_positives_over_ten_million_random_ids() {
        // 64-bit fingerprints (production): 10M fresh random ids through a table kept at its
        // bound (1M keys per window). Bound per span: live fingerprints / 2^64.
        let max = 1_000_000usize;
        let window = Duration::from_secs(700);
        let t0 = Instant::now();
        let d = Dedup::with_fingerprint_bits(window, max, 64, t0);
        let live = 8 * d.sizing().per_bucket;
        let bound = live as f64 / 2f64.powi(64);
        assert!(bound < 1e-9);
        let mut ids = Ids(7);
        let n = 10_000_000usize;
        let mut false_positives = 0usize;
        for i in 0..n {
            let (t, s) = ids.next();
            let now = t0 + Duration::from_micros(i as u64 * 700);
            if d.seen(None, &t, &s, now) == Seen::Duplicate {
                false_positives += 1;
            }
        }
        println!(
            "dedup false positives, 64-bit fingerprints: {false_positives} in {n} random ids (bound {bound:.2e} per span, {live} live fingerprints at most)"
        );
        assert_eq!(false_positives, 0);

        // The same arithmetic checked where it is measurable: 20-bit fingerprints, 50,000
        // keys, 1,000,000 fresh queries. A query is a false positive when its fingerprint is
        // one of the k distinct stored ones: expected = q × k / 2^20, with k = 50,000 less
        // the keys that already collided on insertion.
        let d = Dedup::with_fingerprint_bits(window, max, 20, t0);
        let stored = (0..50_000)
            .filter(|_| {
                let (t, s) = ids.next();
                d.seen(None, &t, &s, t0) == Seen::New
            })
            .count();
        assert!(stored > 48_000, "{stored}");
        let k = stored as f64;
        let q = 1_000_000usize;
        let hits = (0..q)
            .filter(|_| {
                let (t, s) = ids.next();
                d.contains(None, &t, &s)
            })
            .count();
        let p = k / 2f64.powi(20);
        let expected = q as f64 * p;
        let sigma = (q as f64 * p * (1.0 - p)).sqrt();
        println!(
            "dedup false positives, 20-bit fingerprints: {hits} in {q} (expected {expected:.0} ± {sigma:.0})"
        );
        assert!(
            (hits as f64 - expected).abs() < 5.0 * sigma,
            "{hits} vs {expected}"
        );
    }
}
