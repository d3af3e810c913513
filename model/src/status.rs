//! How a job's state is derived from its spec, its claim, its counters and
//! the live workers.

use crate::StatsRecord;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Schedulable, waiting for a worker to claim it.
    Pending,
    Running,
    Paused,
    /// No live worker supports the job's type.
    Unschedulable,
    /// Owned, but the last run failed.
    Failing,
}

/// The state of a job and a human-readable reason.
pub fn derive_state(
    job_type: &str,
    paused: bool,
    owner: Option<&str>,
    stats: Option<&StatsRecord>,
    type_has_live_worker: bool,
) -> (JobState, String) {
    if paused {
        return (JobState::Paused, "paused by a user".to_string());
    }
    if let Some(owner) = owner {
        if let Some(err) = stats.filter(|s| s.is_failing()).and_then(|s| s.last_error.as_ref()) {
            return (JobState::Failing, format!("last run on {owner} failed: {}", err.message));
        }
        return (JobState::Running, format!("owned by {owner}"));
    }
    if !type_has_live_worker {
        return (
            JobState::Unschedulable,
            format!("no live worker supports job type '{job_type}'; start a worker that does"),
        );
    }
    (JobState::Pending, "waiting for a worker to claim it".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorRecord;

    #[test]
    fn paused_wins_over_everything() {
        let (state, _) = derive_state("rss", true, Some("w1"), None, false);
        assert_eq!(state, JobState::Paused);
    }

    #[test]
    fn unowned_job_without_worker_is_unschedulable_and_says_why() {
        let (state, reason) = derive_state("rss", false, None, None, false);
        assert_eq!(state, JobState::Unschedulable);
        assert!(reason.contains("'rss'"), "{reason}");
        assert_eq!(derive_state("rss", false, None, None, true).0, JobState::Pending);
    }

    #[test]
    fn owned_job_fails_only_when_the_error_is_newer_than_the_success() {
        let mut stats = StatsRecord {
            last_success: Some(100),
            last_error: Some(ErrorRecord { time: 50, message: "boom".into() }),
            ..Default::default()
        };
        assert_eq!(derive_state("rss", false, Some("w1"), Some(&stats), true).0, JobState::Running);
        stats.last_error = Some(ErrorRecord { time: 150, message: "boom".into() });
        let (state, reason) = derive_state("rss", false, Some("w1"), Some(&stats), true);
        assert_eq!(state, JobState::Failing);
        assert!(reason.contains("boom"), "{reason}");
    }
}
