//! The snapshot file: a streamed, checksummed dump of one state-machine
//! generation. Neither writing nor reading ever holds more than one record
//! (plus I/O buffers) in memory, whatever the size of the table.
//!
//! Layout:
//! ```text
//! "BATONSNP" | version u8 | meta_len u32 LE | meta (codec)
//! { 0x01 | klen u32 LE | key | vlen u32 LE | value }*
//! 0x00 | count u64 LE | blake3(records) 32 bytes
//! ```

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::codec;
use crate::error::StoreError;
use crate::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"BATONSNP";
const VERSION: u8 = 1;
const TAG_RECORD: u8 = 1;
const TAG_END: u8 = 0;
/// Largest key accepted from a snapshot file (keys are tiny; this rejects garbage).
const MAX_KEY_BYTES: usize = 64 * 1024;

fn bad(msg: impl Into<String>) -> StoreError {
    StoreError::Snapshot(msg.into())
}

/// Streams records into a snapshot file.
pub struct Writer<W: Write> {
    out: BufWriter<W>,
    hash: blake3::Hasher,
    count: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(inner: W, meta: &SnapshotMeta) -> Result<Self, StoreError> {
        let mut out = BufWriter::with_capacity(1 << 20, inner);
        let meta = codec::encode(meta).map_err(|source| StoreError::Encode { what: "snapshot meta", source })?;
        let io = |e| StoreError::io("snapshot", e);
        out.write_all(MAGIC).map_err(io)?;
        out.write_all(&[VERSION]).map_err(io)?;
        out.write_all(&(meta.len() as u32).to_le_bytes()).map_err(io)?;
        out.write_all(&meta).map_err(io)?;
        Ok(Self { out, hash: blake3::Hasher::new(), count: 0 })
    }

    pub fn record(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut head = [0u8; 5];
        head[0] = TAG_RECORD;
        head[1..].copy_from_slice(&(key.len() as u32).to_le_bytes());
        let vlen = (value.len() as u32).to_le_bytes();
        for part in [&head[..], key, &vlen[..], value] {
            self.hash.update(part);
            self.out.write_all(part).map_err(|e| StoreError::io("snapshot", e))?;
        }
        self.count += 1;
        Ok(())
    }

    /// Write the trailer and return the inner writer (flushed, not fsynced).
    pub fn finish(mut self) -> Result<W, StoreError> {
        let io = |e| StoreError::io("snapshot", e);
        self.out.write_all(&[TAG_END]).map_err(io)?;
        self.out.write_all(&self.count.to_le_bytes()).map_err(io)?;
        self.out.write_all(self.hash.finalize().as_bytes()).map_err(io)?;
        self.out.into_inner().map_err(|e| StoreError::io("snapshot", e.into_error()))
    }
}

/// Streams records out of a snapshot file, verifying the trailer at the end.
pub struct Reader<R: Read> {
    input: BufReader<R>,
    hash: blake3::Hasher,
    count: u64,
    done: bool,
}

impl<R: Read> Reader<R> {
    /// Read the header; returns the reader and the meta it carries.
    pub fn new(inner: R) -> Result<(Self, SnapshotMeta), StoreError> {
        let mut input = BufReader::with_capacity(1 << 20, inner);
        let mut magic = [0u8; 9];
        input.read_exact(&mut magic).map_err(|e| StoreError::io("snapshot header", e))?;
        if &magic[..8] != MAGIC {
            return Err(bad("not a Baton snapshot (bad magic)"));
        }
        if magic[8] != VERSION {
            return Err(bad(format!("unknown snapshot version {}", magic[8])));
        }
        let len = read_u32(&mut input)? as usize;
        if len > MAX_KEY_BYTES * 16 {
            return Err(bad(format!("snapshot meta of {len} bytes")));
        }
        let mut meta = vec![0u8; len];
        input.read_exact(&mut meta).map_err(|e| StoreError::io("snapshot meta", e))?;
        let meta: SnapshotMeta = codec::decode(&meta).map_err(|source| StoreError::Corrupt {
            cf: "snapshot",
            key: "meta".into(),
            source,
        })?;
        Ok((Self { input, hash: blake3::Hasher::new(), count: 0, done: false }, meta))
    }

    /// The next (key, value), or `None` after a verified trailer.
    pub fn next_record(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.input.read_exact(&mut tag).map_err(|e| StoreError::io("snapshot record", e))?;
        match tag[0] {
            TAG_RECORD => {
                self.hash.update(&tag);
                let key = self.read_chunk(MAX_KEY_BYTES)?;
                let value = self.read_chunk(crate::limits::MAX_RECORD_BYTES)?;
                self.count += 1;
                Ok(Some((key, value)))
            }
            TAG_END => {
                let mut count = [0u8; 8];
                let mut digest = [0u8; 32];
                self.input.read_exact(&mut count).map_err(|e| StoreError::io("snapshot trailer", e))?;
                self.input.read_exact(&mut digest).map_err(|e| StoreError::io("snapshot trailer", e))?;
                if u64::from_le_bytes(count) != self.count {
                    return Err(bad(format!(
                        "trailer says {} records, read {}",
                        u64::from_le_bytes(count),
                        self.count
                    )));
                }
                if &digest != self.hash.finalize().as_bytes() {
                    return Err(bad("checksum mismatch"));
                }
                self.done = true;
                Ok(None)
            }
            t => Err(bad(format!("unknown record tag {t}"))),
        }
    }

    fn read_chunk(&mut self, max: usize) -> Result<Vec<u8>, StoreError> {
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len).map_err(|e| StoreError::io("snapshot record", e))?;
        self.hash.update(&len);
        let n = u32::from_le_bytes(len) as usize;
        if n > max {
            return Err(bad(format!("record of {n} bytes exceeds {max}")));
        }
        let mut buf = vec![0u8; n];
        self.input.read_exact(&mut buf).map_err(|e| StoreError::io("snapshot record", e))?;
        self.hash.update(&buf);
        Ok(buf)
    }
}

fn read_u32<R: Read>(r: &mut R) -> Result<u32, StoreError> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(|e| StoreError::io("snapshot", e))?;
    Ok(u32::from_le_bytes(b))
}

/// Read only the meta of a snapshot file.
pub fn read_meta(path: &Path) -> Result<SnapshotMeta, StoreError> {
    let f = std::fs::File::open(path).map_err(|e| StoreError::io(path.display(), e))?;
    Ok(Reader::new(f)?.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta { snapshot_id: "s1".into(), ..Default::default() }
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let mut w = Writer::new(Vec::new(), &meta()).unwrap();
        w.record(b"k1", b"v1").unwrap();
        w.record(b"k2", &[7u8; 1000]).unwrap();
        let bytes = w.finish().unwrap();

        let (mut r, m) = Reader::new(&bytes[..]).unwrap();
        assert_eq!(m, meta());
        assert_eq!(r.next_record().unwrap(), Some((b"k1".to_vec(), b"v1".to_vec())));
        assert_eq!(r.next_record().unwrap().unwrap().1.len(), 1000);
        assert_eq!(r.next_record().unwrap(), None);

        let mut bad_bytes = bytes.clone();
        let n = bad_bytes.len();
        bad_bytes[n - 60] ^= 1; // inside the last record (the trailer is 41 bytes)
        let (mut r, _) = Reader::new(&bad_bytes[..]).unwrap();
        let err = loop {
            match r.next_record() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("tampering not detected"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("checksum"), "{err}");

        let truncated = &bytes[..bytes.len() - 10];
        let (mut r, _) = Reader::new(truncated).unwrap();
        assert!((0..3).any(|_| r.next_record().is_err()));
    }
}
