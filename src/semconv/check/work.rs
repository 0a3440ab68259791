//! Counts the per-attribute steps of the checker in tests, so linear time is asserted by
//! counting work rather than timing it (a no-op outside tests).

#[cfg(test)]
thread_local! {
    static STEPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[inline(always)]
pub fn step(_n: u64) {
    #[cfg(test)]
    STEPS.with(|s| s.set(s.get() + _n));
}

/// Steps counted on this thread so far (tests only).
#[cfg(test)]
pub fn steps() -> u64 {
    STEPS.with(|s| s.get())
}
