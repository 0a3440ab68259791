//! The service's memory budget: what `memory_limiter` sets and receivers charge before they
//! decode a request, so that data is refused (retryably) before memory runs out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::data::Refused;

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// The memory budget receivers charge an admitted request against before decoding it, so
/// that neither one request nor several concurrent ones can take the process past
/// `limit_mib`: the limit (the smallest of the service's `memory_limiter`s; none without
/// one), the last resident-memory reading, and what admitted requests in flight are
/// estimated to hold. One per service (in its [`SelfMetrics`](super::telemetry::SelfMetrics)).
#[derive(Debug, Default)]
pub struct Budget {
    limit: AtomicU64,
    rss: AtomicU64,
    inflight: AtomicU64,
}

/// Estimated memory of a decoded request: its protobuf bytes twice over (the decoded
/// strings and their copies on the way) plus 1 KiB per item (an empty span decodes and is
/// enriched to about 1 KiB).
pub fn estimate_request_bytes(wire_bytes: usize, items: u64) -> u64 {
    (wire_bytes as u64).saturating_mul(2) + items.saturating_mul(1024)
}

/// An admitted request's share of the [`Budget`], returned when dropped.
#[derive(Debug)]
pub struct Charge<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.budget.inflight.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Budget {
    /// Registers a memory_limiter's limit (the smallest one applies).
    pub fn set_limit(&self, limit: u64) {
        let _ = self
            .limit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                Some(if cur == 0 { limit } else { cur.min(limit) })
            });
    }

    /// Records the last resident-memory reading.
    pub fn observe(&self, rss: u64) {
        self.rss.store(rss, Ordering::Relaxed);
    }

    /// Bytes admitted requests are estimated to hold now.
    pub fn in_flight(&self) -> u64 {
        self.inflight.load(Ordering::Acquire)
    }

    /// Charges `bytes` for one request, or refuses it: permanently when it alone exceeds the
    /// limit (no retry can help), with a retry delay when the budget is taken by others.
    pub fn charge(&self, bytes: u64) -> Result<Charge<'_>, Refused> {
        let limit = self.limit.load(Ordering::Acquire);
        if limit == 0 {
            return Ok(Charge {
                budget: self,
                bytes: 0,
            });
        }
        if bytes > limit {
            return Err(Refused::permanent(format!(
                "the request would take about {} MiB once decoded, more than memory_limiter's limit_mib ({} MiB); send smaller requests",
                bytes / MIB,
                limit / MIB
            )));
        }
        let rss = self.rss.load(Ordering::Relaxed);
        let mut admitted = false;
        let _ = self
            .inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                admitted = rss.saturating_add(cur).saturating_add(bytes) <= limit;
                admitted.then_some(cur + bytes)
            });
        if !admitted {
            return Err(Refused {
                retryable: true,
                status: None,
                message: format!(
                    "memory budget: {} MiB resident and {} MiB admitted in flight leave no room for a request of about {} MiB under limit_mib ({} MiB); retry later",
                    rss / MIB,
                    self.in_flight() / MIB,
                    bytes.div_ceil(MIB),
                    limit / MIB
                ),
                retry_after: Some(Duration::from_secs(1)),
            });
        }
        Ok(Charge {
            budget: self,
            bytes,
        })
    }
}
