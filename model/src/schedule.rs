//! When a job runs, besides its interval: a cron expression in a time zone,
//! and windows of the day outside which no run starts.

use std::str::FromStr;

use chrono::{DateTime, Duration as Span, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};

use crate::{FieldViolation, UnixMillis};

/// The longest a schedule may wait for its next run before it counts as
/// never running (a cron time that never falls inside a window).
const HORIZON_DAYS: i64 = 400;
/// Cron times tried before giving up on finding one inside a window.
const MAX_CRON_STEPS: usize = 20_000;
pub const MAX_WINDOWS: usize = 24;

/// A job's schedule as stored; all parts optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Five fields (minute hour day-of-month month day-of-week) or a
    /// nickname (@hourly, @daily, …); when set, runs happen at these times
    /// instead of every interval.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cron: String,
    /// IANA name of the zone `cron` and `windows` are read in; UTC if empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_zone: String,
    /// Runs start only inside these daily windows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
}

/// A daily window, `HH:MM` to `HH:MM` (the end excluded; a window whose end
/// is before its start crosses midnight).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: String,
    pub end: String,
}

impl Schedule {
    pub fn is_empty(&self) -> bool {
        self.cron.trim().is_empty() && self.time_zone.trim().is_empty() && self.windows.is_empty()
    }
}

/// A checked schedule, ready to answer "when next".
#[derive(Clone, Debug)]
pub struct Compiled {
    cron: Option<Cron>,
    zone: Tz,
    /// (start, end) in seconds after midnight.
    windows: Vec<(u32, u32)>,
}

/// Checks a schedule; violations name `field.cron`, `field.time_zone`,
/// `field.windows[i].start`/`.end`, or `field` when the parts are fine but
/// the schedule never runs.
pub fn compile(schedule: &Schedule, field: &str) -> Result<Compiled, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let zone = match schedule.time_zone.trim() {
        "" => Some(Tz::UTC),
        name => match Tz::from_str(name) {
            Ok(zone) => Some(zone),
            Err(_) => {
                violations.push(FieldViolation::new(
                    format!("{field}.time_zone"),
                    format!("unknown time zone '{}': use an IANA name such as Europe/Paris or UTC", shown(name)),
                ));
                None
            }
        },
    };
    let cron = match schedule.cron.trim() {
        "" => None,
        text if text.len() > 256 => {
            violations.push(FieldViolation::new(format!("{field}.cron"), "at most 256 characters allowed"));
            None
        }
        text => match parse_cron(text) {
            Ok(cron) => Some(cron),
            Err(e) => {
                violations.push(FieldViolation::new(format!("{field}.cron"), e));
                None
            }
        },
    };
    if schedule.windows.len() > MAX_WINDOWS {
        violations.push(FieldViolation::new(format!("{field}.windows"), format!("at most {MAX_WINDOWS} windows")));
    }
    let mut windows = Vec::new();
    for (i, window) in schedule.windows.iter().enumerate().take(MAX_WINDOWS) {
        let time = |text: &str, part: &str, violations: &mut Vec<FieldViolation>| match parse_time(text) {
            Ok(seconds) => Some(seconds),
            Err(e) => {
                violations.push(FieldViolation::new(format!("{field}.windows[{i}].{part}"), e));
                None
            }
        };
        let (start, end) = (time(&window.start, "start", &mut violations), time(&window.end, "end", &mut violations));
        if let (Some(start), Some(end)) = (start, end) {
            if start == end {
                violations.push(FieldViolation::new(
                    format!("{field}.windows[{i}].end"),
                    "must differ from the start (for all day, give no window)",
                ));
            }
            windows.push((start, end));
        }
    }
    let Some(zone) = zone.filter(|_| violations.is_empty()) else {
        return Err(violations);
    };
    let compiled = Compiled { cron, zone, windows };
    if compiled.next(crate::now_millis(), true).is_none() {
        return Err(vec![FieldViolation::new(
            field,
            format!("never runs: no time of the cron expression falls inside a window within {HORIZON_DAYS} days"),
        )]);
    }
    Ok(compiled)
}

fn parse_cron(text: &str) -> Result<Cron, String> {
    let fields = text.split_whitespace().count();
    if !text.starts_with('@') && fields != 5 {
        return Err(format!(
            "give five fields (minute hour day-of-month month day-of-week, e.g. \"0 7 * * MON-FRI\") or @hourly, @daily, @weekly, @monthly; got {fields}"
        ));
    }
    Cron::from_str(text).map_err(|e| format!("not a cron expression: {e}"))
}

/// `HH:MM` as seconds after midnight.
fn parse_time(text: &str) -> Result<u32, String> {
    let time = NaiveTime::parse_from_str(text.trim(), "%H:%M")
        .map_err(|_| format!("'{}' is not a time of day: write HH:MM, e.g. 08:30", shown(text)))?;
    Ok(time.num_seconds_from_midnight())
}

fn shown(text: &str) -> String {
    text.chars().take(64).collect()
}

impl Compiled {
    pub fn has_cron(&self) -> bool {
        self.cron.is_some()
    }

    /// The first instant at or after `from` (strictly after, with a cron
    /// expression, when `after_cron_time` is set) at which a run may start:
    /// a cron time if there is an expression, inside a window if there are
    /// windows. `None` when there is none within the horizon.
    pub fn next(&self, from: UnixMillis, after_cron_time: bool) -> Option<UnixMillis> {
        let horizon = from.saturating_add(HORIZON_DAYS * 86_400_000);
        let mut at = self.zone.timestamp_millis_opt(from).single()?;
        match &self.cron {
            None => self.window_from(at).map(|t| t.timestamp_millis()),
            Some(cron) => {
                let mut inclusive = !after_cron_time;
                for _ in 0..MAX_CRON_STEPS {
                    // croner keeps the fraction of a second it started from.
                    let next = cron.find_next_occurrence(&at, inclusive).ok()?;
                    let next = next.with_nanosecond(0).unwrap_or(next);
                    if next.timestamp_millis() > horizon {
                        return None;
                    }
                    if self.inside(&next) {
                        return Some(next.timestamp_millis());
                    }
                    // Jump to the next window's start rather than walking
                    // every cron time in between.
                    at = self.window_from(next)?;
                    inclusive = true;
                }
                None
            }
        }
    }

    fn inside(&self, at: &DateTime<Tz>) -> bool {
        if self.windows.is_empty() {
            return true;
        }
        let s = at.num_seconds_from_midnight();
        self.windows.iter().any(|&(start, end)| if start < end { start <= s && s < end } else { s >= start || s < end })
    }

    /// `at` if it is inside a window, else the next window's start.
    fn window_from(&self, at: DateTime<Tz>) -> Option<DateTime<Tz>> {
        if self.inside(&at) {
            return Some(at);
        }
        let mut best: Option<DateTime<Tz>> = None;
        for day in 0..3 {
            let date = at.date_naive() + Span::days(day);
            for &(start, _) in &self.windows {
                let time = NaiveTime::from_num_seconds_from_midnight_opt(start, 0)?;
                // A start skipped by a daylight-saving change: an hour later.
                let local = self
                    .zone
                    .from_local_datetime(&date.and_time(time))
                    .earliest()
                    .or_else(|| self.zone.from_local_datetime(&(date.and_time(time) + Span::hours(1))).earliest());
                if let Some(candidate) = local.filter(|c| *c > at) {
                    best = Some(best.map_or(candidate, |b| b.min(candidate)));
                }
            }
            if best.is_some() {
                break;
            }
        }
        best
    }
}

/// The next `count` run times from `now`: cron times, or `now` and then one
/// every `interval` (without the jitter workers add), each moved into a
/// window. For the form's preview.
pub fn preview(compiled: &Compiled, interval: std::time::Duration, now: UnixMillis, count: usize) -> Vec<UnixMillis> {
    let mut times = Vec::with_capacity(count);
    let mut from = now;
    while times.len() < count {
        let Some(next) = compiled.next(from, !times.is_empty() || compiled.has_cron()) else { break };
        times.push(next);
        from = if compiled.has_cron() { next } else { next.saturating_add(interval.as_millis().max(1000) as i64) };
    }
    times
}

/// UTC milliseconds for a test's or a message's readable instant.
pub fn utc_millis(text: &str) -> Option<UnixMillis> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc).timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, zone: &str, windows: &[(&str, &str)]) -> Schedule {
        Schedule {
            cron: cron.into(),
            time_zone: zone.into(),
            windows: windows.iter().map(|(s, e)| Window { start: s.to_string(), end: e.to_string() }).collect(),
        }
    }

    fn at(text: &str) -> UnixMillis {
        utc_millis(text).expect("an RFC 3339 time")
    }

    fn next(s: &Schedule, from: &str) -> String {
        let compiled = compile(s, "job.schedule").expect("valid");
        let ms = compiled.next(at(from), true).expect("a next run");
        DateTime::<Utc>::from_timestamp_millis(ms).expect("time").to_rfc3339()
    }

    #[test]
    fn cron_times_are_read_in_the_time_zone() {
        let weekdays_7am_paris = schedule("0 7 * * MON-FRI", "Europe/Paris", &[]);
        // Friday 2026-11-27 08:00 UTC is 09:00 in Paris: next is Monday 07:00 Paris = 06:00 UTC.
        assert_eq!(next(&weekdays_7am_paris, "2026-11-27T08:00:00Z"), "2026-11-30T06:00:00+00:00");
        // Summer time: 07:00 Paris is 05:00 UTC.
        assert_eq!(next(&weekdays_7am_paris, "2026-07-01T04:00:00Z"), "2026-07-01T05:00:00+00:00");
        assert_eq!(next(&schedule("@hourly", "", &[]), "2026-01-01T10:15:00Z"), "2026-01-01T11:00:00+00:00");
        // On the minute, whatever fraction of a second it was asked from.
        assert_eq!(next(&schedule("@hourly", "", &[]), "2026-01-01T10:15:00.250Z"), "2026-01-01T11:00:00+00:00");
        // Strictly after a cron time when asked for the one after.
        assert_eq!(next(&schedule("*/15 * * * *", "", &[]), "2026-01-01T10:15:00Z"), "2026-01-01T10:30:00+00:00");
    }

    #[test]
    fn windows_hold_runs_back_until_they_open_and_may_cross_midnight() {
        let office = schedule("", "America/New_York", &[("09:00", "17:00")]);
        // 23:00 UTC = 18:00 New York (EST): the window opens at 09:00 EST = 14:00 UTC next day.
        assert_eq!(next(&office, "2026-12-01T23:00:00Z"), "2026-12-02T14:00:00+00:00");
        // Inside the window: at once.
        assert_eq!(next(&office, "2026-12-01T15:00:00Z"), "2026-12-01T15:00:00+00:00");
        let night = schedule("", "", &[("22:00", "06:00")]);
        assert_eq!(next(&night, "2026-12-01T03:00:00Z"), "2026-12-01T03:00:00+00:00");
        assert_eq!(next(&night, "2026-12-01T12:00:00Z"), "2026-12-01T22:00:00+00:00");
        // Cron and windows: every 20 minutes, only 09:00-10:00 UTC.
        let both = schedule("*/20 * * * *", "", &[("09:00", "10:00")]);
        assert_eq!(next(&both, "2026-12-01T09:50:00Z"), "2026-12-02T09:00:00+00:00");
    }

    #[test]
    fn bad_schedules_get_a_violation_per_part() {
        let fields = |s: &Schedule| -> Vec<String> {
            compile(s, "job.schedule").expect_err("invalid").into_iter().map(|v| v.field).collect()
        };
        assert_eq!(
            fields(&schedule("61 * * * *", "Mars/Olympus", &[])),
            ["job.schedule.time_zone", "job.schedule.cron"]
        );
        assert_eq!(fields(&schedule("* * * *", "", &[])), ["job.schedule.cron"]);
        assert_eq!(fields(&schedule("0 * * * * *", "", &[])), ["job.schedule.cron"], "no seconds field");
        assert_eq!(
            fields(&schedule("", "", &[("9am", "17:00"), ("10:00", "10:00"), ("08:00", "25:00")])),
            ["job.schedule.windows[0].start", "job.schedule.windows[1].end", "job.schedule.windows[2].end"]
        );
        // Every part fine, but no cron time inside the window.
        let never = schedule("0 3 * * *", "", &[("09:00", "17:00")]);
        let violations = compile(&never, "job.schedule").expect_err("never runs");
        assert_eq!(violations[0].field, "job.schedule");
        assert!(violations[0].description.contains("never runs"), "{violations:?}");
        // February 30th never comes.
        assert_eq!(fields(&schedule("0 0 30 2 *", "", &[])), ["job.schedule"]);
    }

    #[test]
    fn the_preview_lists_the_next_runs() {
        let compiled = compile(&schedule("", "", &[("09:00", "10:00")]), "s").expect("valid");
        let times = preview(&compiled, std::time::Duration::from_secs(1800), at("2026-12-01T08:00:00Z"), 3);
        let shown: Vec<String> =
            times.iter().map(|ms| DateTime::<Utc>::from_timestamp_millis(*ms).expect("t").to_rfc3339()).collect();
        assert_eq!(shown, ["2026-12-01T09:00:00+00:00", "2026-12-01T09:30:00+00:00", "2026-12-02T09:00:00+00:00"]);
    }
}
