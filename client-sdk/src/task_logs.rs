//! Reading task execution logs: `Client::task_logs` (every stored attempt of
//! a shard, page by page) and `Client::follow_task_logs` (new lines as they
//! are stored, until the shard finishes).
//!
//! Following is polling: workers send their lines about once a second, so a
//! server stream would save little, and polling keeps the server free of
//! per-reader state. [`LogFollower`] turns successive reads of the same
//! records into the lines not seen yet; it is pure.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::client::Channel;
use futures::Stream;

use crate::client::{Client, MAX_RESPONSE_BYTES};
use crate::error::Error;
use crate::proto;
use crate::proto::job_service_client::JobServiceClient;

/// How often [`Client::follow_task_logs`] reads: the workers' flush interval,
/// so a line is shown within about two seconds of being logged.
pub const LOG_FOLLOW_POLL: Duration = Duration::from_secs(1);

/// A shard's stored logs and its state when they were read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskLogs {
    /// One record per attempt that logged, in grant order (by token).
    pub logs: Vec<proto::TaskLog>,
    pub status: i32,
    pub attempts: u32,
}

/// What following a shard's logs yields.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEvent {
    /// A line of an attempt, in the order logged.
    Line { attempt: u32, token: u64, line: proto::LogLine },
    /// `count` lines of the attempt were not kept (pushed out of its ring,
    /// or refused at the job's bound) before the next line.
    Dropped { attempt: u32, token: u64, count: u64 },
}

/// Pure: remembers how many lines of each attempt were seen, and turns the
/// next read of the records into the new ones. A record counts every line
/// it was given as kept or dropped, so `dropped + lines` only grows; the
/// difference between two reads is the lines added meanwhile, the newest
/// of which are the last lines of the record (older ones may have been
/// pushed out, and are reported as dropped).
///
/// Once a job reaches its log bound, lines refused are counted in `dropped`
/// without new lines; a follower then shows some last lines again. The bound
/// is 64 MiB per job, far past what following is for.
#[derive(Debug, Default)]
pub struct LogFollower {
    /// token → lines counted so far. Tokens, not attempt numbers: those
    /// repeat after a retry.
    seen: BTreeMap<u64, u64>,
}

impl LogFollower {
    pub fn new() -> LogFollower {
        LogFollower::default()
    }

    /// The newest attempt's token seen: earlier attempts are frozen (their
    /// tokens are stale), so a later read can start here.
    pub fn last_token(&self) -> Option<u64> {
        self.seen.keys().next_back().copied()
    }

    pub fn update(&mut self, logs: &[proto::TaskLog]) -> Vec<LogEvent> {
        let mut out = Vec::new();
        for r in logs {
            let total = r.dropped + r.lines.len() as u64;
            let before = self.seen.get(&r.token).copied().unwrap_or(0);
            // A node behind the one read before shows fewer: nothing new.
            if total <= before {
                continue;
            }
            self.seen.insert(r.token, total);
            let new = total - before;
            let shown = new.min(r.lines.len() as u64);
            if new > shown {
                out.push(LogEvent::Dropped { attempt: r.attempt, token: r.token, count: new - shown });
            }
            let from = r.lines.len() - shown as usize;
            out.extend(r.lines[from..].iter().map(|l| LogEvent::Line {
                attempt: r.attempt,
                token: r.token,
                line: l.clone(),
            }));
        }
        out
    }
}

/// A final task status: nothing more will be logged.
pub fn is_final(status: i32) -> bool {
    matches!(
        proto::TaskStatus::try_from(status),
        Ok(proto::TaskStatus::Succeeded | proto::TaskStatus::Dead | proto::TaskStatus::Cancelled)
    )
}

impl Client {
    fn job_service(ch: Channel) -> JobServiceClient<Channel> {
        JobServiceClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// One page of a shard's logs, as the server returns it.
    pub async fn task_logs_page(&self, req: proto::GetTaskLogsRequest) -> Result<proto::GetTaskLogsResponse, Error> {
        self.retry(false, |ch| async move { Self::job_service(ch).get_task_logs(req).await }).await
    }

    /// Every stored attempt's log of one shard (or only `attempt`), following
    /// pages, with the shard's state as of the first page.
    pub async fn task_logs(&self, job_id: u64, shard: u32, attempt: Option<u32>) -> Result<TaskLogs, Error> {
        self.task_logs_from(job_id, shard, attempt, 0).await
    }

    /// Like [`Client::task_logs`], from the attempt of token `from` on.
    async fn task_logs_from(
        &self,
        job_id: u64,
        shard: u32,
        attempt: Option<u32>,
        mut from: u64,
    ) -> Result<TaskLogs, Error> {
        let mut out = TaskLogs::default();
        let mut first = true;
        loop {
            let req = proto::GetTaskLogsRequest { job_id, shard, attempt, from_token: from, ..Default::default() };
            let page = self.task_logs_page(req).await?;
            if first {
                (out.status, out.attempts, first) = (page.status, page.attempts, false);
            }
            out.logs.extend(page.logs);
            if page.next_token == 0 {
                return Ok(out);
            }
            // The server always advances; fail rather than spin.
            if page.next_token <= from {
                return Err(Error::Internal(format!(
                    "logs of job {job_id} shard {shard}: the page from token {from} did not advance"
                )));
            }
            from = page.next_token;
        }
    }

    /// The shard's logged lines (of one attempt, or of every attempt from the
    /// first), then each new line as it is stored, reading every
    /// [`LOG_FOLLOW_POLL`], until the shard has finished; the stream then
    /// ends. An error that retrying cannot fix ends it too.
    pub fn follow_task_logs(
        &self,
        job_id: u64,
        shard: u32,
        attempt: Option<u32>,
    ) -> impl Stream<Item = Result<LogEvent, Error>> + Send + 'static {
        struct St {
            client: Client,
            follower: LogFollower,
            ready: VecDeque<LogEvent>,
            done: bool,
            first: bool,
        }
        let st =
            St { client: self.clone(), follower: LogFollower::new(), ready: VecDeque::new(), done: false, first: true };
        futures::stream::unfold(st, move |mut st| async move {
            loop {
                if let Some(ev) = st.ready.pop_front() {
                    return Some((Ok(ev), st));
                }
                if st.done {
                    return None;
                }
                if !st.first {
                    tokio::time::sleep(LOG_FOLLOW_POLL).await;
                }
                st.first = false;
                // Earlier attempts are frozen once a later one has logged.
                let from = st.follower.last_token().unwrap_or(0);
                match st.client.task_logs_from(job_id, shard, attempt, from).await {
                    Ok(logs) => {
                        // The server reads the state before the lines: once
                        // it is final, every line sent before the report is in.
                        st.done = is_final(logs.status);
                        st.ready.extend(st.follower.update(&logs.logs));
                    }
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(attempt: u32, token: u64, dropped: u64, lines: &[&str]) -> proto::TaskLog {
        proto::TaskLog {
            attempt,
            token,
            dropped,
            lines: lines
                .iter()
                .map(|m| proto::LogLine { at_ms: 1, level: proto::LogLevel::Info as i32, message: m.to_string() })
                .collect(),
        }
    }

    fn shown(evs: &[LogEvent]) -> Vec<String> {
        evs.iter()
            .map(|e| match e {
                LogEvent::Line { attempt, line, .. } => format!("{attempt}:{}", line.message),
                LogEvent::Dropped { attempt, count, .. } => format!("{attempt}:dropped {count}"),
            })
            .collect()
    }

    #[test]
    fn a_follower_shows_each_line_once_and_says_what_it_missed() {
        let mut f = LogFollower::new();
        assert_eq!(shown(&f.update(&[rec(1, 10, 0, &["a", "b"])])), ["1:a", "1:b"]);
        assert_eq!(shown(&f.update(&[rec(1, 10, 0, &["a", "b"])])), Vec::<String>::new());
        assert_eq!(shown(&f.update(&[rec(1, 10, 0, &["a", "b", "c"])])), ["1:c"]);
        // The ring pushed out a, b, c and d; e and f are new, d was never seen.
        assert_eq!(shown(&f.update(&[rec(1, 10, 4, &["e", "f"])])), ["1:dropped 1", "1:e", "1:f"]);
        // A second attempt; the first is frozen.
        assert_eq!(shown(&f.update(&[rec(1, 10, 4, &["e", "f"]), rec(2, 20, 0, &["x"])])), ["2:x"]);
        assert_eq!(f.last_token(), Some(20));
        // A node behind shows fewer lines: nothing is repeated.
        assert_eq!(shown(&f.update(&[rec(2, 20, 0, &[])])), Vec::<String>::new());
        assert_eq!(shown(&f.update(&[rec(2, 20, 0, &["x", "y"])])), ["2:y"]);
    }

    #[test]
    fn a_first_read_of_a_record_that_dropped_lines_starts_with_the_marker() {
        let mut f = LogFollower::new();
        assert_eq!(shown(&f.update(&[rec(3, 30, 7, &["k"])])), ["3:dropped 7", "3:k"]);
        // The attempt number came back with a new token (a retried job): all
        // new, and the old attempt 3 is still known by its token.
        assert_eq!(shown(&f.update(&[rec(3, 30, 7, &["k"]), rec(3, 31, 0, &["z"])])), ["3:z"]);
        assert_eq!(shown(&f.update(&[rec(3, 30, 7, &["k"]), rec(3, 31, 0, &["z", "w"])])), ["3:w"]);
    }

    #[test]
    fn only_succeeded_dead_and_cancelled_are_final() {
        use proto::TaskStatus as T;
        for (s, fin) in [
            (T::Unspecified, false),
            (T::Pending, false),
            (T::Running, false),
            (T::Succeeded, true),
            (T::Dead, true),
            (T::Cancelled, true),
        ] {
            assert_eq!(is_final(s as i32), fin, "{s:?}");
        }
    }
}
