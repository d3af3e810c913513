//! The etcd members a store talks to, one client each, and which one to
//! ask. etcd-client's own balancing over several endpoints keeps a dead
//! member in its rotation (its lazy connections never report themselves
//! unready), so every third request failed while one of three members was
//! down. Here requests go to one preferred member; a member that gives no
//! answer is passed over for a while and the request goes to the next
//! member at once, so a dead member costs one retry, not a failed request.
//!
//! What is retried on the next member: any request that never reached a
//! member (connection refused, TLS failure, a request cancelled unsent as its
//! connection closed, "no leader" from a member cut off from the quorum); and reads, watches and lease calls whose answer was
//! lost. A transaction whose answer was lost is not sent again: it may have
//! been applied, and only its caller can tell (it re-reads and decides).

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client as etcd;
use tokio::sync::OnceCell;

use super::map_error;
use crate::StoreError;

/// How long a member that gave no answer is passed over.
const DOWN_FOR: Duration = Duration::from_secs(3);

/// Whether a request may be sent again after its answer was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retry {
    /// Reads, watches, lease keepalives: sending twice is harmless.
    Idempotent,
    /// Transactions and compaction: only when the first never arrived.
    IfNotSent,
}

struct Member {
    url: String,
    client: OnceCell<etcd::Client>,
    down_until: Mutex<Option<Instant>>,
}

pub(super) struct Members {
    members: Vec<Member>,
    preferred: AtomicUsize,
    options: etcd::ConnectOptions,
    /// Bound on creating a client (which authenticates when a user is set).
    connect_budget: Duration,
    request_timeout: Duration,
}

impl Members {
    pub(super) fn new(
        endpoints: &[String],
        options: etcd::ConnectOptions,
        connect_budget: Duration,
        request_timeout: Duration,
    ) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoint given".into()));
        }
        let members = endpoints
            .iter()
            .map(|url| Member { url: url.clone(), client: OnceCell::new(), down_until: Mutex::new(None) })
            .collect();
        Ok(Self { members, preferred: AtomicUsize::new(0), options, connect_budget, request_timeout })
    }

    /// Runs `request` on the preferred member, or on the next one when the
    /// first gives no answer and `retry` allows (at most one retry).
    pub(super) async fn call<T, F, Fut>(&self, what: &str, retry: Retry, request: F) -> Result<T, StoreError>
    where
        F: Fn(etcd::Client) -> Fut,
        Fut: Future<Output = Result<T, etcd::Error>>,
    {
        let order = self.order();
        let mut last = None;
        for (attempt, &index) in order.iter().take(2).enumerate() {
            let member = &self.members[index];
            let outcome = match self.client(member).await {
                Ok(client) => match tokio::time::timeout(self.request_timeout, request(client)).await {
                    Ok(Ok(value)) => {
                        member.mark_up();
                        self.preferred.store(index, Ordering::Relaxed);
                        return Ok(value);
                    }
                    Ok(Err(error)) => Failure::classify(error),
                    Err(_) => Failure::Lost(StoreError::Unavailable(format!(
                        "etcd {what} at {} timed out after {:?}",
                        member.url, self.request_timeout
                    ))),
                },
                // No client: nothing was sent.
                Err(error) => Failure::NotSent(error),
            };
            let (error, may_retry) = match outcome {
                Failure::Answer(error) => return Err(error),
                Failure::NotSent(error) => (error, true),
                Failure::Lost(error) => (error, retry == Retry::Idempotent),
            };
            member.mark_down();
            let more = attempt == 0 && order.len() > 1 && may_retry;
            if more {
                tracing::warn!(member = %member.url, %error, what, "etcd member gave no answer; asking the next");
            }
            last = Some(error);
            if !more {
                break;
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Unavailable("no etcd member to ask".into())))
    }

    /// Members to ask, best first: the preferred one if it is not passed
    /// over, the others in order, then those passed over (soonest back first).
    fn order(&self) -> Vec<usize> {
        let now = Instant::now();
        let count = self.members.len();
        let preferred = self.preferred.load(Ordering::Relaxed) % count;
        let mut order: Vec<(Option<Instant>, usize)> =
            (0..count).map(|i| (preferred + i) % count).map(|i| (self.members[i].down_until(now), i)).collect();
        // Up members (None) first, keeping their order; then by return time.
        order.sort_by_key(|(down, _)| *down);
        order.into_iter().map(|(_, i)| i).collect()
    }

    async fn client(&self, member: &Member) -> Result<etcd::Client, StoreError> {
        let client = member
            .client
            .get_or_try_init(|| async {
                let connect = etcd::Client::connect([member.url.as_str()], Some(self.options.clone()));
                match tokio::time::timeout(self.connect_budget, connect).await {
                    Ok(result) => result.map_err(map_error),
                    Err(_) => Err(StoreError::Unavailable(format!("connecting to etcd at {} timed out", member.url))),
                }
            })
            .await?;
        Ok(client.clone())
    }
}

impl Member {
    fn down_until(&self, now: Instant) -> Option<Instant> {
        let until = *self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        until.filter(|until| *until > now)
    }

    fn mark_down(&self) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + DOWN_FOR);
    }

    fn mark_up(&self) {
        let mut down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        if down.is_some() {
            *down = None;
        }
    }
}

/// What a failed attempt means for trying another member.
enum Failure {
    /// The member answered (e.g. "compacted", "lease not found"): final.
    Answer(StoreError),
    /// The request never reached a member that could apply it.
    NotSent(StoreError),
    /// The answer was lost: the request may or may not have been applied.
    Lost(StoreError),
}

impl Failure {
    fn classify(error: etcd::Error) -> Failure {
        let not_sent = match &error {
            etcd::Error::GRpcStatus(status) => {
                let mut source = std::error::Error::source(status);
                let mut connect = false;
                while let Some(cause) = source {
                    connect |= cause.is::<tonic::ConnectError>()
                        // hyper cancels a request it never sent when its
                        // connection closed first (the member just died).
                        || cause.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_canceled);
                    source = cause.source();
                }
                // A member cut off from the quorum refuses before doing anything.
                connect || status.message().contains("no leader")
            }
            etcd::Error::TransportError(_) => true,
            _ => false,
        };
        // The member is alive and says the cluster is too busy: its apply
        // lags its commits. Another member would forward the request to the
        // same leader, so it is not asked, and this one is not passed over
        // (when a lagging leader's renewals were, every request — claims
        // too — moved to followers, which forward writes: more work for the
        // busy leader, not less).
        let busy = matches!(&error, etcd::Error::GRpcStatus(status) if is_busy(status.message()));
        let mapped = map_error(error);
        if busy {
            Failure::Answer(mapped)
        } else if not_sent {
            Failure::NotSent(mapped)
        } else if matches!(mapped, StoreError::Unavailable(_)) {
            Failure::Lost(mapped)
        } else {
            Failure::Answer(mapped)
        }
    }
}

/// etcd's answers when its apply lags its commits (by a second of waiting,
/// or by 5 000 entries).
fn is_busy(message: &str) -> bool {
    message.contains("waiting for the applied index took too long") || message.contains("too many requests")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(status: tonic::Status) -> Failure {
        Failure::classify(etcd::Error::GRpcStatus(status))
    }

    #[test]
    fn a_busy_member_answered_and_a_lost_answer_did_not() {
        let busy = "etcdserver: request timed out, waiting for the applied index took too long";
        assert!(matches!(classify(tonic::Status::unavailable(busy)), Failure::Answer(StoreError::Unavailable(_))));
        let busy = "etcdserver: too many requests";
        assert!(matches!(classify(tonic::Status::unavailable(busy)), Failure::Answer(StoreError::Unavailable(_))));
        let lost = "etcdserver: request timed out";
        assert!(matches!(classify(tonic::Status::unavailable(lost)), Failure::Lost(_)));
        let no_leader = "etcdserver: no leader";
        assert!(matches!(classify(tonic::Status::unavailable(no_leader)), Failure::NotSent(_)));
    }
}
