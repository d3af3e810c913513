//! Dates as feeds write them, which is not always as the RFCs say: RFC 3339
//! and W3C-DTF (also partial, `2024` or `2024-05-06`, and without a zone),
//! RFC 822/2822 (with or without the weekday, full or short names, one-digit
//! days, two-digit years, no seconds, named zones such as `EST` or `CEST`,
//! or no zone), and the US order `May 6, 2024 10:00 PM`. A date without a
//! zone is taken as UTC. Unreadable: `None` (the field is left out).

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if text.is_empty() || text.len() > 100 {
        return None;
    }
    if let Ok(date) = DateTime::parse_from_rfc3339(text) {
        return Some(date.with_timezone(&Utc));
    }
    if text.as_bytes()[0].is_ascii_digit()
        && text.as_bytes().get(4) != Some(&b' ')
        && let Some(date) = w3c(text)
    {
        return Some(date);
    }
    if let Ok(date) = DateTime::parse_from_rfc2822(text) {
        return Some(date.with_timezone(&Utc));
    }
    loose(text)
}

/// `YYYY[-MM[-DD[(T| )hh:mm[:ss[.fff]][zone]]]]`, zone `Z`, `±hh:mm`,
/// `±hhmm` or `±hh`.
fn w3c(text: &str) -> Option<DateTime<Utc>> {
    let (date, rest) = match text.find(['T', 't', ' ']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next().map_or(Some(1), |m| m.parse().ok())?;
    let day: u32 = parts.next().map_or(Some(1), |d| d.parse().ok())?;
    if parts.next().is_some() || !(1000..=9999).contains(&year) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    let Some(rest) = rest.map(str::trim).filter(|r| !r.is_empty()) else {
        return Some(Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN)));
    };
    let zone_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (time, zone) = rest.split_at(zone_at);
    let time = clock(time.trim())?;
    let offset = if zone.is_empty() { Some(0) } else { offset(zone.trim()) }?;
    at_offset(date.and_time(time), offset)
}

/// `hh:mm[:ss[.fff]]`.
fn clock(text: &str) -> Option<NaiveTime> {
    let mut parts = text.split(':');
    let hour: u32 = parts.next()?.trim().parse().ok()?;
    let minute: u32 = parts.next()?.trim().parse().ok()?;
    let (second, nanos) = match parts.next() {
        Some(s) => {
            let (whole, frac) = s.split_once(['.', ',']).unwrap_or((s, ""));
            let digits: String = frac.chars().take_while(char::is_ascii_digit).take(9).collect();
            let nanos = if digits.is_empty() { 0 } else { format!("{digits:0<9}").parse().ok()? };
            (whole.trim().parse::<u32>().ok()?, nanos)
        }
        None => (0, 0),
    };
    if parts.next().is_some() {
        return None;
    }
    // 24:00 is midnight at the end of the day; taken as 00:00 of it, as others do.
    NaiveTime::from_hms_nano_opt(hour % 24, minute, second.min(59), nanos)
}

/// Seconds east of UTC for `Z`, `±hh:mm`, `±hhmm`, `±hh` or a zone name.
fn offset(zone: &str) -> Option<i32> {
    let zone = zone.trim_matches(|c| c == '(' || c == ')');
    if zone.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    if let Some(sign) = zone.strip_prefix('+').map(|z| (1, z)).or_else(|| zone.strip_prefix('-').map(|z| (-1, z))) {
        let (sign, digits) = sign;
        let digits: String = digits.chars().filter(char::is_ascii_digit).collect();
        let (hours, minutes) = match digits.len() {
            1 | 2 => (digits.parse::<i32>().ok()?, 0),
            3 | 4 => (digits[..digits.len() - 2].parse::<i32>().ok()?, digits[digits.len() - 2..].parse::<i32>().ok()?),
            _ => return None,
        };
        if hours > 23 || minutes > 59 {
            return None;
        }
        return Some(sign * (hours * 3600 + minutes * 60));
    }
    named_zone(zone).map(|hours| (hours * 3600.0) as i32)
}

/// Offsets of the zone names feeds use (RFC 822's and the common others).
fn named_zone(name: &str) -> Option<f64> {
    let upper = name.to_ascii_uppercase();
    Some(match upper.as_str() {
        "UT" | "UTC" | "GMT" | "Z" | "WET" => 0.0,
        "BST" | "CET" | "MET" | "WAT" | "WEST" => 1.0,
        "IST" => 5.5,
        "CEST" | "MEST" | "EET" | "SAST" | "CAT" => 2.0,
        "EEST" | "MSK" | "EAT" => 3.0,
        "GST" => 4.0,
        "PKT" => 5.0,
        "ICT" | "WIB" => 7.0,
        "HKT" | "SGT" | "AWST" | "PHT" => 8.0,
        "JST" | "KST" => 9.0,
        "ACST" => 9.5,
        "AEST" => 10.0,
        "ACDT" => 10.5,
        "AEDT" => 11.0,
        "NZST" => 12.0,
        "NZDT" => 13.0,
        "EST" | "CDT" => -5.0,
        "EDT" => -4.0,
        "CST" | "MDT" => -6.0,
        "MST" | "PDT" => -7.0,
        "PST" | "AKDT" => -8.0,
        "AKST" => -9.0,
        "HST" => -10.0,
        "AST" => -4.0,
        "ADT" => -3.0,
        "NST" => -3.5,
        _ => return None,
    })
}

fn month(name: &str) -> Option<u32> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let at = months.iter().position(|m| lower.starts_with(m) && lower.len() <= 9)?;
    Some(at as u32 + 1)
}

fn is_weekday(word: &str) -> bool {
    let lower = word.trim_end_matches([',', '.']).to_ascii_lowercase();
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].iter().any(|d| lower.starts_with(d))
}

/// RFC 822-like dates however they come: words split on spaces, commas
/// and (for `06-May-2024`) dashes; a weekday is ignored, the month is a
/// name, the year the four-digit (or a trailing two-digit) number, the day
/// the other, the time has colons, a zone follows the time.
fn loose(text: &str) -> Option<DateTime<Utc>> {
    let words: Vec<&str> = text.split([' ', ',', '\t']).filter(|w| !w.is_empty()).collect();
    let (mut day, mut month_no, mut year, mut time, mut zone, mut pm) = (None, None, None, None, None, None);
    let mut numbers = Vec::new();
    for word in words {
        if is_weekday(word) && month(word).is_none() {
            continue;
        }
        if let Some(m) = month(word) {
            month_no = Some(m);
            continue;
        }
        // 06-May-2024
        if word.contains('-') && !word.starts_with(['+', '-']) && time.is_none() {
            let parts: Vec<&str> = word.split('-').collect();
            if parts.len() == 3 && month(parts[1]).is_some() {
                day = parts[0].parse().ok();
                month_no = month(parts[1]);
                year = parts[2].parse().ok();
                continue;
            }
        }
        if word.contains(':') && time.is_none() {
            time = clock(word.trim_end_matches(|c: char| c.is_ascii_alphabetic()));
            let lower = word.to_ascii_lowercase();
            if lower.ends_with("pm") || lower.ends_with("am") {
                pm = Some(lower.ends_with("pm"));
            }
            continue;
        }
        let lower = word.to_ascii_lowercase();
        if lower == "am" || lower == "pm" || lower == "a.m." || lower == "p.m." {
            pm = Some(lower.starts_with('p'));
            continue;
        }
        if time.is_some() && zone.is_none() && (word.starts_with(['+', '-']) || named_zone(word).is_some()) {
            zone = offset(word);
            continue;
        }
        if let Ok(n) = word.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<i32>() {
            numbers.push((n, word.len()));
            continue;
        }
        if time.is_some() && zone.is_none() {
            // An unknown zone name: give up rather than guess an hour wrong.
            return None;
        }
    }
    for (n, len) in numbers {
        if year.is_none() && (len == 4 || n > 31) {
            year = Some(n);
        } else if day.is_none() {
            day = Some(n as u32);
        } else if year.is_none() {
            year = Some(n);
        }
    }
    let year = year.map(|y| match y {
        0..=49 => y + 2000,
        50..=99 => y + 1900,
        _ => y,
    })?;
    let date = NaiveDate::from_ymd_opt(year, month_no?, day?)?;
    let mut time = time.unwrap_or(NaiveTime::MIN);
    if let Some(pm) = pm {
        use chrono::Timelike;
        let hour = time.hour() % 12 + if pm { 12 } else { 0 };
        time = time.with_hour(hour)?;
    }
    at_offset(date.and_time(time), zone.unwrap_or(0))
}

fn at_offset(local: NaiveDateTime, seconds_east: i32) -> Option<DateTime<Utc>> {
    let offset = FixedOffset::east_opt(seconds_east)?;
    offset.from_local_datetime(&local).single().map(|d| d.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> String {
        parse_date(text).map_or_else(|| "none".to_string(), |d| d.to_rfc3339())
    }

    #[test]
    fn the_dates_of_every_dialect_read_as_utc() {
        for (text, want) in [
            ("2024-05-06T10:20:30Z", "2024-05-06T10:20:30+00:00"),
            ("2024-05-06T10:20:30.123+02:00", "2024-05-06T08:20:30.123+00:00"),
            ("2024-05-06T10:20+0200", "2024-05-06T08:20:00+00:00"),
            ("2024-05-06T10:20:30", "2024-05-06T10:20:30+00:00"),
            ("2024-05-06 10:20:30 -05:00", "2024-05-06T15:20:30+00:00"),
            ("2024-05-06", "2024-05-06T00:00:00+00:00"),
            ("2024-05", "2024-05-01T00:00:00+00:00"),
            ("2024", "2024-01-01T00:00:00+00:00"),
            ("Mon, 06 May 2024 10:20:30 GMT", "2024-05-06T10:20:30+00:00"),
            ("Mon, 06 May 2024 10:20:30 +0200", "2024-05-06T08:20:30+00:00"),
            ("Mon, 6 May 2024 10:20:30 EST", "2024-05-06T15:20:30+00:00"),
            ("Mon, 06 May 2024 10:20:30 PDT", "2024-05-06T17:20:30+00:00"),
            ("Monday, 06 May 2024 10:20:30 CEST", "2024-05-06T08:20:30+00:00"),
            ("06 May 2024 10:20 +0000", "2024-05-06T10:20:00+00:00"),
            ("Mon, 06 May 24 10:20:30 UT", "2024-05-06T10:20:30+00:00"),
            ("Mon, 06 May 2024 10:20:30 UTC", "2024-05-06T10:20:30+00:00"),
            ("Mon, 06 May 2024 10:20:30", "2024-05-06T10:20:30+00:00"),
            ("Mon, 06 May 2024 10:20:30 Z", "2024-05-06T10:20:30+00:00"),
            ("06 May 2024", "2024-05-06T00:00:00+00:00"),
            ("May 6, 2024 10:20 PM", "2024-05-06T22:20:00+00:00"),
            ("May 6, 2024", "2024-05-06T00:00:00+00:00"),
            ("06-May-2024 10:20:30 +0100", "2024-05-06T09:20:30+00:00"),
            ("Mon, 06 May 2024 10:20:30 -0000", "2024-05-06T10:20:30+00:00"),
            ("Thu, 01 Jan 1970 00:00:00 GMT", "1970-01-01T00:00:00+00:00"),
        ] {
            assert_eq!(utc(text), want, "{text}");
        }
    }

    #[test]
    fn what_is_no_date_is_none() {
        for text in
            ["", "soon", "yesterday at noon", "2024-13-01", "32 May 2024", "Mon, 06 May 2024 10:20:30 XYZT", "12345"]
        {
            assert_eq!(utc(text), "none", "{text}");
        }
    }
}
