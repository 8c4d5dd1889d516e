//! `JobService.GetTaskLogs`: the stored task execution logs of one shard,
//! one record per attempt. Writes come from worker streams as `Logs`
//! messages (`workers.rs`); this is the read side. Following a running
//! attempt is polling this call (see the proto), so a reader holds nothing
//! on the server between calls.

use tonic::{Request, Response, Status};

use baton_client::proto;
use baton_client::proto::job_service_client::JobServiceClient;
use baton_raft_store::lifecycle::{LogLevel, LogRecord};
use baton_raft_store::{CommandError, TaskKey, TaskState};

use super::jobs::page_size;
use super::{Ctx, convert};
use crate::error::ApiError;

/// Most attempts in one GetTaskLogs page, and the default: an attempt keeps
/// at most 256 KiB of messages, so 16 of them fill the page's byte budget.
pub const LOGS_PAGE_MAX: usize = 16;
/// Most bytes of lines in one page (4 MiB, as a GetResults page), counted
/// as messages plus [`LINE_OVERHEAD_BYTES`] each; a page always holds its
/// first attempt, whatever its size.
pub const LOGS_PAGE_MAX_BYTES: usize = 4 * 1024 * 1024;
/// A line's encoding besides its message: time, level and framing.
const LINE_OVERHEAD_BYTES: usize = 24;

fn level(l: LogLevel) -> proto::LogLevel {
    match l {
        LogLevel::Trace => proto::LogLevel::Trace,
        LogLevel::Debug => proto::LogLevel::Debug,
        LogLevel::Info => proto::LogLevel::Info,
        LogLevel::Warn => proto::LogLevel::Warn,
        LogLevel::Error => proto::LogLevel::Error,
    }
}

fn task_status(s: &TaskState) -> proto::TaskStatus {
    match s {
        TaskState::Pending { .. } => proto::TaskStatus::Pending,
        TaskState::Assigned { .. } => proto::TaskStatus::Running,
        TaskState::Succeeded { .. } => proto::TaskStatus::Succeeded,
        TaskState::Dead => proto::TaskStatus::Dead,
        TaskState::Cancelled => proto::TaskStatus::Cancelled,
    }
}

fn record_bytes(r: &LogRecord) -> usize {
    r.chunks.iter().map(|c| c.message_bytes() + c.len() as usize * LINE_OVERHEAD_BYTES).sum()
}

fn task_log(r: LogRecord) -> proto::TaskLog {
    proto::TaskLog {
        attempt: r.attempt,
        token: r.token,
        dropped: r.dropped,
        lines: r
            .to_lines()
            .into_iter()
            .map(|l| proto::LogLine { at_ms: l.at_ms, level: level(l.level) as i32, message: l.message })
            .collect(),
    }
}

/// Cut the records read (in token order, one more than `limit` when there
/// are more) to a page: at most `limit` attempts and [`LOGS_PAGE_MAX_BYTES`],
/// at least one. Returns the page and the token the next page starts at.
fn page(records: Vec<LogRecord>, limit: usize) -> (Vec<proto::TaskLog>, u64) {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut next = 0;
    for r in records {
        let b = record_bytes(&r);
        if out.len() == limit || (!out.is_empty() && bytes + b > LOGS_PAGE_MAX_BYTES) {
            next = r.token;
            break;
        }
        bytes += b;
        out.push(task_log(r));
    }
    (out, next)
}

pub(super) async fn get_task_logs(
    ctx: &Ctx,
    req: Request<proto::GetTaskLogsRequest>,
) -> Result<Response<proto::GetTaskLogsResponse>, Status> {
    let r = req.get_ref();
    let stale = convert::stale(r.consistency)?;
    let limit = page_size("limit", r.limit, LOGS_PAGE_MAX, LOGS_PAGE_MAX)?;
    if r.attempt == Some(0) {
        return Err(ApiError::invalid("attempt", "attempts are numbered from 1").into());
    }
    forward_if_not_here!(ctx, ctx.read_route(&req, stale).await?, req, JobServiceClient::get_task_logs, read);
    let r = req.into_inner();
    let key = TaskKey::new(r.job_id, r.shard);
    let job = ctx
        .reader
        .job(r.job_id)
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::from(CommandError::JobNotFound(r.job_id)))?;
    if r.shard >= job.shards {
        return Err(ApiError::from(CommandError::TaskNotFound(key)).into());
    }
    // The state before the lines: a reader that sees it final has every line
    // sent before or with the report, which was stored first or with it.
    let task =
        ctx.reader.task(key).map_err(ApiError::from)?.ok_or_else(|| ApiError::from(CommandError::TaskNotFound(key)))?;
    // A task's records are few (one per attempt that logged), so filtering
    // by attempt number reads the others and skips them.
    let records = ctx
        .reader
        .task_logs(key, r.from_token, limit + 1, |rec| r.attempt.is_none_or(|a| rec.attempt == a))
        .map_err(ApiError::from)?;
    let (logs, next_token) = page(records, limit);
    Ok(Response::new(proto::GetTaskLogsResponse {
        logs,
        next_token,
        status: task_status(&task.state) as i32,
        attempts: task.attempts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_raft_store::lifecycle::LogChunk;

    fn rec(attempt: u32, lines: usize, len: usize) -> LogRecord {
        let mut r = LogRecord { token: 100 + u64::from(attempt), attempt, ..LogRecord::default() };
        let msg = "m".repeat(len);
        // Chunks as the SDK flushes them; the record's ring is not in play.
        for part in (0..lines).collect::<Vec<_>>().chunks(256) {
            let mut c = LogChunk::default();
            for _ in part {
                c.push(1, LogLevel::Info, &msg).unwrap();
            }
            r.bytes += c.cost();
            r.chunks.push_back(c);
        }
        r
    }

    #[test]
    fn a_page_stops_at_its_attempt_limit_and_names_the_next() {
        let (p, next) = page((1..=4).map(|a| rec(a, 2, 10)).collect(), 3);
        assert_eq!(p.iter().map(|t| t.attempt).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(next, 104);
        let (p, next) = page((1..=3).map(|a| rec(a, 2, 10)).collect(), 3);
        assert_eq!((p.len(), next), (3, 0));
        assert_eq!(p[1].token, 102);
        assert_eq!(p[1].lines.len(), 2);
        assert_eq!(p[1].lines[0].level, proto::LogLevel::Info as i32);
    }

    #[test]
    fn a_page_stops_at_its_byte_budget_but_always_holds_one_attempt() {
        // Each attempt holds about 1.5 MiB: two fit 4 MiB, three do not.
        let big = |a| rec(a, 1536, 1024);
        let (p, next) = page((1..=4).map(big).collect(), LOGS_PAGE_MAX);
        assert_eq!((p.len(), next), (2, 103));
        let huge = rec(1, 5000, 1024);
        let (p, next) = page(vec![huge, rec(2, 1, 1)], LOGS_PAGE_MAX);
        assert_eq!((p.len(), next), (1, 102));
    }
}
