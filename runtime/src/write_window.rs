//! How many write transactions a writer keeps in flight (a worker's claims
//! and releases, control's progress batches), adapted to how long they
//! take: additive increase while they are quick, halved when one is slow
//! (as TCP's congestion window).
//!
//! etcd answers a transaction once it is applied, so a slow answer means
//! etcd's apply lags its commits — and etcd 3.4's leader refuses every lease
//! renewal while that lag is over a second ("waiting for the applied index
//! took too long"). In a cold start of 100 000 jobs, ten workers with four
//! claim transactions of 64 jobs in flight each kept the lag there for
//! seconds, and in about half the runs every worker's lease expired. The
//! bench writing the same claims with one stream was as fast as with ten:
//! more in flight only queues them.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// Transactions in flight when they are quick: a join or a failover moves
/// thousands of jobs to one worker, and one transaction after the other made
/// each moved job wait seconds unowned.
pub const MAX: usize = 4;
/// An answer slower than this halves the window: a quarter of the second
/// after which etcd refuses renewals (at 500 ms, ten workers claiming
/// 100 000 jobs still lost every lease in one run of three).
const SLOW: Duration = Duration::from_millis(250);
/// Answers quicker than this grow it, by one per window's worth. Close to
/// `SLOW`: a window starts at one, and with a wide band between the two
/// (100-250 ms) a worker joining a busy cluster stayed at one (join gap p99
/// 484 ms at 100 000 jobs, 128-271 ms before).
const QUICK: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub struct WriteWindow {
    size: Mutex<f64>,
    slow: Duration,
    quick: Duration,
    /// The gauge that shows the size.
    gauge: &'static str,
}

impl WriteWindow {
    /// A window shown as `gauge`.
    pub fn new(gauge: &'static str) -> Self {
        Self::with_thresholds(gauge, SLOW, QUICK)
    }

    /// A window halved by answers slower than `slow`, grown by those
    /// quicker than `quick` (tests use short ones).
    pub fn with_thresholds(gauge: &'static str, slow: Duration, quick: Duration) -> Self {
        // One at first, grown by quick answers: ten workers starting at once
        // with four each put forty transactions before etcd's first answer.
        Self { size: Mutex::new(1.0), slow, quick, gauge }
    }

    /// Transactions that may be in flight now (1..=MAX).
    pub fn size(&self) -> usize {
        (*self.lock() as usize).clamp(1, MAX)
    }

    /// One transaction took `took`.
    pub fn record(&self, took: Duration) {
        let mut size = self.lock();
        if took > self.slow {
            *size = (*size / 2.0).max(1.0);
        } else if took < self.quick {
            *size = (*size + 1.0 / *size).min(MAX as f64);
        }
        metrics::gauge!(self.gauge).set(size.floor());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, f64> {
        self.size.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs `send` on each batch of `pending` (and on those `handle` queues
/// again), with as many in flight as `window` allows, in the order they come.
pub async fn in_window<B, R, E, Fut>(
    window: &WriteWindow,
    mut pending: VecDeque<B>,
    send: impl Fn(B) -> Fut,
    mut handle: impl FnMut(B, R, &mut VecDeque<B>) -> Result<(), E>,
) -> Result<(), E>
where
    Fut: Future<Output = (B, R)>,
{
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < window.size()
            && let Some(batch) = pending.pop_front()
        {
            let sent = send(batch);
            in_flight.push(async move {
                let started = Instant::now();
                let (batch, response) = sent.await;
                (batch, response, started.elapsed())
            });
        }
        let Some((batch, response, took)) = in_flight.next().await else { return Ok(()) };
        window.record(took);
        handle(batch, response, &mut pending)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_one_halves_on_slow_answers_and_grows_on_quick_ones() {
        let window = WriteWindow::new(crate::metrics::WRITE_WINDOW);
        assert_eq!(window.size(), 1, "one until etcd answered");
        window.record(Duration::from_millis(50));
        assert_eq!(window.size(), 2, "one quick answer at size one: one more");
        // At size two, about a window's worth of quick answers makes one more.
        window.record(Duration::from_millis(50));
        window.record(Duration::from_millis(50));
        assert_eq!(window.size(), 2);
        window.record(Duration::from_millis(50));
        assert_eq!(window.size(), 3);
        for _ in 0..20 {
            window.record(Duration::from_millis(50));
        }
        assert_eq!(window.size(), MAX, "never above MAX");
        window.record(Duration::from_millis(220));
        assert_eq!(window.size(), MAX, "between quick and slow: unchanged");
        window.record(Duration::from_secs(1));
        assert_eq!(window.size(), 2);
        window.record(Duration::from_secs(1));
        window.record(Duration::from_secs(1));
        assert_eq!(window.size(), 1, "never below one");
    }
}
