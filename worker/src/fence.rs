//! The lease fence of a runner: whether the claim it runs under may still
//! act. Checked on the monotonic clock (which keeps running while the
//! process is stopped, e.g. by SIGSTOP or a frozen VM) right before every
//! outbound request, and raced first against everything a runner does — a
//! process woken after its lease expired sends nothing more for the jobs it
//! held, even before its timers have fired.

use std::future::Future;
use std::task::Poll;

use ingest_store::LeaseId;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::membership::LeaseState;

#[derive(Clone, Debug)]
pub struct Fence {
    lease: LeaseId,
    lease_rx: watch::Receiver<Option<LeaseState>>,
}

impl Fence {
    /// The fence of work done under `lease`, as `lease_rx` tracks it.
    pub fn new(lease: LeaseId, lease_rx: watch::Receiver<Option<LeaseState>>) -> Self {
        Self { lease, lease_rx }
    }

    /// A fence that always holds: for work outside any claim (tests, tools).
    pub fn unbounded() -> Self {
        let far = Instant::now() + std::time::Duration::from_secs(100 * 365 * 24 * 3600);
        let (_tx, lease_rx) = watch::channel(Some(LeaseState::until(0, far)));
        Self { lease: 0, lease_rx }
    }

    /// True while the lease is the worker's current one and its local
    /// deadline has not passed. Reads the clock now: no timer involved.
    pub fn holds(&self) -> bool {
        self.lease_rx.borrow().is_some_and(|s| s.lease == self.lease && Instant::now() < s.deadline)
    }

    /// Ready when polled after the fence stopped holding: raced first
    /// (`biased`) against everything a runner does, so a task woken for any
    /// reason past the deadline does nothing more (a woken process runs ready
    /// tasks before the timer driver has noticed the deadline). It sets no
    /// timer and follows no renewals itself: an idle runner costs no wake-up
    /// per keepalive (10 000 of them did); one timer per lease cancels every
    /// runner when the deadline passes (`scheduler::guard_deadline`), which
    /// wakes them to find this broken.
    pub fn broken(&self) -> impl Future<Output = ()> + Send + 'static {
        let fence = self.clone();
        std::future::poll_fn(move |_| if fence.holds() { Poll::Pending } else { Poll::Ready(()) })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn poll_once(future: std::pin::Pin<&mut (impl Future<Output = ()> + ?Sized)>) -> bool {
        future.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready()
    }

    #[tokio::test]
    async fn holds_until_the_deadline_and_follows_renewals() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let (tx, rx) = watch::channel(Some(LeaseState::until(7, start + ms(300))));
        let fence = Fence::new(7, rx.clone());
        assert!(fence.holds());
        assert!(!Fence::new(8, rx).holds(), "another lease's fence");
        let mut broken = std::pin::pin!(fence.broken());
        assert!(!poll_once(broken.as_mut()), "holds before the deadline");
        tokio::time::sleep_until(start + ms(100)).await;
        tx.send_replace(Some(LeaseState::until(7, start + ms(700))));
        tokio::time::sleep_until(start + ms(450)).await;
        assert!(fence.holds() && !poll_once(broken.as_mut()), "renewed to 700 ms");
        tokio::time::sleep_until(start + ms(750)).await;
        assert!(!fence.holds() && poll_once(broken.as_mut()), "broken past the renewed deadline");
        tx.send_replace(Some(LeaseState::until(9, start + ms(5000))));
        assert!(!Fence::new(7, tx.subscribe()).holds(), "a new lease does not revive the old one's fence");
        assert!(Fence::unbounded().holds());
    }

    /// The clock is read on every check: a deadline in the past breaks the
    /// fence before any timer runs (as after a SIGSTOP).
    #[test]
    fn a_passed_deadline_breaks_without_a_timer() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let (_tx, rx) = watch::channel(Some(LeaseState::until(1, runtime.block_on(async { Instant::now() }))));
        let fence = Fence::new(1, rx);
        assert!(!fence.holds());
        let mut broken = std::pin::pin!(fence.broken());
        assert!(runtime.block_on(async { poll_once(broken.as_mut()) }), "ready on its first poll");
    }
}
