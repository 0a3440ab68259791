//! Deterministic span and trace ids.
//!
//! Span number `seq` (0-based, over the whole run) of run `nonce` gets
//! `span_id = nonce << 40 | (seq + 1)` (big-endian) and the trace id
//! `nonce (8 bytes) ++ seq / SPANS_PER_TRACE (8 bytes)`. The sink, given the same nonce and
//! the expected count, maps every arriving span id back to `seq` and checks each arrived.

/// Spans that share one trace id.
pub const SPANS_PER_TRACE: u64 = 5;
/// Bits of the span id that carry `seq + 1`.
pub const SEQ_BITS: u32 = 40;

/// The span id of span `seq` in run `nonce` (only the low 24 bits of the nonce are used).
pub fn span_id(nonce: u64, seq: u64) -> [u8; 8] {
    (((nonce & 0xff_ffff) << SEQ_BITS) | (seq + 1)).to_be_bytes()
}

/// The trace id of span `seq` in run `nonce`.
pub fn trace_id(nonce: u64, seq: u64) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&(nonce | 1 << 63).to_be_bytes());
    t[8..].copy_from_slice(&(seq / SPANS_PER_TRACE).to_be_bytes());
    t
}

/// `seq` of a span id of run `nonce`, or `None` for an id of another run or malformed.
pub fn seq_of(nonce: u64, span_id: &[u8]) -> Option<u64> {
    let b: [u8; 8] = span_id.try_into().ok()?;
    let v = u64::from_be_bytes(b);
    if v >> SEQ_BITS != nonce & 0xff_ffff {
        return None;
    }
    (v & ((1 << SEQ_BITS) - 1)).checked_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for seq in [0, 1, 99, 1 << 30] {
            assert_eq!(seq_of(0xabc, &span_id(0xabc, seq)), Some(seq));
            assert_eq!(seq_of(0xabd, &span_id(0xabc, seq)), None);
        }
        assert_ne!(span_id(7, 0), [0; 8]);
        assert_eq!(trace_id(7, 0), trace_id(7, SPANS_PER_TRACE - 1));
        assert_ne!(trace_id(7, 0), trace_id(7, SPANS_PER_TRACE));
    }
}
