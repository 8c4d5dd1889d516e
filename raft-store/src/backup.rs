//! The backup file: a consistent copy of the state machine at one applied
//! log id, with what a restore needs to know, checksummed end to end.
//! Written and read as a stream: neither side holds more than one record
//! (plus I/O buffers) in memory, whatever the size of the table.
//!
//! Layout:
//! ```text
//! "BATONBAK" | version u8 | header_len u32 LE | header (codec)
//! { 0x01 | klen u32 LE | key | vlen u32 LE | value }*
//! 0x00 | count u64 LE | blake3(every byte before it) 32 bytes
//! ```
//! The records are the state-machine table keys and values (no generation
//! prefix), in key order, exactly what [`crate::kv::state_hash`] covers. The
//! header is encoded with the store's codec, whose version byte is the
//! format of every record. The checksum covers the header too, so any
//! changed byte is found; a file cut short fails with "truncated".

use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::StoreError;
use crate::types::{ClusterId, LogId, StoredMembership};

const MAGIC: &[u8; 8] = b"BATONBAK";
/// Version of the framing above. The records' own format is the codec's.
pub const BACKUP_VERSION: u8 = 1;
const TAG_RECORD: u8 = 1;
const TAG_END: u8 = 0;
/// Largest header accepted (a membership of a few nodes; this rejects garbage).
const MAX_HEADER_BYTES: usize = 1024 * 1024;
/// Largest key accepted (keys are tiny; this rejects garbage).
const MAX_KEY_BYTES: usize = 64 * 1024;
/// I/O buffer on either side.
const IO_BUFFER_BYTES: usize = 1 << 20;

/// One state-machine record: table key and value.
pub type Record = (Vec<u8>, Vec<u8>);

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The cluster it was taken from.
    pub cluster_id: ClusterId,
    /// The last log entry the copied state includes.
    pub last_applied: Option<LogId>,
    /// The membership as of `last_applied`.
    pub membership: StoredMembership,
    /// [`crate::kv::state_hash`] of the copied state: a restore rebuilds
    /// the state and checks it against this.
    pub state_hash: [u8; 32],
    /// When the backup was taken (Unix ms, the taking node's wall clock);
    /// for operators only.
    pub taken_at_ms: u64,
}

fn bad(msg: impl Into<String>) -> StoreError {
    StoreError::Backup(msg.into())
}

/// Hashes and counts every byte written through it.
struct Hashing<T> {
    inner: T,
    hash: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Streams records into a backup.
pub struct Writer<W: Write> {
    out: Hashing<BufWriter<W>>,
    count: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(inner: W, header: &BackupHeader) -> Result<Self, StoreError> {
        let header = codec::encode(header).map_err(|source| StoreError::Encode { what: "backup header", source })?;
        let out = BufWriter::with_capacity(IO_BUFFER_BYTES, inner);
        let mut w = Self { out: Hashing { inner: out, hash: blake3::Hasher::new(), bytes: 0 }, count: 0 };
        w.put(MAGIC)?;
        w.put(&[BACKUP_VERSION])?;
        w.put(&(header.len() as u32).to_le_bytes())?;
        w.put(&header)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.out.write_all(bytes).map_err(|e| StoreError::io("backup", e))
    }

    pub fn record(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.put(&[TAG_RECORD])?;
        self.put(&(key.len() as u32).to_le_bytes())?;
        self.put(key)?;
        self.put(&(value.len() as u32).to_le_bytes())?;
        self.put(value)?;
        self.count += 1;
        Ok(())
    }

    /// Write the trailer and flush; returns the inner writer (not fsynced)
    /// and the number of records.
    pub fn finish(mut self) -> Result<(W, u64), StoreError> {
        self.put(&[TAG_END])?;
        self.put(&self.count.to_le_bytes())?;
        let digest = *self.out.hash.finalize().as_bytes();
        let mut out = self.out.inner;
        out.write_all(&digest).map_err(|e| StoreError::io("backup", e))?;
        // Flushes the inner writer too (it may buffer a partial chunk).
        out.flush().map_err(|e| StoreError::io("backup", e))?;
        let inner = out.into_inner().map_err(|e| StoreError::io("backup", e.into_error()))?;
        Ok((inner, self.count))
    }
}

/// Streams records out of a backup; the trailer is verified when the last
/// record has been read ([`Reader::next_record`] returns `None` only then).
pub struct Reader<R: Read> {
    input: Hashing<BufReader<R>>,
    count: u64,
    done: bool,
}

impl<R: Read> Reader<R> {
    /// Read the header; returns the reader and the header.
    pub fn new(inner: R) -> Result<(Self, BackupHeader), StoreError> {
        let input = BufReader::with_capacity(IO_BUFFER_BYTES, inner);
        let mut r =
            Self { input: Hashing { inner: input, hash: blake3::Hasher::new(), bytes: 0 }, count: 0, done: false };
        let mut magic = [0u8; 9];
        r.take(&mut magic, "the file header")?;
        if &magic[..8] != MAGIC {
            return Err(bad("not a Baton backup (bad magic)"));
        }
        if magic[8] != BACKUP_VERSION {
            return Err(bad(format!("backup version {} (this build reads {BACKUP_VERSION})", magic[8])));
        }
        let len = r.u32("the header length")? as usize;
        if len > MAX_HEADER_BYTES {
            return Err(bad(format!("header of {len} bytes exceeds {MAX_HEADER_BYTES}")));
        }
        let mut header = vec![0u8; len];
        r.take(&mut header, "the header")?;
        let header: BackupHeader =
            codec::decode(&header).map_err(|e| bad(format!("corrupt or unreadable header: {e}")))?;
        Ok((r, header))
    }

    /// Fill `buf`, naming what was cut short if the file ends first.
    fn take(&mut self, buf: &mut [u8], what: &str) -> Result<(), StoreError> {
        match self.input.read_exact(buf) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                Err(bad(format!("truncated: the file ends inside {what} (after {} bytes)", self.input.bytes)))
            }
            Err(e) => Err(StoreError::io("backup", e)),
        }
    }

    fn u32(&mut self, what: &str) -> Result<u32, StoreError> {
        let mut b = [0u8; 4];
        self.take(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    fn chunk(&mut self, max: usize, what: &str) -> Result<Vec<u8>, StoreError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(bad(format!("{what} of {n} bytes exceeds {max} (corrupt file)")));
        }
        let mut buf = vec![0u8; n];
        self.take(&mut buf, what)?;
        Ok(buf)
    }

    /// The next (key, value), or `None` after a verified trailer.
    pub fn next_record(&mut self) -> Result<Option<Record>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.take(&mut tag, "a record")?;
        match tag[0] {
            TAG_RECORD => {
                let key = self.chunk(MAX_KEY_BYTES, "a record key")?;
                let value = self.chunk(crate::limits::MAX_RECORD_BYTES, "a record value")?;
                self.count += 1;
                Ok(Some((key, value)))
            }
            TAG_END => {
                let mut count = [0u8; 8];
                self.take(&mut count, "the trailer")?;
                let expected = *self.input.hash.finalize().as_bytes();
                let mut digest = [0u8; 32];
                self.take(&mut digest, "the checksum")?;
                if digest != expected {
                    return Err(bad("checksum mismatch: the file is corrupt"));
                }
                if u64::from_le_bytes(count) != self.count {
                    return Err(bad(format!(
                        "trailer says {} records, read {}",
                        u64::from_le_bytes(count),
                        self.count
                    )));
                }
                let mut extra = [0u8; 1];
                match self.input.inner.read(&mut extra) {
                    Ok(0) => {}
                    Ok(_) => return Err(bad("bytes after the checksum: the file is corrupt")),
                    Err(e) => return Err(StoreError::io("backup", e)),
                }
                self.done = true;
                Ok(None)
            }
            t => Err(bad(format!("unknown record tag {t} after {} records (corrupt file)", self.count))),
        }
    }

    /// Records read so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Read a whole backup file and verify it: its header and record count.
pub fn verify(path: &Path) -> Result<(BackupHeader, u64), StoreError> {
    let f = std::fs::File::open(path).map_err(|e| StoreError::io(path.display(), e))?;
    let (mut r, header) = Reader::new(f)?;
    while r.next_record()?.is_some() {}
    Ok((header, r.count()))
}

#[cfg(test)]
#[path = "backup_tests.rs"]
mod tests;
