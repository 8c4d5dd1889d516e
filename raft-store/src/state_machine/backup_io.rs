//! Backups of the state machine: written from one pinned snapshot while
//! apply() goes on, and installed offline into a new generation that is
//! switched on only once it checks out. The file format is `crate::backup`.

use std::io::{Read, Write};

use super::{Live, StateMachine, StoreReader, load_generation, switch_generation};
use crate::backup::{self, BackupHeader};
use crate::core::{Core, Meta};
use crate::error::StoreError;
use crate::keys;
use crate::kv::{Kv, load, state_hash};
use crate::rocks::GenKv;
use crate::types::ClusterId;

/// Lowercase hex of a hash, for messages.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl StoreReader {
    /// Write a backup of the applied state to `out`: one pinned RocksDB
    /// snapshot, hashed in a first pass and streamed in a second, so apply()
    /// goes on meanwhile and the copy is exactly the state at its
    /// `last_applied`. Returns the header and the record count.
    pub fn write_backup<W: Write>(
        &self,
        cluster_id: ClusterId,
        taken_at_ms: u64,
        out: W,
    ) -> Result<(BackupHeader, u64), StoreError> {
        let p = self.pin();
        let kv = p.kv();
        let state_hash = state_hash(&kv)?;
        let meta: Meta = load(&kv, &keys::meta())?.unwrap_or_default();
        let header = BackupHeader {
            cluster_id,
            last_applied: p.last_applied,
            membership: meta.membership,
            state_hash,
            taken_at_ms,
        };
        let mut w = backup::Writer::new(out, &header)?;
        kv.scan(&[], &mut |k, v| w.record(k, v).map(|_| true))?;
        let (_, records) = w.finish()?;
        Ok((header, records))
    }
}

impl StateMachine {
    /// Replace the whole state with a backup's, offline (`baton cluster
    /// restore`). The records go into a new generation beside the live one,
    /// switched on only after the backup's checksum, its state hash and its
    /// applied log id and membership check out; a bad backup leaves the
    /// state as it was. Returns the number of records.
    pub fn install_backup<R: Read>(
        &mut self,
        mut reader: backup::Reader<R>,
        header: &BackupHeader,
    ) -> Result<u64, StoreError> {
        let old_gen = self.live.read().unwrap_or_else(|p| p.into_inner()).generation;
        let new_gen = old_gen + 1;
        load_generation(&self.db, new_gen, StoreError::Backup, &mut || reader.next_record())?;
        let kv = GenKv { db: &self.db, generation: new_gen, snapshot: None };
        let hash = state_hash(&kv)?;
        if hash != header.state_hash {
            return Err(StoreError::Backup(format!(
                "the restored state hashes to {} but the backup says {}",
                hex(&hash),
                hex(&header.state_hash)
            )));
        }
        let m: Meta = load(&kv, &keys::meta())?.unwrap_or_default();
        if m.last_applied != header.last_applied || m.membership != header.membership {
            return Err(StoreError::Backup(format!(
                "the header says applied {:?}, the state says {:?}",
                header.last_applied, m.last_applied
            )));
        }
        let core = Core::open(&kv)?;
        let mut live = self.write_lock();
        switch_generation(&self.db, old_gen, new_gen)?;
        *live = Live { core, generation: new_gen };
        Ok(reader.count())
    }
}
