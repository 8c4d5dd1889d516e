//! Idempotency records in the apply core: what a key was used for, until
//! its namespace's window ends, and the bounded pruning of expired keys that
//! every normal entry runs before its command.

use super::*;

impl Core {
    pub(super) fn idem_rec(&self, kv: &dyn Kv, key: &IdemKey) -> Result<Option<IdemRecord>, StoreError> {
        match self.dirty.idem.get(key) {
            Some(r) => Ok(r.clone()),
            None => load(kv, &keys::idem(key)),
        }
    }

    /// The idempotency window of `namespace`'s keys written now.
    fn idem_window_ms(&self, namespace: &str) -> u64 {
        self.idx
            .namespaces
            .get(namespace)
            .and_then(|n| n.idempotency_window_ms)
            .unwrap_or(IDEMPOTENCY_WINDOW_MS_DEFAULT)
    }

    /// Record `key` for `job`, expiring after its namespace's current window.
    pub(super) fn remember_idem(&mut self, ctx: Ctx, key: IdemKey, job: JobId, spec_hash: [u8; 32]) {
        let expires_ms = ctx.now_ms.saturating_add(self.idem_window_ms(key.namespace()));
        self.dirty.idem.insert(key.clone(), Some(IdemRecord { job, expires_ms, spec_hash }));
        self.dirty.idem_expiry.insert((expires_ms, key), true);
    }

    /// Drop idempotency keys whose expiry has passed, a bounded number per
    /// entry: the first `want` ([`idempotency_prune_budget`]) expired keys of the
    /// by-expiry index as this entry sees it (records plus overlay), in
    /// (expires_ms, key) order. That set depends only on the applied
    /// entries, never on how apply() calls were chunked.
    ///
    /// Cost O(64 + log n) per entry: pruning always takes the keys that
    /// expire first, so everything up to `idem_pruned_to` is deleted (in the
    /// overlay or on disk). A new record always sorts after the cursor: its
    /// expiry is now + its window, and the window is at least
    /// [`IDEMPOTENCY_WINDOW_MS_MIN`], so it is > now >= every expiry pruned
    /// so far (log time never goes back). Both sources are read from just
    /// after that cursor.
    pub(super) fn prune_idempotency(&mut self, kv: &dyn Kv, now_ms: u64, want: usize) -> Result<(), StoreError> {
        let mut candidates = BTreeSet::new();
        let prefix = [Table::IdemByExpiry as u8];
        let start = match &self.idem_pruned_to {
            // The smallest key after the cursor's.
            Some((t, key)) => [keys::idem_by_expiry(*t, key), vec![0]].concat(),
            None => prefix.to_vec(),
        };
        kv.scan_from(&prefix, &start, &mut |k, _| {
            let (t, key) = keys::parse_idem_by_expiry(k)
                .ok_or_else(|| StoreError::Invariant(format!("bad key {}", keys::describe(k))))?;
            if t > now_ms || candidates.len() >= want {
                return Ok(false);
            }
            candidates.insert((t, key));
            Ok(true)
        })?;
        let after = match &self.idem_pruned_to {
            Some(c) => Bound::Excluded(c.clone()),
            None => Bound::Unbounded,
        };
        for ((t, key), put) in self.dirty.idem_expiry.range((after, Bound::Unbounded)).take(want) {
            debug_assert!(*put, "idempotency key {key} deleted after the prune cursor");
            if *t > now_ms {
                break;
            }
            candidates.insert((*t, key.clone()));
        }
        for (t, key) in candidates.into_iter().take(want) {
            // A key reused after expiry has a newer record (a later expiry);
            // keep that one.
            if self.idem_rec(kv, &key)?.is_some_and(|r| r.expires_ms == t) {
                self.dirty.idem.insert(key.clone(), None);
            }
            self.dirty.idem_expiry.insert((t, key.clone()), false);
            self.idem_pruned_to = Some((t, key));
        }
        Ok(())
    }
}
