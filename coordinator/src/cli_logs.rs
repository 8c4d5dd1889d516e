//! `baton job logs ID [--shard N] [--attempt K] [--follow]`: a shard's task
//! execution logs, one line per logged line (time, level, attempt, message),
//! with a marker where lines were dropped; `--json` prints JSON (one object
//! per event when following).

use baton_client::task_logs::LogEvent;
use baton_client::{Client, Error, proto};
use clap::Args;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::cli::{Global, print_json};

#[derive(Args)]
pub struct LogsArgs {
    pub id: u64,
    /// Only this shard. Without it: every shard, in order (a one-shard
    /// job's only shard when following).
    #[arg(long)]
    pub shard: Option<u32>,
    /// Only this attempt (1-based).
    #[arg(long)]
    pub attempt: Option<u32>,
    /// Print new lines as they are stored, until the shard finishes.
    #[arg(long)]
    pub follow: bool,
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
pub fn format_time(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{milli:03}")
}

fn level_name(v: i32) -> &'static str {
    match proto::LogLevel::try_from(v) {
        Ok(proto::LogLevel::Trace) => "TRACE",
        Ok(proto::LogLevel::Debug) => "DEBUG",
        Ok(proto::LogLevel::Info) => "INFO",
        Ok(proto::LogLevel::Warn) => "WARN",
        Ok(proto::LogLevel::Error) => "ERROR",
        _ => "?",
    }
}

/// Where a line came from, when more than one shard is printed.
fn origin(shard: Option<u32>, attempt: u32) -> String {
    match shard {
        Some(s) => format!("shard {s} attempt {attempt}"),
        None => format!("attempt {attempt}"),
    }
}

/// One event as the human output prints it.
pub fn format_event(shard: Option<u32>, ev: &LogEvent) -> String {
    match ev {
        LogEvent::Line { attempt, line, .. } => format!(
            "{}  {:<5}  {}  {}",
            format_time(line.at_ms),
            level_name(line.level),
            origin(shard, *attempt),
            line.message
        ),
        LogEvent::Dropped { attempt, count, .. } => {
            format!("{:<23}  {:<5}  {}  … {count} lines dropped", "", "", origin(shard, *attempt))
        }
    }
}

/// One event as `--json --follow` prints it (one object per line).
pub fn event_json(shard: u32, ev: &LogEvent) -> Value {
    match ev {
        LogEvent::Line { attempt, token, line } => json!({
            "shard": shard, "attempt": attempt, "token": token, "at_ms": line.at_ms,
            "level": level_name(line.level).to_lowercase(), "message": line.message,
        }),
        LogEvent::Dropped { attempt, token, count } => {
            json!({"shard": shard, "attempt": attempt, "token": token, "dropped": count})
        }
    }
}

fn record_json(shard: u32, r: &proto::TaskLog) -> Value {
    json!({
        "shard": shard, "attempt": r.attempt, "token": r.token, "dropped": r.dropped,
        "lines": r.lines.iter().map(|l| json!({
            "at_ms": l.at_ms, "level": level_name(l.level).to_lowercase(), "message": l.message,
        })).collect::<Vec<_>>(),
    })
}

/// The events a stored record stands for, as a follower would print them.
fn record_events(r: &proto::TaskLog) -> Vec<LogEvent> {
    baton_client::task_logs::LogFollower::new().update(std::slice::from_ref(r))
}

pub async fn logs(g: &Global, a: LogsArgs) -> Result<(), Error> {
    let client = g.client()?;
    if a.attempt == Some(0) {
        return Err(Error::InvalidArgument("attempts are numbered from 1".into()));
    }
    let shards: Vec<u32> = match a.shard {
        Some(s) => vec![s],
        None => {
            let job = client.get(a.id).await?;
            if a.follow && job.shards > 1 {
                return Err(Error::InvalidArgument(format!(
                    "job {} has {} shards; pick one to follow with --shard",
                    a.id, job.shards
                )));
            }
            (0..job.shards).collect()
        }
    };
    if a.follow {
        return follow(g, &client, a.id, shards[0], a.attempt).await;
    }
    let many = shards.len() > 1;
    let mut records = Vec::new();
    for shard in shards {
        let logs = client.task_logs(a.id, shard, a.attempt).await?;
        if g.json {
            records.extend(logs.logs.iter().map(|r| record_json(shard, r)));
            continue;
        }
        for r in &logs.logs {
            for ev in record_events(r) {
                println!("{}", format_event(many.then_some(shard), &ev));
            }
        }
    }
    if g.json {
        print_json(&json!({"job_id": a.id, "logs": records}));
    }
    Ok(())
}

async fn follow(g: &Global, client: &Client, id: u64, shard: u32, attempt: Option<u32>) -> Result<(), Error> {
    let mut events = Box::pin(client.follow_task_logs(id, shard, attempt));
    while let Some(ev) = events.next().await {
        let ev = ev?;
        if g.json {
            println!("{}", event_json(shard, &ev));
        } else {
            println!("{}", format_event(None, &ev));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(format_time(1_798_502_577_123), "2026-12-29 00:02:57.123");
        assert_eq!(format_time(4_102_444_799_999), "2099-12-31 23:59:59.999");
    }

    #[test]
    fn a_line_shows_time_level_attempt_and_message_and_a_gap_says_how_many() {
        let line = proto::LogLine { at_ms: 1_000, level: proto::LogLevel::Warn as i32, message: "disk slow".into() };
        let ev = LogEvent::Line { attempt: 2, token: 9, line };
        assert_eq!(format_event(None, &ev), "1970-01-01 00:00:01.000  WARN   attempt 2  disk slow");
        assert_eq!(format_event(Some(4), &ev), "1970-01-01 00:00:01.000  WARN   shard 4 attempt 2  disk slow");
        let gap = format_event(None, &LogEvent::Dropped { attempt: 1, token: 9, count: 12 });
        assert!(gap.ends_with("attempt 1  … 12 lines dropped"), "{gap}");
        assert_eq!(event_json(0, &LogEvent::Dropped { attempt: 1, token: 9, count: 12 })["dropped"], 12);
    }
}
