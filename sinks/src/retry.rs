//! Jittered exponential backoff that honours a server's `Retry-After`.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// Waits between attempts: `first`, doubling up to `max`, each drawn from
/// [½, 1] of that (so retrying clients spread out). A `Retry-After` longer
/// than the drawn wait wins, capped at `max_retry_after`.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    max_retry_after: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { first, max, max_retry_after: Duration::from_secs(300), attempt: 0 }
    }

    /// The wait before the next attempt.
    pub fn next(&mut self, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.first.saturating_mul(1u32 << self.attempt.min(20)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let drawn = ceiling.mul_f64(rand::rng().random_range(0.5..=1.0));
        drawn.max(retry_after.unwrap_or_default().min(self.max_retry_after))
    }

    /// Attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A `Retry-After` header value: delay seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_is_capped() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let waits: Vec<Duration> = (0..8).map(|_| backoff.next(None)).collect();
        assert!(waits[0] >= Duration::from_millis(50) && waits[0] <= Duration::from_millis(100), "{waits:?}");
        assert!(waits[3] >= Duration::from_millis(400) && waits[3] <= Duration::from_millis(800), "{waits:?}");
        assert!(waits[7] >= Duration::from_secs(1) && waits[7] <= Duration::from_secs(2), "{waits:?}");
        assert_eq!(backoff.attempts(), 8);
        backoff.reset();
        assert!(backoff.next(None) <= Duration::from_millis(100));
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next(Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(backoff.next(Some(Duration::from_secs(10_000))), Duration::from_secs(300));
    }

    #[test]
    fn parses_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        let later = SystemTime::now() + Duration::from_secs(90);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(parsed > Duration::from_secs(85) && parsed <= Duration::from_secs(90), "{parsed:?}");
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO), "a past date");
        assert_eq!(parse_retry_after("soon"), None);
    }
}
