//! The job spec as stored under `jobs/<id>`, and the rules for ids and names.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::UnixMillis;
use crate::labels::Labels;
use crate::schedule::Schedule;

/// Longest job name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest job id.
pub const MAX_ID_LEN: usize = 63;
/// Largest serialised parameter set (secrets included), in bytes.
pub const MAX_PARAMS_BYTES: usize = 64 * 1024;
/// Longest interval between two runs.
pub const MAX_INTERVAL: Duration = Duration::from_secs(366 * 24 * 3600);

/// A job spec: what to ingest and how often. Written only by control.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub job_type: String,
    /// Parameters without secrets (those live under `secrets/<id>`).
    pub params: Map<String, Value>,
    /// Names of the secret parameters that hold a value (never the values).
    #[serde(default)]
    pub secret_names: Vec<String>,
    #[serde(with = "crate::duration_ms")]
    pub interval: Duration,
    pub paused: bool,
    /// Incremented by RunJobNow; the owner runs the job once per increment.
    #[serde(default)]
    pub run_now_seq: u64,
    /// Incremented by ResetJobCursor; the owner starts over from an empty
    /// cursor once per increment (also the way out of an unreadable
    /// checkpoint).
    #[serde(default)]
    pub cursor_reset_seq: u64,
    /// Labels an operator attached (`team=news`), for selecting jobs.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// A cron expression, a time zone and windows (empty: every interval,
    /// any time).
    #[serde(default, skip_serializing_if = "Schedule::is_empty")]
    pub schedule: Schedule,
    pub create_time: UnixMillis,
    pub update_time: UnixMillis,
}

/// Checks a job id: 1 to 63 lowercase letters, digits or '-', starting and
/// ending with a letter or digit (a DNS label).
pub fn validate_job_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".to_string());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!("at most {MAX_ID_LEN} characters allowed, got {}", id.len()));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if !id.chars().all(ok_char) || id.starts_with('-') || id.ends_with('-') {
        return Err("use lowercase letters, digits and '-' only, not at the start or end".to_string());
    }
    Ok(())
}

/// Checks a job name: 1 to 200 characters, no control characters.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("must not be empty".to_string());
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(format!("at most {MAX_NAME_CHARS} characters allowed, got {chars}"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_follow_dns_label_rules() {
        for good in ["a", "feed-1", "0190f8a2c3d47e8f9a0b1c2d3e4f5a6b", &"x".repeat(63)] {
            assert_eq!(validate_job_id(good), Ok(()), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a/b", "é", &"x".repeat(64)] {
            assert!(validate_job_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_bounded_and_printable() {
        assert_eq!(validate_name("Hacker News — top"), Ok(()));
        assert!(validate_name("").is_err());
        assert!(validate_name("   ").is_err());
        assert!(validate_name("a\nb").is_err());
        assert_eq!(validate_name(&"é".repeat(200)), Ok(()));
        let err = validate_name(&"é".repeat(201)).unwrap_err();
        assert!(err.contains("201"), "{err}");
    }
}
