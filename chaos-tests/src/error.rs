//! The crate's one error type.

/// Why a history could not be read, built or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file (or `origin:line` while parsing).
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is not a valid event (bad JSON, unknown `type`, missing field,
    /// or a seq that does not follow the previous line's).
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        /// The file name, or the name given to [`History::parse`](crate::History::parse).
        origin: String,
        /// 1-based line number; blank lines count.
        line: usize,
        /// 1-based column within the line, where the parser stopped.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// An event handed to [`History::from_events`](crate::History::from_events)
    /// does not have a larger seq than the one before it.
    #[error("event {position} has seq {seq}, which does not follow seq {prev}; seqs must strictly increase")]
    SeqOrder {
        /// 1-based position of the event in the list.
        position: usize,
        /// Its seq.
        seq: u64,
        /// The previous event's seq.
        prev: u64,
    },
    /// An event could not be serialized.
    #[error("cannot encode event seq {seq}: {message}")]
    Encode {
        /// The event's seq.
        seq: u64,
        /// The serializer's message.
        message: String,
    },
}
