//! Storage access for the apply core: the [`Kv`] read interface (RocksDB in
//! production, [`MemKv`] in tests and simulation), record decoding that names
//! the key of a corrupt record, and the state hash replicas compare.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::StoreError;
use crate::keys;

/// Read access to durable table records (keys are table keys, see [`keys`]).
pub trait Kv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Visit the pairs whose key starts with `prefix` and is `>= start`, in
    /// key order, until the visitor returns `false`. Stores seek to `start`.
    fn scan_from(
        &self,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError>;

    /// Visit the pairs whose key starts with `prefix` and is `< before`
    /// (every such pair when `before` is `None`), in descending key order,
    /// until the visitor returns `false`. Newest-first listings use it.
    fn scan_back(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError>;

    /// Visit all pairs whose key starts with `prefix`, in key order, until the
    /// visitor returns `false`.
    fn scan(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.scan_from(prefix, prefix, visit)
    }
}

/// An in-memory [`Kv`], for tests and the deterministic simulation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemKv(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl MemKv {
    pub fn write(&mut self, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        for (k, v) in writes {
            match v {
                Some(v) => self.0.insert(k, v),
                None => self.0.remove(&k),
            };
        }
    }
}

impl Kv for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key).cloned())
    }

    fn scan_from(
        &self,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        for (k, v) in self.0.range(start.max(prefix).to_vec()..) {
            if !k.starts_with(prefix) || !visit(k, v)? {
                break;
            }
        }
        Ok(())
    }

    fn scan_back(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        use std::ops::Bound;
        let upper = match keys::scan_back_upper(prefix, before) {
            Some(b) => Bound::Excluded(b),
            None => Bound::Unbounded,
        };
        for (k, v) in self.0.range((Bound::Included(prefix.to_vec()), upper)).rev() {
            if !k.starts_with(prefix) {
                break;
            }
            if !visit(k, v)? {
                break;
            }
        }
        Ok(())
    }
}

/// A [`Kv`] that counts the records it hands out (gets and visited scan
/// entries): tests use it to show that a read or an entry's apply stays
/// bounded.
pub struct CountingKv<'a> {
    kv: &'a dyn Kv,
    reads: std::cell::Cell<usize>,
    /// Point reads by table tag, found or not.
    gets: std::cell::RefCell<std::collections::BTreeMap<u8, usize>>,
}

impl<'a> CountingKv<'a> {
    pub fn new(kv: &'a dyn Kv) -> Self {
        Self { kv, reads: std::cell::Cell::new(0), gets: Default::default() }
    }

    /// Records handed out so far.
    pub fn reads(&self) -> usize {
        self.reads.get()
    }

    /// Point reads of `table`'s keys so far, including those that found nothing.
    pub fn gets_of(&self, table: crate::keys::Table) -> usize {
        self.gets.borrow().get(&(table as u8)).copied().unwrap_or(0)
    }

    pub fn reset(&self) {
        self.reads.set(0);
        self.gets.borrow_mut().clear();
    }

    fn count(&self) {
        self.reads.set(self.reads.get() + 1);
    }
}

impl Kv for CountingKv<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.count();
        if let Some(t) = key.first() {
            *self.gets.borrow_mut().entry(*t).or_default() += 1;
        }
        self.kv.get(key)
    }

    fn scan_from(
        &self,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.kv.scan_from(prefix, start, &mut |k, v| {
            self.count();
            visit(k, v)
        })
    }

    fn scan_back(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.kv.scan_back(prefix, before, &mut |k, v| {
            self.count();
            visit(k, v)
        })
    }
}

/// Decode a stored record, naming its key if it is corrupt.
pub fn load<T: DeserializeOwned>(kv: &dyn Kv, key: &[u8]) -> Result<Option<T>, StoreError> {
    match kv.get(key)? {
        None => Ok(None),
        Some(bytes) => decode_at(key, &bytes).map(Some),
    }
}

pub(crate) fn decode_at<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    codec::decode(bytes).map_err(|source| StoreError::Corrupt { cf: keys::CF_SM, key: keys::describe(key), source })
}

/// blake3 over every (key, value) pair of a [`Kv`], in key order. Two replicas
/// at the same applied index must have equal hashes.
pub fn state_hash(kv: &dyn Kv) -> Result<[u8; 32], StoreError> {
    let mut h = blake3::Hasher::new();
    kv.scan(&[], &mut |k, v| {
        h.update(&(k.len() as u64).to_le_bytes());
        h.update(k);
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v);
        Ok(true)
    })?;
    Ok(*h.finalize().as_bytes())
}
