use super::*;

fn invalid(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected an invalid argument, got {other:?}"),
    }
}

#[test]
fn times_are_rfc3339_with_any_offset_or_epoch_ms() {
    assert_eq!(parse_time("--at", "2026-12-01T09:00:00Z").unwrap(), 1_796_115_600_000);
    assert_eq!(parse_time("--at", "2026-12-01T10:00:00+01:00").unwrap(), 1_796_115_600_000);
    assert_eq!(parse_time("--at", "2026-12-01T09:00:00.250Z").unwrap(), 1_796_115_600_250);
    assert_eq!(parse_time("--at", "1796115600000").unwrap(), 1_796_115_600_000);
    let m = invalid(parse_time("--start", "tomorrow"));
    assert!(m.starts_with("--start \"tomorrow\"") && m.contains("RFC 3339"), "{m}");
    assert!(invalid(parse_time("--at", "1969-12-31T23:59:59Z")).contains("before the Unix epoch"));
}

#[test]
fn durations_are_humantime() {
    assert_eq!(duration_ms("--every", "90s").unwrap(), 90_000);
    assert_eq!(duration_ms("--every", "1h 30m").unwrap(), 5_400_000);
    assert_eq!(duration_ms("--jitter", "250ms").unwrap(), 250);
    assert!(invalid(duration_ms("--every", "soon")).starts_with("--every \"soon\""));
}

#[test]
fn at_and_in_set_not_before_and_exclude_each_other() {
    let now = 1_000_000;
    assert_eq!(not_before(None, None, now).unwrap(), None);
    assert_eq!(not_before(None, Some("2s"), now).unwrap(), Some(1_002_000));
    assert_eq!(not_before(Some("1796115600000"), None, now).unwrap(), Some(1_796_115_600_000));
    assert!(invalid(not_before(Some("1"), Some("2s"), now)).contains("not both"));
}

#[test]
fn times_print_in_utc_and_in_the_schedules_zone() {
    assert_eq!(rfc3339(1_796_115_600_000), "2026-12-01T09:00:00Z");
    assert_eq!(rfc3339(1_796_115_600_250), "2026-12-01T09:00:00.250Z");
    assert_eq!(rfc3339_in(1_796_115_600_000, ""), "2026-12-01T09:00:00Z");
    assert_eq!(rfc3339_in(1_796_115_600_000, "UTC"), "2026-12-01T09:00:00Z");
    assert_eq!(
        rfc3339_in(1_796_115_600_000, "Europe/Berlin"),
        "2026-12-01T09:00:00Z (2026-12-01T10:00:00+01:00 Europe/Berlin)"
    );
    // Summer time: the offset follows the zone's rules.
    assert_eq!(
        rfc3339_in(1_783_242_000_000, "Europe/Berlin"),
        "2026-07-05T09:00:00Z (2026-07-05T11:00:00+02:00 Europe/Berlin)"
    );
    assert_eq!(relative(5_000, 2_000), "in 3s");
    assert_eq!(relative(2_000, 5_000), "3s ago");
}
