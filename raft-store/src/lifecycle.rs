//! Records of the lifecycle features: namespace settings (pause, retention,
//! idempotency window), task execution logs, and the garbage collector's
//! queue and progress.
//! Pure data and pure rules; the apply handlers live in `core_lifecycle.rs`
//! and `core_gc.rs`.

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, SessionId, TaskKey, Token, WorkflowId};
use crate::limits::{
    LOG_LINE_OVERHEAD_BYTES, MAX_LOG_BYTES_PER_ATTEMPT, MAX_LOG_LINE_BYTES, MAX_LOG_LINES_PER_COMMAND,
};

/// Per-namespace settings, stored under [`crate::keys::namespace`] and kept
/// in memory ([`crate::Indexes::namespaces`]). A namespace without a record
/// has the defaults: not paused, the default retention and idempotency window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// No new attempt of this namespace's jobs is granted while set; running
    /// attempts continue.
    pub paused: bool,
    /// How long a finished job (or workflow) of this namespace is kept, when
    /// the job does not set its own. `None`: [`crate::limits::RETENTION_MS_DEFAULT`].
    pub retention_ms: Option<u64>,
    /// How long an idempotency key (job or workflow submit, event id) of
    /// this namespace is remembered, fixed on each record when it is written.
    /// `None`: [`crate::limits::IDEMPOTENCY_WINDOW_MS_DEFAULT`].
    pub idempotency_window_ms: Option<u64>,
    /// Quotas (see [`crate::quota`]); unlimited by default.
    pub quota: crate::quota::NamespaceQuota,
}

/// Severity of a log line, as the SDK's logger and `tracing` bridge map it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum LogLevel {
    Trace = 0,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The level a chunk stores as this byte (`level as u8`), if any.
    pub fn from_u8(b: u8) -> Option<LogLevel> {
        Some(match b {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One line a handler logged, decoded (reads only). `at_ms` is the worker's
/// clock: shown to users, never used for a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub at_ms: u64,
    pub level: LogLevel,
    pub message: String,
}

/// A line's header inside a [`LogChunk`]: time (8 bytes), level (1), message
/// length (2; a message is at most [`MAX_LOG_LINE_BYTES`]).
const CHUNK_LINE_HEADER_BYTES: usize = 11;

/// Most bytes a chunk's lines take uncompressed: every line at its longest.
/// Also the most its `data` may take compressed (a worker sends a chunk
/// that does not shrink as it is), and the bound a compressed chunk's
/// stated size is checked against before anything is allocated for it.
pub const MAX_CHUNK_RAW_BYTES: usize = MAX_LOG_LINES_PER_COMMAND * (CHUNK_LINE_HEADER_BYTES + MAX_LOG_LINE_BYTES);

/// Bytes before an LZ4 chunk's block: the lines' size uncompressed (u32 LE).
const LZ4_SIZE_PREFIX_BYTES: usize = 4;

/// Largest decompression buffer a thread keeps between chunks (64 KiB): a
/// typical flush fits many times over, and a thread that met a rare
/// near-MiB chunk gives that memory back.
const SCRATCH_KEEP_BYTES: usize = 64 * 1024;

thread_local! {
    /// Where LZ4 chunks are decompressed, reused across calls.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How a chunk's `data` holds its lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkEncoding {
    /// The lines as they are (see [`LogChunk`]).
    #[default]
    Raw,
    /// The raw lines' size (u32 LE), then the lines as one LZ4 block.
    Lz4,
}

/// The lines of one flush, encoded once by the worker and kept as that one
/// buffer from there on: Raft, replication, apply and the attempt's record
/// copy it; only a read (`GetTaskLogs`) or a cut at a bound decodes it.
/// Encoding every line as its own structure cost more CPU on each node than
/// the task's own commands, and carrying the lines uncompressed cost a third
/// of the task throughput of handlers that log ten lines and do nothing else
/// (docs/benchmarks.md, "Task logs").
///
/// Raw layout, per line: `at_ms` u64 LE, level u8, message length u16 LE,
/// the message (UTF-8). [`LogChunk::validate`] checks it all (decompressing
/// first, within [`MAX_CHUNK_RAW_BYTES`]), so a chunk that passed it (every
/// command's does, in apply) always decodes. apply() never compresses: a
/// chunk it cuts is kept raw, so replicas agree byte for byte whatever LZ4
/// build they run.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    lines: u32,
    encoding: ChunkEncoding,
    data: serde_bytes::ByteBuf,
}

impl std::fmt::Debug for LogChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogChunk({} lines, {} bytes, {:?})", self.lines, self.data.len(), self.encoding)
    }
}

/// Why a chunk or a line for it is refused; the caller names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("more than {max} lines", max = MAX_LOG_LINES_PER_COMMAND)]
    TooManyLines,
    #[error("line {index} has {len} bytes, more than the {max}-byte limit", max = MAX_LOG_LINE_BYTES)]
    LineTooLong { index: usize, len: usize },
    #[error("malformed at byte {0}")]
    Malformed(usize),
    #[error("{0} bytes, more than the {max}-byte limit of a chunk", max = MAX_CHUNK_RAW_BYTES)]
    TooLarge(usize),
    #[error("lz4 data does not decompress to its stated {0} bytes")]
    BadCompression(usize),
}

impl LogChunk {
    /// A chunk as it travels: a line count, how the lines are held, and
    /// their bytes; checked only by [`LogChunk::validate`].
    pub fn from_parts(lines: u32, encoding: ChunkEncoding, data: Vec<u8>) -> LogChunk {
        LogChunk { lines, encoding, data: serde_bytes::ByteBuf::from(data) }
    }

    /// Lines in the chunk.
    pub fn len(&self) -> u32 {
        self.lines
    }

    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    pub fn encoding(&self) -> ChunkEncoding {
        self.encoding
    }

    /// Bytes the chunk takes as stored (compressed, if it is).
    pub fn stored_bytes(&self) -> usize {
        self.data.len()
    }

    /// Bytes of the raw lines: for an LZ4 chunk, the size it states (which
    /// [`LogChunk::validate`] checked against its block).
    fn raw_len(&self) -> usize {
        match self.encoding {
            ChunkEncoding::Raw => self.data.len(),
            ChunkEncoding::Lz4 => {
                self.data.first_chunk::<LZ4_SIZE_PREFIX_BYTES>().map_or(0, |p| u32::from_le_bytes(*p) as usize)
            }
        }
    }

    /// Bytes of messages (the raw encoding without its line headers).
    pub fn message_bytes(&self) -> usize {
        let raw = self.raw_len();
        debug_assert!(raw >= self.lines as usize * CHUNK_LINE_HEADER_BYTES, "{self:?} was not validated");
        raw - self.lines as usize * CHUNK_LINE_HEADER_BYTES
    }

    /// What the chunk is charged against the attempt's and the job's log
    /// bounds: its messages plus [`LOG_LINE_OVERHEAD_BYTES`] per line,
    /// however it is compressed.
    pub fn cost(&self) -> u64 {
        self.message_bytes() as u64 + u64::from(self.lines) * LOG_LINE_OVERHEAD_BYTES
    }

    /// Append a line to a raw chunk, refusing one past
    /// [`MAX_LOG_LINES_PER_COMMAND`] or longer than [`MAX_LOG_LINE_BYTES`];
    /// a refused line changes nothing.
    pub fn push(&mut self, at_ms: u64, level: LogLevel, message: &str) -> Result<(), ChunkError> {
        debug_assert_eq!(self.encoding, ChunkEncoding::Raw, "push onto a compressed chunk");
        if self.lines as usize >= MAX_LOG_LINES_PER_COMMAND {
            return Err(ChunkError::TooManyLines);
        }
        if message.len() > MAX_LOG_LINE_BYTES {
            return Err(ChunkError::LineTooLong { index: self.lines as usize, len: message.len() });
        }
        let len = u16::try_from(message.len()).expect("MAX_LOG_LINE_BYTES fits u16");
        self.data.reserve(CHUNK_LINE_HEADER_BYTES + message.len());
        self.data.extend_from_slice(&at_ms.to_le_bytes());
        self.data.push(level as u8);
        self.data.extend_from_slice(&len.to_le_bytes());
        self.data.extend_from_slice(message.as_bytes());
        self.lines += 1;
        Ok(())
    }

    /// A raw chunk of `lines`, or why one of them does not fit.
    pub fn of_lines<'a>(lines: impl IntoIterator<Item = &'a LogLine>) -> Result<LogChunk, ChunkError> {
        let mut c = LogChunk::default();
        for l in lines {
            c.push(l.at_ms, l.level, &l.message)?;
        }
        Ok(c)
    }

    /// This chunk LZ4-compressed, or as it is when that would not make it
    /// smaller. Only workers (and tests) compress; apply() never does.
    pub fn compressed(self) -> LogChunk {
        if self.encoding != ChunkEncoding::Raw || self.data.is_empty() {
            return self;
        }
        let raw_len = u32::try_from(self.data.len()).expect("a chunk is far below 4 GiB");
        let mut data = Vec::with_capacity(LZ4_SIZE_PREFIX_BYTES + self.data.len() / 2);
        data.extend_from_slice(&raw_len.to_le_bytes());
        data.extend_from_slice(&lz4_flex::block::compress(&self.data));
        if data.len() >= self.data.len() {
            return self;
        }
        LogChunk { lines: self.lines, encoding: ChunkEncoding::Lz4, data: serde_bytes::ByteBuf::from(data) }
    }

    /// `f` of the raw lines: borrowed, or decompressed within
    /// [`MAX_CHUNK_RAW_BYTES`] into this thread's scratch buffer (the stated
    /// size is checked before anything is allocated, so a small chunk cannot
    /// claim a huge one). Every node decompresses every chunk once, to
    /// validate it; a buffer per call was a third of what that cost. `f` must
    /// not decode another chunk.
    fn with_raw<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, ChunkError> {
        if self.data.len() > MAX_CHUNK_RAW_BYTES {
            return Err(ChunkError::TooLarge(self.data.len()));
        }
        match self.encoding {
            ChunkEncoding::Raw => Ok(f(&self.data)),
            ChunkEncoding::Lz4 => {
                let Some((size, block)) = self.data.split_first_chunk::<LZ4_SIZE_PREFIX_BYTES>() else {
                    return Err(ChunkError::Malformed(0));
                };
                let size = u32::from_le_bytes(*size) as usize;
                if size > MAX_CHUNK_RAW_BYTES {
                    return Err(ChunkError::TooLarge(size));
                }
                SCRATCH.with_borrow_mut(|scratch| {
                    scratch.clear();
                    scratch.resize(size, 0);
                    let out = match lz4_flex::block::decompress_into(block, scratch) {
                        Ok(n) if n == size => Ok(f(scratch)),
                        _ => Err(ChunkError::BadCompression(size)),
                    };
                    if scratch.capacity() > SCRATCH_KEEP_BYTES {
                        *scratch = Vec::new();
                    }
                    out
                })
            }
        }
    }

    /// Check the chunk: within the size bounds, decompressing to its stated
    /// size, the line count matching, every header whole, every level
    /// known, every message within bounds and UTF-8, and nothing trailing.
    pub fn validate(&self) -> Result<(), ChunkError> {
        if self.lines as usize > MAX_LOG_LINES_PER_COMMAND {
            return Err(ChunkError::TooManyLines);
        }
        self.with_raw(|raw| {
            let mut it = ChunkIter { data: raw, at: 0, index: 0 };
            for _ in 0..self.lines {
                match it.next() {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Err(ChunkError::Malformed(it.at)),
                }
            }
            if it.at != raw.len() {
                return Err(ChunkError::Malformed(it.at));
            }
            Ok(())
        })?
    }

    /// The lines, oldest first. A chunk that fails [`LogChunk::validate`]
    /// yields the lines before the fault (apply never stores such a chunk).
    pub fn to_lines(&self) -> Vec<LogLine> {
        self.with_lines(|lines| lines.iter().map(LogLineRef::to_owned).collect())
    }

    /// `f` of the decoded lines, oldest first (see [`LogChunk::to_lines`]).
    pub fn with_lines<R>(&self, f: impl FnOnce(&[LogLineRef<'_>]) -> R) -> R {
        let mut f = Some(f);
        let decoded = self.with_raw(|raw| {
            let lines: Vec<LogLineRef<'_>> = ChunkIter { data: raw, at: 0, index: 0 }
                .map_while(|r| {
                    debug_assert!(r.is_ok(), "a stored log chunk does not decode: {r:?}");
                    r.ok()
                })
                .collect();
            f.take().expect("called once")(&lines)
        });
        match decoded {
            Ok(r) => r,
            Err(e) => {
                debug_assert!(false, "a stored log chunk does not decode: {e}");
                f.take().expect("not called")(&[])
            }
        }
    }

    /// The newest lines whose cost is at most `max_cost`, and how many
    /// older lines were left out, as a raw chunk. Only for a chunk larger
    /// than an attempt's whole ring, so it may decode and encode again.
    pub fn newest_within(&self, max_cost: u64) -> (LogChunk, u64) {
        self.with_lines(|all| {
            let keep = lines_within(all.iter().rev(), max_cost);
            (Self::of_refs(&all[all.len() - keep..]), (all.len() - keep) as u64)
        })
    }

    /// The oldest lines whose cost is at most `max_cost`, and how many
    /// newer lines were left out, as a raw chunk. Only for the flush that
    /// reaches a job's log bound, so it may decode and encode again.
    pub fn oldest_within(&self, max_cost: u64) -> (LogChunk, u64) {
        self.with_lines(|all| {
            let keep = lines_within(all.iter(), max_cost);
            (Self::of_refs(&all[..keep]), (all.len() - keep) as u64)
        })
    }

    fn of_refs(lines: &[LogLineRef<'_>]) -> LogChunk {
        let mut out = LogChunk::default();
        for l in lines {
            out.push(l.at_ms, l.level, l.message).expect("lines of a valid chunk fit a chunk");
        }
        out
    }
}

/// How many of `lines`, in order, fit `max_cost`.
fn lines_within<'a, 'b: 'a>(lines: impl Iterator<Item = &'a LogLineRef<'b>>, max_cost: u64) -> usize {
    let mut cost = 0u64;
    let mut n = 0;
    for l in lines {
        let c = l.message.len() as u64 + LOG_LINE_OVERHEAD_BYTES;
        if cost + c > max_cost {
            break;
        }
        cost += c;
        n += 1;
    }
    n
}

/// A line read from a [`LogChunk`], borrowing its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLineRef<'a> {
    pub at_ms: u64,
    pub level: LogLevel,
    pub message: &'a str,
}

impl LogLineRef<'_> {
    pub fn to_owned(&self) -> LogLine {
        LogLine { at_ms: self.at_ms, level: self.level, message: self.message.to_string() }
    }
}

struct ChunkIter<'a> {
    data: &'a [u8],
    at: usize,
    index: usize,
}

impl<'a> Iterator for ChunkIter<'a> {
    type Item = Result<LogLineRef<'a>, ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.data[self.at..];
        if rest.is_empty() {
            return None;
        }
        let at = self.at;
        let bad = || Some(Err(ChunkError::Malformed(at)));
        let Some((head, body)) = rest.split_first_chunk::<CHUNK_LINE_HEADER_BYTES>() else { return bad() };
        let at_ms = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let Some(level) = LogLevel::from_u8(head[8]) else { return bad() };
        let len = usize::from(u16::from_le_bytes([head[9], head[10]]));
        if len > MAX_LOG_LINE_BYTES {
            return Some(Err(ChunkError::LineTooLong { index: self.index, len }));
        }
        let Some(msg) = body.get(..len) else { return bad() };
        let Ok(message) = std::str::from_utf8(msg) else { return bad() };
        self.at += CHUNK_LINE_HEADER_BYTES + len;
        self.index += 1;
        Some(Ok(LogLineRef { at_ms, level, message }))
    }
}

/// The stored log of one attempt: a ring of its newest chunks, at most
/// [`MAX_LOG_BYTES_PER_ATTEMPT`] of cost, plus how many older lines were
/// dropped to keep it there (or refused by the job's
/// [`crate::limits::MAX_LOG_BYTES_PER_JOB`]). Keyed by the attempt's token,
/// which is unique, while attempt numbers repeat after a retry or a
/// graceful release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The attempt's fencing token.
    pub token: Token,
    /// The attempt number (1-based) the handler saw.
    pub attempt: u32,
    /// Oldest first; the ring drops whole chunks from the front.
    pub chunks: std::collections::VecDeque<LogChunk>,
    /// The cost of `chunks` ([`LogChunk::cost`]).
    pub bytes: u64,
    /// Lines dropped (oldest first, or refused at the job's bound).
    pub dropped: u64,
}

impl LogRecord {
    /// Keep `chunk` as the newest, dropping the oldest lines to stay within
    /// [`MAX_LOG_BYTES_PER_ATTEMPT`]: whole chunks while they fit in the
    /// excess, then the oldest lines of the oldest chunk left (re-encoded;
    /// only a full ring pays for that).
    pub fn push(&mut self, chunk: LogChunk) {
        let chunk = if chunk.cost() > MAX_LOG_BYTES_PER_ATTEMPT {
            let (kept, left_out) = chunk.newest_within(MAX_LOG_BYTES_PER_ATTEMPT);
            self.dropped += left_out;
            kept
        } else {
            chunk
        };
        self.bytes += chunk.cost();
        self.chunks.push_back(chunk);
        while self.bytes > MAX_LOG_BYTES_PER_ATTEMPT {
            let excess = self.bytes - MAX_LOG_BYTES_PER_ATTEMPT;
            let old = self.chunks.pop_front().expect("a positive cost implies a chunk");
            debug_assert!(self.bytes >= old.cost(), "a log record's cost is out of step");
            self.bytes -= old.cost();
            if old.cost() > excess {
                let (kept, left_out) = old.newest_within(old.cost() - excess);
                self.dropped += left_out;
                self.bytes += kept.cost();
                if !kept.is_empty() {
                    self.chunks.push_front(kept);
                }
            } else {
                self.dropped += u64::from(old.len());
            }
        }
        debug_assert!(self.bytes <= MAX_LOG_BYTES_PER_ATTEMPT);
    }

    /// The kept lines, oldest first.
    pub fn to_lines(&self) -> Vec<LogLine> {
        self.chunks.iter().flat_map(LogChunk::to_lines).collect()
    }

    /// Lines kept.
    pub fn line_count(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.len())).sum()
    }
}

/// Something the garbage collector deletes once its time has come.
/// Ordered so that the in-memory queue `(at_ms, GcTarget)` is deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GcTarget {
    /// A finished job: tasks, payloads, results, logs, index keys, record.
    Job(JobId),
    /// A finished workflow: its record; its step jobs are queued as `Job`s.
    Workflow(WorkflowId),
    /// An ended session, and its worker-name record if it is the name's latest.
    Session(SessionId),
}

/// Where the collector stopped inside a target that takes more than one
/// entry (a job with many shards or log records). Stored in [`crate::Meta`],
/// so every replica resumes at the same key whatever its restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcProgress {
    pub target: GcTarget,
    /// Phase-specific cursor: the next shard to delete, then the last log
    /// key deleted (see `core_gc.rs`).
    pub next_shard: u32,
    /// The last log record deleted: (task, token).
    pub last_log_key: Option<(TaskKey, Token)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(msgs: &[&str]) -> LogChunk {
        let mut c = LogChunk::default();
        for (i, m) in msgs.iter().enumerate() {
            c.push(i as u64, LogLevel::Warn, m).unwrap();
        }
        c
    }

    fn msgs(c: &LogChunk) -> Vec<String> {
        c.to_lines().into_iter().map(|l| l.message).collect()
    }

    #[test]
    fn a_chunk_round_trips_its_lines_and_is_charged_like_the_lines() {
        let c = chunk(&["a", "", "ünïcødé", &"x".repeat(MAX_LOG_LINE_BYTES)]);
        c.validate().unwrap();
        assert_eq!(c.len(), 4);
        let back = c.to_lines();
        assert_eq!(back[2], LogLine { at_ms: 2, level: LogLevel::Warn, message: "ünïcødé".into() });
        assert_eq!(LogChunk::of_lines(&back).unwrap(), c);
        let messages = 1 + "ünïcødé".len() + MAX_LOG_LINE_BYTES;
        assert_eq!(c.message_bytes(), messages);
        assert_eq!(c.cost(), messages as u64 + 4 * LOG_LINE_OVERHEAD_BYTES);
        let back = crate::codec::decode::<LogChunk>(&crate::codec::encode(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn push_refuses_a_long_line_and_a_line_past_the_count_and_changes_nothing() {
        let mut c = chunk(&["kept"]);
        let e = c.push(0, LogLevel::Info, &"x".repeat(MAX_LOG_LINE_BYTES + 1)).unwrap_err();
        assert_eq!(e, ChunkError::LineTooLong { index: 1, len: MAX_LOG_LINE_BYTES + 1 });
        assert_eq!(c, chunk(&["kept"]));
        let mut full = chunk(&vec!["l"; MAX_LOG_LINES_PER_COMMAND]);
        assert_eq!(full.push(0, LogLevel::Info, "one more"), Err(ChunkError::TooManyLines));
        full.validate().unwrap();
    }

    #[test]
    fn validate_refuses_every_malformed_encoding() {
        let good = chunk(&["one", "two"]);
        let data = good.data.to_vec();
        let bad = [
            LogChunk::from_parts(3, ChunkEncoding::Raw, data.clone()), // fewer lines than counted
            LogChunk::from_parts(1, ChunkEncoding::Raw, data.clone()), // trailing bytes
            LogChunk::from_parts(2, ChunkEncoding::Raw, data[..data.len() - 1].into()), // cut message
            LogChunk::from_parts(2, ChunkEncoding::Raw, data[..5].into()), // cut header
            LogChunk::from_parts(1, ChunkEncoding::Raw, [&data[..8], &[9u8], &data[9..14]].concat()), // unknown level
            LogChunk::from_parts(1, ChunkEncoding::Raw, [&data[..11], &[0xff, 0xfe, 0xfd][..]].concat()), // not UTF-8
            LogChunk::from_parts(u32::MAX, ChunkEncoding::Raw, data.clone()),
        ];
        for (i, c) in bad.iter().enumerate() {
            assert!(c.validate().is_err(), "case {i}: {c:?} passed");
            // Reading a bad chunk stops at the fault rather than panicking (in release).
            if !cfg!(debug_assertions) {
                let _ = c.to_lines();
            }
        }
        let mut long = 0u64.to_le_bytes().to_vec();
        long.push(LogLevel::Info as u8);
        long.extend_from_slice(&((MAX_LOG_LINE_BYTES + 1) as u16).to_le_bytes());
        long.extend(std::iter::repeat_n(b'x', MAX_LOG_LINE_BYTES + 1));
        let e = LogChunk::from_parts(1, ChunkEncoding::Raw, long).validate().unwrap_err();
        assert_eq!(e, ChunkError::LineTooLong { index: 0, len: MAX_LOG_LINE_BYTES + 1 });
        LogChunk::default().validate().unwrap();
    }

    #[test]
    fn within_keeps_the_newest_or_the_oldest_lines_that_fit() {
        let c = chunk(&["aaaa", "bb", "cccccc"]);
        let cost = |m: &str| m.len() as u64 + LOG_LINE_OVERHEAD_BYTES;
        let (newest, left) = c.newest_within(cost("bb") + cost("cccccc"));
        assert_eq!((msgs(&newest), left), (vec!["bb".to_string(), "cccccc".into()], 1));
        let (oldest, left) = c.oldest_within(cost("aaaa") + cost("bb") + 1);
        assert_eq!((msgs(&oldest), left), (vec!["aaaa".to_string(), "bb".into()], 1));
        assert_eq!(c.oldest_within(0).0.len(), 0);
        assert_eq!(c.newest_within(c.cost()).0, c);
    }

    #[test]
    fn a_record_drops_whole_old_chunks_and_cuts_a_chunk_larger_than_the_ring() {
        let big = "x".repeat(MAX_LOG_LINE_BYTES);
        let per_line = MAX_LOG_LINE_BYTES as u64 + LOG_LINE_OVERHEAD_BYTES;
        let fit = (MAX_LOG_BYTES_PER_ATTEMPT / per_line) as usize;
        let mut r = LogRecord::default();
        r.push(chunk(&["first", "second"]));
        r.push(chunk(&vec![big.as_str(); fit - 1]));
        assert_eq!((r.chunks.len(), r.dropped), (2, 0));
        // Two more big lines: the first chunk goes whole, then the oldest
        // line of the second.
        r.push(chunk(&[big.as_str(), big.as_str()]));
        assert_eq!((r.chunks.len(), r.dropped, r.line_count()), (2, 3, fit as u64));
        assert_eq!(r.bytes, fit as u64 * per_line);
        assert_eq!(r.bytes, r.chunks.iter().map(LogChunk::cost).sum::<u64>());
        // A chunk past the whole ring keeps its newest lines.
        let mut lines = vec![big.as_str(); fit + 3];
        lines.push("newest");
        r.push(chunk(&lines));
        assert!(r.bytes <= MAX_LOG_BYTES_PER_ATTEMPT);
        assert_eq!(r.to_lines().last().unwrap().message, "newest");
        assert_eq!(r.dropped + r.line_count(), 2 + (fit as u64 - 1) + 2 + lines.len() as u64);
        assert_eq!(r.bytes, r.chunks.iter().map(LogChunk::cost).sum::<u64>());
    }

    /// Lines like a handler's: similar text with a few values changing.
    fn typical(n: usize) -> LogChunk {
        let mut c = LogChunk::default();
        for i in 0..n {
            c.push(
                1_700_000_000_000 + i as u64,
                LogLevel::Info,
                &format!("step {i} of shard 17: processed {} records", 1000 + i),
            )
            .unwrap();
        }
        c
    }

    #[test]
    fn a_compressed_chunk_is_smaller_reads_the_same_lines_and_costs_the_same() {
        let raw = typical(10);
        let lz4 = raw.clone().compressed();
        assert_eq!(lz4.encoding(), ChunkEncoding::Lz4);
        assert!(lz4.stored_bytes() * 2 < raw.stored_bytes(), "{} of {}", lz4.stored_bytes(), raw.stored_bytes());
        lz4.validate().unwrap();
        assert_eq!(lz4.to_lines(), raw.to_lines());
        assert_eq!((lz4.len(), lz4.message_bytes(), lz4.cost()), (raw.len(), raw.message_bytes(), raw.cost()));
        let back = crate::codec::decode::<LogChunk>(&crate::codec::encode(&lz4).unwrap()).unwrap();
        assert_eq!(back, lz4);
        // Cut at a bound, a compressed chunk becomes a raw one: apply never compresses.
        let (kept, left) = lz4.newest_within(raw.cost() / 2);
        assert_eq!(kept.encoding(), ChunkEncoding::Raw);
        assert_eq!(kept.to_lines(), raw.to_lines()[left as usize..]);
        // Lines that do not shrink stay raw.
        let mut noise = LogChunk::default();
        noise.push(0, LogLevel::Info, "q7#Zp").unwrap();
        assert_eq!(noise.clone().compressed(), noise);
        assert_eq!(LogChunk::default().compressed(), LogChunk::default());
    }

    #[test]
    fn validate_refuses_a_compressed_chunk_that_lies_about_its_size_or_does_not_decompress() {
        let good = typical(10).compressed();
        good.validate().unwrap();
        let data = good.data.to_vec();
        let size = u32::from_le_bytes(data[..4].try_into().unwrap());
        let with_size =
            |n: u32| LogChunk::from_parts(10, ChunkEncoding::Lz4, [&n.to_le_bytes()[..], &data[4..]].concat());
        let huge = MAX_CHUNK_RAW_BYTES as u32 + 1;
        let bad = [
            (with_size(size + 1), ChunkError::BadCompression(size as usize + 1)),
            (with_size(size - 1), ChunkError::BadCompression(size as usize - 1)),
            // A small chunk claiming a huge size is refused before anything is allocated.
            (with_size(huge), ChunkError::TooLarge(huge as usize)),
            (with_size(u32::MAX), ChunkError::TooLarge(u32::MAX as usize)),
            (LogChunk::from_parts(10, ChunkEncoding::Lz4, data[..3].to_vec()), ChunkError::Malformed(0)),
            (
                LogChunk::from_parts(10, ChunkEncoding::Lz4, data[..data.len() - 2].to_vec()),
                ChunkError::BadCompression(size as usize),
            ),
            (
                LogChunk::from_parts(10, ChunkEncoding::Lz4, [&data[..4], &[0xffu8; 40][..]].concat()),
                ChunkError::BadCompression(size as usize),
            ),
            (
                LogChunk::from_parts(10, ChunkEncoding::Raw, vec![0; MAX_CHUNK_RAW_BYTES + 1]),
                ChunkError::TooLarge(MAX_CHUNK_RAW_BYTES + 1),
            ),
            // The raw lines inside are checked as a raw chunk's are.
            (LogChunk::from_parts(11, ChunkEncoding::Lz4, data.clone()), ChunkError::Malformed(size as usize)),
        ];
        for (i, (c, want)) in bad.iter().enumerate() {
            assert_eq!(c.validate().as_ref(), Err(want), "case {i}: {c:?}");
        }
    }
}
