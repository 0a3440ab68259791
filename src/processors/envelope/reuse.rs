//! Envelope reuse: distinct traces per (tenant, issuance id) within a window, bounded in
//! entries, swept at most once a second when full.

use std::collections::HashMap;

/// Counts distinct traces per (tenant, issuance id) within a window. Keys are 64-bit keyed
/// hashes of (tenant, issuance id) (no allocation per span; two issuances sharing a hash,
/// about n² / 2⁶⁵ for n issuances, would only merge their trace counts).
pub(super) struct ReuseTracker {
    pub(super) max_traces: usize,
    pub(super) window: std::time::Duration,
    pub(super) max_entries: usize,
    pub(super) hasher: std::collections::hash_map::RandomState,
    pub(super) map: std::sync::Mutex<ReuseMap>,
}

#[derive(Default)]
pub(super) struct ReuseMap {
    pub(super) entries: HashMap<u64, ReuseEntry>,
    /// When the map was last swept for expired entries (at most once a second when full,
    /// so a full map does not cost a scan per new issuance).
    pub(super) last_sweep: Option<std::time::Instant>,
}

pub(super) struct ReuseEntry {
    since: std::time::Instant,
    /// Distinct trace ids, at most `max_traces + 1` (beyond that every trace is a reuse).
    traces: Vec<[u8; 16]>,
}

/// What [`ReuseTracker::observe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reuse {
    No,
    /// Over the bound; `true` the first time this issuance crossed it in its window.
    Yes(bool),
}

impl ReuseTracker {
    pub(super) fn observe(
        &self,
        tenant: &str,
        issuance: &str,
        trace_id: &[u8],
        now: std::time::Instant,
    ) -> Reuse {
        use std::hash::BuildHasher;
        let key = self.hasher.hash_one((tenant, issuance));
        let trace: [u8; 16] = trace_id.try_into().unwrap_or_default();
        let mut g = match self.map.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let m = &mut *g;
        if !m.entries.contains_key(&key) && m.entries.len() >= self.max_entries {
            let due = m
                .last_sweep
                .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(1));
            if due {
                let w = self.window;
                m.entries.retain(|_, e| now.duration_since(e.since) < w);
                m.last_sweep = Some(now);
            }
            if m.entries.len() >= self.max_entries {
                return Reuse::No;
            }
        }
        let e = m.entries.entry(key).or_insert_with(|| ReuseEntry {
            since: now,
            traces: Vec::new(),
        });
        if now.duration_since(e.since) >= self.window {
            e.since = now;
            e.traces.clear();
        }
        if e.traces.len() > self.max_traces {
            return Reuse::Yes(false);
        }
        if !e.traces.contains(&trace) {
            e.traces.push(trace);
            if e.traces.len() > self.max_traces {
                return Reuse::Yes(true);
            }
        }
        Reuse::No
    }
}
