//! The one place that turns values into bytes and back.
//!
//! Every stored value and every log payload is `[FORMAT_VERSION, bincode2(serde(value))...]`.
//! bincode is unmaintained; keeping it behind these two functions, with a version
//! byte in front of every record, means a future format can be introduced by bumping
//! the byte and decoding both until old data is gone.

use serde::{Serialize, de::DeserializeOwned};

/// Version byte written in front of every encoded record. 2: task records
/// say how their last attempt ended (`TaskRecord::last_end`). 3: workflows
/// (job records name their workflow step, `JobRecord::origin`). 4: lifecycle
/// (retention, pause, deletion and log bytes on job records; the collector in `Meta`).
/// 5: task logs as encoded chunks keyed by token; reports carry their last lines.
/// 6: schedules and event triggers (`Meta` counters; jobs and workflows name
/// the schedule fire or event that started them, `run_of`).
/// 7: log chunks say how they are encoded (`ChunkEncoding`: raw or LZ4);
/// task records say whether their attempt has a log record (`log_kept`);
/// per-namespace idempotency windows (`NamespaceRecord::idempotency_window_ms`;
/// idempotency records carry their expiry, and their index is by expiry).
/// 8: tenancy, and worker sessions restricted to namespaces
/// (`RegisterWorker::namespaces`, `SessionRecord::namespaces`, from the
/// worker's credential). Idempotency keys are scoped by namespace (`keys::IdemKey`:
/// the idempotency tables are keyed `[ns len][ns][key]`); namespaces carry
/// quotas (`NamespaceRecord::quota`); job records carry their payload bytes
/// (`JobRecord::payload_bytes`), from which the per-namespace usage is counted.
///
/// Older data is handled as at every earlier bump: [`decode`] refuses a
/// record of another version, naming it, so a data dir or backup of version
/// 7 fails loudly at open (its meta record) rather than being misread. There
/// is no in-place migration. Re-keying the old idempotency records could not
/// be done cheaply anyway: a version-7 key names no namespace, and the job it
/// points to may already be collected, so its namespace is lost.
pub const FORMAT_VERSION: u8 = 8;

/// Fixed-int, little-endian bincode configuration. Fixed-width integers make the
/// encoding of a value independent of its magnitude, so byte-identical state is
/// easy to reason about.
fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        // Bound allocations while decoding untrusted or corrupt bytes.
        .with_limit::<{ crate::limits::MAX_RECORD_BYTES }>()
}

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("unknown format version {found} (this build reads version {FORMAT_VERSION})")]
    UnknownVersion { found: u8 },
    #[error("malformed record: {0}")]
    Malformed(String),
    #[error("cannot encode value: {0}")]
    Encode(String),
}

/// Encode `value` with the version byte in front.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Length of `encode(value)`, computed without building the bytes.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(1);
    bincode::serde::encode_into_std_write(value, &mut n, config()).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(n.0)
}

/// Decode a record written by [`encode`]. Trailing bytes are an error: a record
/// is exactly one value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion { found: version });
    }
    let (value, read) =
        bincode::serde::decode_from_slice(body, config()).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if read != body.len() {
        return Err(CodecError::Malformed(format!("{} trailing bytes after value", body.len() - read)));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_byte() {
        let v = (7u64, String::from("x"), vec![1u8, 2, 3]);
        let bytes = encode(&v).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (u64, String, Vec<u8>) = decode(&bytes).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn encoded_len_matches_encode() {
        let v = (7u64, String::from("xyz"), vec![serde_bytes::ByteBuf::from(vec![1u8; 300])]);
        assert_eq!(encoded_len(&v).unwrap(), encode(&v).unwrap().len());
    }

    #[test]
    fn rejects_unknown_version_empty_and_trailing() {
        let mut bytes = encode(&5u32).unwrap();
        assert_eq!(decode::<u32>(&[]), Err(CodecError::Empty));
        bytes[0] = 99;
        assert_eq!(decode::<u32>(&bytes), Err(CodecError::UnknownVersion { found: 99 }));
        let mut bytes = encode(&5u32).unwrap();
        bytes.push(0);
        assert!(matches!(decode::<u32>(&bytes), Err(CodecError::Malformed(_))));
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // A corrupt length prefix must fail cleanly rather than try to allocate it.
        let mut bytes = vec![FORMAT_VERSION];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }
}
