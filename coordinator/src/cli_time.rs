//! Times and durations on the command line: `TIME` is RFC 3339
//! (`2026-12-01T09:00:00Z`, `2026-12-01T10:00:00+01:00`) or ms since the
//! Unix epoch; `DUR` is a humantime duration (`90s`, `1h 30m`, `500ms`).
//! Times are printed as RFC 3339 UTC, and for a cron schedule also in its
//! zone. Pure functions: the caller passes "now".

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_client::Error;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// ms since the Unix epoch now, by this machine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A `TIME` argument: RFC 3339, or ms since the Unix epoch (digits only).
/// `flag` names the option in the error.
pub fn parse_time(flag: &str, s: &str) -> Result<u64, Error> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|e| Error::InvalidArgument(format!("{flag} {s:?}: {e}")));
    }
    let t = DateTime::parse_from_rfc3339(s).map_err(|e| {
        Error::InvalidArgument(format!(
            "{flag} {s:?}: {e}; give RFC 3339 (e.g. 2026-12-01T09:00:00Z) or ms since the Unix epoch"
        ))
    })?;
    u64::try_from(t.timestamp_millis())
        .map_err(|_| Error::InvalidArgument(format!("{flag} {s:?} is before the Unix epoch")))
}

/// A `DUR` argument (humantime: `90s`, `1h 30m`, `250ms`).
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration, Error> {
    humantime::parse_duration(s.trim())
        .map_err(|e| Error::InvalidArgument(format!("{flag} {s:?}: {e}; give a duration such as 90s, 5m or 1h30m")))
}

/// A `DUR` argument in ms.
pub fn duration_ms(flag: &str, s: &str) -> Result<u64, Error> {
    let d = parse_duration(flag, s)?;
    u64::try_from(d.as_millis()).map_err(|_| Error::InvalidArgument(format!("{flag} {s:?} is too long")))
}

/// `job submit --at TIME` / `--in DUR` → `not_before_ms` (None: neither).
pub fn not_before(at: Option<&str>, within: Option<&str>, now_ms: u64) -> Result<Option<u64>, Error> {
    match (at, within) {
        (Some(_), Some(_)) => Err(Error::InvalidArgument("give --at or --in, not both".into())),
        (Some(t), None) => parse_time("--at", t).map(Some),
        (None, Some(d)) => Ok(Some(now_ms.saturating_add(duration_ms("--in", d)?))),
        (None, None) => Ok(None),
    }
}

/// RFC 3339 in UTC, to the second (to the ms when it has some).
pub fn rfc3339(ms: u64) -> String {
    match i64::try_from(ms).ok().and_then(|m| Utc.timestamp_millis_opt(m).single()) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => format!("{ms} ms"),
    }
}

/// RFC 3339 UTC, followed by the local time in `zone` when one is given
/// and it is not UTC: `2026-03-29T01:00:00Z (03:00:00+02:00 Europe/Berlin)`.
pub fn rfc3339_in(ms: u64, zone: &str) -> String {
    let utc = rfc3339(ms);
    if zone.is_empty() || zone == "UTC" {
        return utc;
    }
    let local = chrono_tz::Tz::from_str(zone)
        .ok()
        .and_then(|tz| i64::try_from(ms).ok().and_then(|m| tz.timestamp_millis_opt(m).single()))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%:z").to_string());
    match local {
        Some(l) => format!("{utc} ({l} {zone})"),
        None => utc,
    }
}

/// `in 3s` / `5m ago` relative to `now_ms`, for notes beside a time.
pub fn relative(ms: u64, now_ms: u64) -> String {
    if ms >= now_ms {
        format!("in {}", crate::cli_job::human_ms(ms - now_ms))
    } else {
        format!("{} ago", crate::cli_job::human_ms(now_ms - ms))
    }
}

#[cfg(test)]
#[path = "cli_time_tests.rs"]
mod tests;
