//! The control store's timestamps (`2025-01-31T12:00:00.123456Z`, RFC 3339 in UTC, as
//! `MigrationStatus` carries them) as `SystemTime`, so that they can be set against the load's
//! own clock: both run on this machine.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z`; `None` for anything else.
pub fn parse_utc(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock_parts = clock.splitn(3, ':');
    let hour: u64 = clock_parts.next()?.parse().ok()?;
    let minute: u64 = clock_parts.next()?.parse().ok()?;
    let second: u64 = clock_parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let nanos = fraction_nanos(fraction)?;
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::new(seconds, nanos))
}

/// `"123456"` (microseconds) as nanoseconds; digits past the ninth are ignored.
fn fraction_nanos(fraction: &str) -> Option<u32> {
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = fraction.chars().take(9).collect();
    let padded = format!("{digits:0<9}");
    padded.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_control_store_format() {
        let t = parse_utc("2024-03-01T00:00:01.250000Z").unwrap();
        let since = t.duration_since(UNIX_EPOCH).unwrap();
        // 2024-03-01 is day 19783 since the epoch.
        assert_eq!(since.as_secs(), 19_783 * 86_400 + 1);
        assert_eq!(since.subsec_millis(), 250);
        assert_eq!(
            parse_utc("1970-01-01T00:00:00Z"),
            Some(UNIX_EPOCH),
            "no fraction"
        );
    }

    #[test]
    fn refuses_other_text() {
        for bad in [
            "",
            "2024-03-01",
            "2024-03-01T00:00:00",
            "2024-13-01T00:00:00Z",
            "2024-03-01T00:00:00.x1Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad:?}");
        }
    }
}
