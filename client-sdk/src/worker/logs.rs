//! Task execution logs, the handler's side: [`TaskContext::log`] and its
//! level shortcuts, and the per-attempt buffer they write to.
//!
//! A handler's lines go into its attempt's [`LogSink`]: a bounded buffer
//! behind a mutex that is held only to push or take, so logging never waits
//! for the network or the worker's loop. The session core
//! (`session.rs`) decides when the buffer is collected and sent as a
//! `Logs` message: every [`LOG_FLUSH_INTERVAL_MS`], at once when the buffer
//! reaches [`LOG_FLUSH_LINES`] or [`LOG_FLUSH_BYTES`], and always before the
//! attempt's Complete or Fail. A buffer that is not collected in time (the
//! cluster is unreachable, or the handler logs faster than it can be sent)
//! drops its oldest lines and counts them; the count reaches the cluster as
//! a marker line.

use std::collections::VecDeque;
use std::fmt::{Display, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::TaskContext;
use super::session::AttemptKey;
use crate::proto;

/// How often a running attempt's lines are sent (1 s): the delay before a
/// follower (`baton job logs --follow`) sees a line, against one small Raft
/// command per second per logging attempt.
pub const LOG_FLUSH_INTERVAL_MS: u64 = 1_000;
/// Lines in an attempt's buffer that make it flush at once, without waiting
/// for the interval: a chatty handler's lines leave in batches of this size.
pub const LOG_FLUSH_LINES: usize = 128;
/// Bytes of messages in an attempt's buffer that make it flush at once.
pub const LOG_FLUSH_BYTES: usize = 32 * 1024;
/// Most bytes of messages an attempt's last lines may have to ride in its
/// Complete or Fail (the cluster's `MAX_REPORT_LOG_BYTES`, 32 KiB); more go
/// ahead of the report as a `Logs` message. The line count always fits.
pub const REPORT_LOG_BYTES_MAX: usize = 32 * 1024;
/// Most lines an attempt's buffer holds; past it the oldest are dropped and
/// counted. One collected buffer is one `Logs` message, which carries at
/// most 256 lines (`MAX_LOG_LINES_PER_COMMAND` on the cluster).
pub const LOG_BUFFER_MAX_LINES: usize = 256;
/// Most bytes of messages an attempt's buffer holds (128 KiB); past it the
/// oldest lines are dropped and counted. A worker holds at most this much
/// per attempt it runs, plus [`LOG_UNACKED_BYTES_MAX`] in flight.
pub const LOG_BUFFER_MAX_BYTES: usize = 128 * 1024;
/// Longest line kept (the cluster's `MAX_LOG_LINE_BYTES`); longer ones are
/// cut at a character boundary and end with [`TRUNCATED_MARKER`].
pub const MAX_LOG_LINE_BYTES: usize = 4096;
/// Room a line is formatted into at first (128 bytes): most lines fit, and
/// a longer one grows from there.
const LINE_CAPACITY_BYTES: usize = 128;
/// Ends a line that was cut to [`MAX_LOG_LINE_BYTES`].
pub const TRUNCATED_MARKER: &str = " …[truncated]";
/// Bytes of log messages sent and not yet acknowledged, over every attempt
/// (16 MiB). Past it the core stops collecting buffers (they fill and drop
/// their oldest lines) until acknowledgements come back, so a worker cut off
/// from the cluster holds bounded memory.
pub const LOG_UNACKED_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Severity of a task log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn to_proto(self) -> proto::LogLevel {
        match self {
            LogLevel::Trace => proto::LogLevel::Trace,
            LogLevel::Debug => proto::LogLevel::Debug,
            LogLevel::Info => proto::LogLevel::Info,
            LogLevel::Warn => proto::LogLevel::Warn,
            LogLevel::Error => proto::LogLevel::Error,
        }
    }

    pub fn from_tracing(level: &tracing::Level) -> LogLevel {
        match *level {
            tracing::Level::TRACE => LogLevel::Trace,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::ERROR => LogLevel::Error,
        }
    }
}

/// `message` cut to [`MAX_LOG_LINE_BYTES`] at a character boundary, ending
/// with [`TRUNCATED_MARKER`] when it was cut.
pub fn truncate_line(mut message: String) -> String {
    if message.len() <= MAX_LOG_LINE_BYTES {
        return message;
    }
    let mut end = MAX_LOG_LINE_BYTES - TRUNCATED_MARKER.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(TRUNCATED_MARKER);
    message
}

/// The line that stands for `n` lines the worker dropped.
pub fn dropped_marker(n: u64, at_ms: u64) -> proto::LogLine {
    proto::LogLine {
        at_ms,
        level: proto::LogLevel::Warn as i32,
        message: format!("[baton] {n} older lines dropped: the worker's log buffer was full"),
    }
}

/// A line's header in a [`proto::LogChunk`]: time (8 bytes), level (1),
/// message length (2).
const CHUNK_LINE_HEADER_BYTES: usize = 11;

/// The level byte a chunk stores: proto's level less one (trace is 0); an
/// unspecified or unknown level is info.
fn chunk_level(level: i32) -> u8 {
    match proto::LogLevel::try_from(level) {
        Ok(proto::LogLevel::Trace) => 0,
        Ok(proto::LogLevel::Debug) => 1,
        Ok(proto::LogLevel::Warn) => 3,
        Ok(proto::LogLevel::Error) => 4,
        Ok(proto::LogLevel::Info | proto::LogLevel::Unspecified) | Err(_) => 2,
    }
}

/// `lines` as the cluster stores them ([`proto::LogChunk`]): encoded once,
/// here, and LZ4-compressed when that makes them smaller. The cluster keeps
/// the bytes as they come, so every byte saved here is saved in the Raft
/// log, in replication and on each replica's disk. `None` for no lines.
pub fn encode_chunk(lines: &[proto::LogLine]) -> Option<proto::LogChunk> {
    if lines.is_empty() {
        return None;
    }
    let raw_len: usize = lines.iter().map(|l| CHUNK_LINE_HEADER_BYTES + l.message.len()).sum();
    let mut raw = Vec::with_capacity(raw_len);
    for l in lines {
        let len = u16::try_from(l.message.len()).expect("lines are cut to MAX_LOG_LINE_BYTES");
        raw.extend_from_slice(&l.at_ms.to_le_bytes());
        raw.push(chunk_level(l.level));
        raw.extend_from_slice(&len.to_le_bytes());
        raw.extend_from_slice(l.message.as_bytes());
    }
    let raw_size = u32::try_from(raw.len()).expect("a chunk is far below 4 GiB");
    let mut lz4 = vec![0; 4 + lz4_flex::block::get_maximum_output_size(raw.len())];
    lz4[..4].copy_from_slice(&raw_size.to_le_bytes());
    let n = lz4_flex::block::compress_into(&raw, &mut lz4[4..]).expect("sized by get_maximum_output_size");
    lz4.truncate(4 + n);
    let (data, encoding) =
        if lz4.len() < raw.len() { (lz4, proto::LogEncoding::Lz4) } else { (raw, proto::LogEncoding::Raw) };
    let count = u32::try_from(lines.len()).expect("a buffer holds at most LOG_BUFFER_MAX_LINES lines");
    Some(proto::LogChunk { lines: count, data, encoding: encoding as i32 })
}

/// The lines of a chunk [`encode_chunk`] made (tests read what was sent).
#[cfg(test)]
pub(crate) fn decode_chunk(c: &proto::LogChunk) -> Vec<proto::LogLine> {
    let raw = match proto::LogEncoding::try_from(c.encoding).unwrap() {
        proto::LogEncoding::Raw => c.data.clone(),
        proto::LogEncoding::Lz4 => {
            let size = u32::from_le_bytes(c.data[..4].try_into().unwrap()) as usize;
            lz4_flex::block::decompress(&c.data[4..], size).unwrap()
        }
    };
    let mut out = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let at_ms = u64::from_le_bytes(raw[at..at + 8].try_into().unwrap());
        let level = i32::from(raw[at + 8]) + 1;
        let len = usize::from(u16::from_le_bytes([raw[at + 9], raw[at + 10]]));
        let message = String::from_utf8(raw[at + 11..at + 11 + len].to_vec()).unwrap();
        out.push(proto::LogLine { at_ms, level, message });
        at += CHUNK_LINE_HEADER_BYTES + len;
    }
    assert_eq!(out.len(), c.lines as usize, "{c:?}");
    out
}

/// Lines taken from a buffer, with how many it dropped since the last take.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogBatch {
    pub lines: Vec<proto::LogLine>,
    pub dropped: u64,
}

impl LogBatch {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.dropped == 0
    }

    /// Bytes of messages.
    pub fn bytes(&self) -> usize {
        self.lines.iter().map(|l| l.message.len()).sum()
    }

    /// The lines to send: a marker first when lines were dropped (they were
    /// older than every line kept).
    pub fn into_lines(self) -> Vec<proto::LogLine> {
        if self.dropped == 0 {
            return self.lines;
        }
        let at_ms = self.lines.first().map_or(0, |l| l.at_ms);
        let mut out = Vec::with_capacity(self.lines.len() + 1);
        out.push(dropped_marker(self.dropped, at_ms));
        out.extend(self.lines);
        out
    }
}

/// Lines an attempt's buffer makes room for at its first line.
const LINES_RESERVED: usize = 16;

/// One attempt's unsent lines: a ring bounded by [`LOG_BUFFER_MAX_LINES`]
/// and [`LOG_BUFFER_MAX_BYTES`]. Pure.
#[derive(Debug, Default)]
pub struct LogBuffer {
    lines: VecDeque<proto::LogLine>,
    bytes: usize,
    dropped: u64,
}

impl LogBuffer {
    /// Add a line (already truncated), dropping the oldest to stay within
    /// bounds. Returns true when the buffer has reached its flush bound.
    pub fn push(&mut self, line: proto::LogLine) -> bool {
        debug_assert!(line.message.len() <= MAX_LOG_LINE_BYTES);
        if self.lines.capacity() == 0 {
            // One allocation for a typical attempt's lines, not one per doubling.
            self.lines.reserve(LINES_RESERVED);
        }
        self.bytes += line.message.len();
        self.lines.push_back(line);
        loop {
            // Once lines were dropped, keep room for the marker that says
            // so: a take always fits one message.
            let marker = usize::from(self.dropped > 0);
            if self.lines.len() + marker <= LOG_BUFFER_MAX_LINES && self.bytes <= LOG_BUFFER_MAX_BYTES {
                break;
            }
            let old = self.lines.pop_front().expect("over a bound implies a line");
            self.bytes -= old.message.len();
            self.dropped += 1;
        }
        self.lines.len() >= LOG_FLUSH_LINES || self.bytes >= LOG_FLUSH_BYTES
    }

    /// Everything buffered, and the count of lines dropped since the last take.
    pub fn take(&mut self) -> LogBatch {
        let batch = LogBatch { lines: self.lines.drain(..).collect(), dropped: self.dropped };
        self.bytes = 0;
        self.dropped = 0;
        batch
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[derive(Debug, Default)]
struct SinkState {
    buf: LogBuffer,
    /// The loop was told the buffer reached its flush bound and has not
    /// collected it yet: one wake-up per fill.
    woken: bool,
    /// The attempt ended: its last lines were taken with its report, later
    /// ones (from tasks it spawned) are discarded.
    closed: bool,
}

/// An attempt's log buffer, shared by its handler (which pushes) and the
/// worker's loop (which takes). Never blocks the handler beyond a short lock.
#[derive(Clone)]
pub(crate) struct LogSink {
    key: AttemptKey,
    state: Arc<Mutex<SinkState>>,
    wake: mpsc::Sender<AttemptKey>,
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl LogSink {
    pub(crate) fn new(key: AttemptKey, wake: mpsc::Sender<AttemptKey>) -> LogSink {
        LogSink { key, state: Arc::default(), wake }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn log(&self, level: LogLevel, message: String) {
        let line = proto::LogLine { at_ms: wall_ms(), level: level.to_proto() as i32, message: truncate_line(message) };
        let mut s = self.lock();
        if s.closed {
            return;
        }
        if s.buf.push(line) && !s.woken {
            // A full wake queue only delays the flush to the next interval;
            // the next line tries again.
            s.woken = self.wake.try_send(self.key).is_ok();
        }
    }

    /// What the buffer holds now.
    pub(crate) fn take(&self) -> LogBatch {
        let mut s = self.lock();
        s.woken = false;
        s.buf.take()
    }

    /// The attempt ended: take its last lines and discard any later ones.
    pub(crate) fn close(&self) -> LogBatch {
        let mut s = self.lock();
        s.closed = true;
        s.buf.take()
    }
}

impl TaskContext {
    /// Log a line to this attempt's task log, stored by the cluster with the
    /// attempt and read with `baton job logs` or [`crate::Client::task_logs`].
    /// Never blocks: lines are buffered and sent about once a second and
    /// before the attempt's result. A line over [`MAX_LOG_LINE_BYTES`] is cut
    /// and marked; when the buffer is full the oldest lines are dropped, and
    /// a marker line says how many.
    pub fn log(&self, level: LogLevel, message: impl Display) {
        // Sized for a typical line up front: formatting into an empty String
        // reallocated as the text grew, several times per line, and those
        // allocations were most of what a line cost the worker.
        let mut line = String::with_capacity(LINE_CAPACITY_BYTES);
        let _ = write!(line, "{message}");
        self.logs.log(level, line);
    }

    pub fn trace(&self, message: impl Display) {
        self.log(LogLevel::Trace, message);
    }

    pub fn debug(&self, message: impl Display) {
        self.log(LogLevel::Debug, message);
    }

    pub fn info(&self, message: impl Display) {
        self.log(LogLevel::Info, message);
    }

    pub fn warn(&self, message: impl Display) {
        self.log(LogLevel::Warn, message);
    }

    pub fn error(&self, message: impl Display) {
        self.log(LogLevel::Error, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize, len: usize) -> proto::LogLine {
        proto::LogLine { at_ms: i as u64, level: proto::LogLevel::Info as i32, message: "x".repeat(len) }
    }

    #[test]
    fn a_long_line_is_cut_at_a_character_boundary_and_marked() {
        assert_eq!(truncate_line("short".into()), "short");
        let exact = "a".repeat(MAX_LOG_LINE_BYTES);
        assert_eq!(truncate_line(exact.clone()), exact);
        // 'é' is two bytes: the cut must not split one.
        let long = "é".repeat(MAX_LOG_LINE_BYTES);
        let cut = truncate_line(long);
        assert!(cut.len() <= MAX_LOG_LINE_BYTES, "{}", cut.len());
        assert!(cut.ends_with(TRUNCATED_MARKER));
        assert!(cut.trim_end_matches(TRUNCATED_MARKER).chars().all(|c| c == 'é'));
        assert!(cut.len() > MAX_LOG_LINE_BYTES - TRUNCATED_MARKER.len() - 2);
    }

    #[test]
    fn the_buffer_asks_for_a_flush_at_its_bound() {
        let mut b = LogBuffer::default();
        for i in 0..LOG_FLUSH_LINES - 1 {
            assert!(!b.push(line(i, 10)), "line {i}");
        }
        assert!(b.push(line(LOG_FLUSH_LINES, 10)));
        let batch = b.take();
        assert_eq!((batch.lines.len(), batch.dropped), (LOG_FLUSH_LINES, 0));
        assert!(b.is_empty());
        // By bytes: a few long lines.
        let per = MAX_LOG_LINE_BYTES;
        let n = LOG_FLUSH_BYTES / per;
        for i in 0..n - 1 {
            assert!(!b.push(line(i, per)));
        }
        assert!(b.push(line(n, per)));
    }

    #[test]
    fn a_full_buffer_drops_its_oldest_lines_and_counts_them() {
        let mut b = LogBuffer::default();
        let n = LOG_BUFFER_MAX_LINES + 500;
        for i in 0..n {
            b.push(line(i, 1));
        }
        let batch = b.take();
        // Room is kept for the marker: the batch is one message.
        assert_eq!(batch.lines.len() as u64 + batch.dropped, n as u64);
        assert_eq!(batch.lines.len(), LOG_BUFFER_MAX_LINES - 1);
        assert_eq!(batch.lines.last().unwrap().at_ms, (n - 1) as u64, "the newest line is kept");
        let lines = batch.into_lines();
        assert_eq!(lines.len(), LOG_BUFFER_MAX_LINES);
        assert!(lines[0].message.contains(&format!("{} older lines dropped", n - (LOG_BUFFER_MAX_LINES - 1))));
        assert_eq!(lines[0].level, proto::LogLevel::Warn as i32);
        // Bytes bound.
        for i in 0..(LOG_BUFFER_MAX_BYTES / MAX_LOG_LINE_BYTES) * 2 {
            b.push(line(i, MAX_LOG_LINE_BYTES));
        }
        let batch = b.take();
        assert!(batch.bytes() <= LOG_BUFFER_MAX_BYTES);
        assert_eq!(batch.dropped as usize + batch.lines.len(), (LOG_BUFFER_MAX_BYTES / MAX_LOG_LINE_BYTES) * 2);
        // The count starts again after a take.
        b.push(line(0, 1));
        assert_eq!(b.take().dropped, 0);
    }

    #[tokio::test]
    async fn the_sink_wakes_the_loop_once_per_fill_and_discards_lines_after_close() {
        let (tx, mut rx) = mpsc::channel(4);
        let key = AttemptKey { job: 1, shard: 2, token: 3 };
        let sink = LogSink::new(key, tx);
        for i in 0..LOG_FLUSH_LINES * 2 {
            sink.log(LogLevel::Info, format!("line {i}"));
        }
        assert_eq!(rx.try_recv().ok(), Some(key));
        assert!(rx.try_recv().is_err(), "one wake-up until the buffer is taken");
        assert_eq!(sink.take().lines.len(), LOG_FLUSH_LINES * 2);
        for i in 0..LOG_FLUSH_LINES {
            sink.log(LogLevel::Info, format!("line {i}"));
        }
        assert_eq!(rx.try_recv().ok(), Some(key), "taken, so the next fill wakes again");
        sink.log(LogLevel::Warn, "last".into());
        let last = sink.close();
        assert_eq!(last.lines.len(), LOG_FLUSH_LINES + 1);
        sink.log(LogLevel::Info, "after the report".into());
        assert!(sink.take().is_empty());
    }
}
