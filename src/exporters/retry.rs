//! `retry_on_failure`: exponential backoff with jitter around one exporter attempt.
//!
//! Which failures are retried is the exporter's call (`ExportError::retryable`, e.g. the OTLP
//! retryable gRPC codes); a server-chosen delay (`RetryInfo`, `Retry-After`) is honoured: the
//! wait is never shorter than it.

use std::time::{Duration, Instant};

use crate::config::{Diagnostics, Map};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    pub enabled: bool,
    pub initial_interval: Duration,
    pub max_interval: Duration,
    pub multiplier: f64,
    /// Each wait is spread uniformly over `interval * (1 ± randomization_factor)`.
    pub randomization_factor: f64,
    /// Give up once this much time has passed since the first attempt; zero retries forever.
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            multiplier: 1.5,
            randomization_factor: 0.5,
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

/// Reads `retry_on_failure` from an exporter's options (defaults when absent).
pub fn parse(exporter: &Map<'_>, d: &mut Diagnostics) -> RetryConfig {
    let mut c = RetryConfig::default();
    let Some(m) = exporter.map("retry_on_failure", d) else {
        return c;
    };
    if let Some(v) = m.bool("enabled", d) {
        c.enabled = v;
    }
    if let Some(v) = m.duration("initial_interval", d) {
        if v.is_zero() {
            d.error(m.key_path("initial_interval"), "must be greater than 0");
        } else {
            c.initial_interval = v;
        }
    }
    if let Some(v) = m.duration("max_interval", d) {
        if v.is_zero() {
            d.error(m.key_path("max_interval"), "must be greater than 0");
        } else {
            c.max_interval = v;
        }
    }
    if let Some(v) = m.f64("multiplier", d) {
        if !(v.is_finite() && v >= 1.0) {
            d.error(
                m.key_path("multiplier"),
                format!("must be at least 1, found {v}"),
            );
        } else {
            c.multiplier = v;
        }
    }
    if let Some(v) = m.f64("randomization_factor", d) {
        if !(0.0..1.0).contains(&v) {
            d.error(
                m.key_path("randomization_factor"),
                format!("must be at least 0 and below 1, found {v}"),
            );
        } else {
            c.randomization_factor = v;
        }
    }
    if let Some(v) = m.duration("max_elapsed_time", d) {
        c.max_elapsed_time = v;
    }
    if c.max_interval < c.initial_interval {
        d.error(
            m.key_path("max_interval"),
            format!(
                "must not be shorter than initial_interval ({:?})",
                c.initial_interval
            ),
        );
    }
    m.finish(d);
    c
}

/// The waits between attempts of one request.
pub struct Backoff {
    cfg: RetryConfig,
    current: Duration,
    started: Instant,
    rng: u64,
}

impl Backoff {
    pub fn new(cfg: RetryConfig) -> Self {
        Self::starting_at(cfg, Instant::now())
    }

    pub fn starting_at(cfg: RetryConfig, started: Instant) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        let local = &seed as *const u64 as u64;
        Backoff {
            cfg,
            current: cfg.initial_interval,
            started,
            rng: (seed ^ local.rotate_left(32)) | 1,
        }
    }

    /// A uniform number in [0, 1) (xorshift64*).
    fn unit(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// How long to wait before the next attempt, or `None` to give up (retry disabled or
    /// `max_elapsed_time` would be passed). `server_delay` is the backend's own request.
    pub fn next_delay(&mut self, server_delay: Option<Duration>) -> Option<Duration> {
        if !self.cfg.enabled {
            return None;
        }
        let f = self.cfg.randomization_factor;
        let jitter = 1.0 + f * (2.0 * self.unit() - 1.0);
        let mut delay = self.current.mul_f64(jitter.max(0.0));
        self.current = self
            .current
            .mul_f64(self.cfg.multiplier)
            .min(self.cfg.max_interval);
        if let Some(s) = server_delay {
            delay = delay.max(s);
        }
        if !self.cfg.max_elapsed_time.is_zero()
            && self.started.elapsed() + delay > self.cfg.max_elapsed_time
        {
            return None;
        }
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RetryConfig {
        RetryConfig {
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(4),
            multiplier: 2.0,
            randomization_factor: 0.0,
            max_elapsed_time: Duration::ZERO,
            ..RetryConfig::default()
        }
    }

    #[test]
    fn grows_by_multiplier_up_to_max_interval() {
        let mut b = Backoff::new(cfg());
        let waits: Vec<u64> = (0..5)
            .map(|_| b.next_delay(None).unwrap().as_secs())
            .collect();
        assert_eq!(waits, vec![1, 2, 4, 4, 4]);
    }

    #[test]
    fn jitter_stays_within_the_randomization_factor() {
        let mut b = Backoff::new(RetryConfig {
            randomization_factor: 0.5,
            max_interval: Duration::from_secs(1),
            ..cfg()
        });
        let waits: Vec<Duration> = (0..200).map(|_| b.next_delay(None).unwrap()).collect();
        assert!(waits
            .iter()
            .all(|w| *w >= Duration::from_millis(500) && *w <= Duration::from_millis(1500)));
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "waits are spread, not constant");
    }

    #[test]
    fn server_delay_is_honoured() {
        let mut b = Backoff::new(cfg());
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(9))),
            Some(Duration::from_secs(9))
        );
        // A shorter server delay does not shorten the backoff.
        assert_eq!(
            b.next_delay(Some(Duration::from_millis(1))),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn gives_up_after_max_elapsed_time_and_zero_means_forever() {
        let past = Instant::now() - Duration::from_secs(10);
        let mut b = Backoff::starting_at(
            RetryConfig {
                max_elapsed_time: Duration::from_secs(10),
                ..cfg()
            },
            past,
        );
        assert_eq!(b.next_delay(None), None);
        let mut forever = Backoff::starting_at(cfg(), past - Duration::from_secs(100_000));
        assert!(forever.next_delay(None).is_some());
        let mut off = Backoff::new(RetryConfig {
            enabled: false,
            ..cfg()
        });
        assert_eq!(off.next_delay(None), None);
    }
}
