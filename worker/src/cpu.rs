//! CPU-heavy work on user input (feed parsing, article extraction) runs here,
//! off the async runtime: on a thread of its own, at most one per core at a
//! time, with a deadline. A hostile page can then only fail its own job: the
//! runtime threads keep answering health checks and the API, and SIGTERM
//! still drains (the threads are detached, so a runaway one never holds the
//! process at exit). Inputs are bounded before they get here (`markup`), so
//! a thread past its deadline still ends soon after.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};

/// One permit per core: CPU work beyond that waits instead of crowding out
/// the runtime.
static CORES: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Arc::new(Semaphore::new(cores))
});

/// Why CPU work gave no result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CpuError {
    #[error("{what} took longer than {budget:?}; given up")]
    TimedOut { what: &'static str, budget: Duration },
    #[error("{what} failed unexpectedly (a bug: please report it with the input)")]
    Panicked { what: &'static str },
}

/// Runs `work` on its own thread and waits at most `budget` for it (time
/// spent waiting for a free core included).
pub async fn run<T, F>(what: &'static str, budget: Duration, work: F) -> Result<T, CpuError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let attempt = async {
        let permit = CORES.clone().acquire_owned().await.map_err(|_| CpuError::Panicked { what })?;
        let (tx, rx) = oneshot::channel();
        let spawned = std::thread::Builder::new().name("ingest-cpu".into()).spawn(move || {
            // Holds its core until the work ends, even past the deadline.
            let _permit = permit;
            let _ = tx.send(work());
        });
        if spawned.is_err() {
            return Err(CpuError::Panicked { what });
        }
        // A panic drops the sender.
        rx.await.map_err(|_| CpuError::Panicked { what })
    };
    tokio::time::timeout(budget, attempt).await.unwrap_or(Err(CpuError::TimedOut { what, budget }))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn work_runs_off_the_runtime_and_gives_up_at_its_deadline() {
        assert_eq!(run("adding", Duration::from_secs(5), || 2 + 2).await, Ok(4));
        // The runtime (one thread here) stays free while the work spins.
        let started = Instant::now();
        let ticker = tokio::spawn(async {
            let mut ticks = 0;
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                ticks += 1;
            }
            ticks
        });
        let slow = run("spinning", Duration::from_millis(300), || {
            let until = Instant::now() + Duration::from_millis(800);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        });
        let error = slow.await.expect_err("past its deadline");
        assert_eq!(error, CpuError::TimedOut { what: "spinning", budget: Duration::from_millis(300) });
        assert!(started.elapsed() < Duration::from_millis(700), "gave up at the deadline: {:?}", started.elapsed());
        assert_eq!(ticker.await.expect("ticker"), 10, "the runtime kept running");
        let panicked = run("panicking", Duration::from_secs(5), || -> u32 { panic!("boom") }).await;
        assert_eq!(panicked, Err(CpuError::Panicked { what: "panicking" }));
    }
}
