//! Worker sessions in the apply core: registering (a live session of the
//! same name is replaced), ending one (graceful, expired or replaced) and
//! releasing what it held, and reading session and name records.

use super::*;

impl Core {
    pub(super) fn session_rec(&self, kv: &dyn Kv, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        if let Some(s) = self.idx.sessions.get(&id) {
            return Ok(Some(s.clone()));
        }
        match self.dirty.sessions.get(&id) {
            Some(s) => Ok(s.clone()),
            None => load(kv, &keys::session(id)),
        }
    }

    pub(super) fn name_rec(&self, kv: &dyn Kv, name: &str) -> Result<Option<NameRecord>, StoreError> {
        match self.dirty.names.get(name) {
            Some(n) => Ok(n.clone()),
            None => load(kv, &keys::worker_name(name)),
        }
    }

    /// Why a session is not live: it ended, or never existed.
    pub(super) fn dead_session(&self, kv: &dyn Kv, id: SessionId) -> Fail {
        match self.session_rec(kv, id) {
            Ok(Some(_)) => CommandError::SessionEnded { session: id }.into(),
            Ok(None) => CommandError::SessionNotFound(id).into(),
            Err(e) => e.into(),
        }
    }

    pub(super) fn register_worker(
        &mut self,
        kv: &dyn Kv,
        ctx: Ctx,
        name: &str,
        labels: &BTreeMap<String, String>,
        capacity: u32,
        namespaces: &Option<std::collections::BTreeSet<String>>,
    ) -> Res<Outcome> {
        let prior = self.name_rec(kv, name)?;
        let old_live = self.idx.live_by_name.get(name).copied();
        if old_live.is_none() && self.idx.sessions.len() >= MAX_LIVE_SESSIONS {
            return Err(CommandError::LimitReached {
                what: "live worker sessions".into(),
                limit: MAX_LIVE_SESSIONS as u64,
            }
            .into());
        }
        // Validated; mutations start here.
        let replaced = match old_live {
            Some(old) => Some((old, self.end_session_unchecked(kv, ctx, old, EndReason::Replaced)?)),
            None => None,
        };
        let id = self.meta.next_session;
        self.meta.next_session += 1;
        let epoch = prior.map_or(1, |r| r.epoch + 1);
        let rec = SessionRecord {
            id,
            name: name.to_string(),
            epoch,
            labels: labels.clone(),
            capacity,
            registered_ms: ctx.now_ms,
            ended: None,
            namespaces: namespaces.clone(),
        };
        self.idx.sessions.insert(id, rec.clone());
        self.idx.live_by_name.insert(name.to_string(), id);
        self.dirty.sessions.insert(id, Some(rec));
        self.dirty.names.insert(name.to_string(), Some(NameRecord { epoch, session: id }));
        Ok(Outcome::Registered { session: id, epoch, replaced })
    }

    pub(super) fn end_session(
        &mut self,
        kv: &dyn Kv,
        ctx: Ctx,
        session: SessionId,
        epoch: u64,
        reason: EndReason,
    ) -> Res<Outcome> {
        let Some(rec) = self.idx.sessions.get(&session) else {
            return Err(self.dead_session(kv, session));
        };
        if rec.epoch != epoch {
            return Err(CommandError::StaleEpoch { session, presented: epoch, current: rec.epoch }.into());
        }
        let released = self.end_session_unchecked(kv, ctx, session, reason)?;
        Ok(Outcome::SessionEnded { session, released })
    }

    pub(super) fn end_session_unchecked(
        &mut self,
        kv: &dyn Kv,
        ctx: Ctx,
        session: SessionId,
        reason: EndReason,
    ) -> Res<Released> {
        let held: Vec<TaskKey> =
            self.idx.by_session.get(&session).map(|s| s.iter().copied().collect()).unwrap_or_default();
        let mut released = Released::default();
        let ev = Event::Release { session, graceful: reason == EndReason::Deregistered };
        for key in held {
            let (rec, policy) = self.live_task(kv, key)?;
            let step = transition(key, &rec, &ev, &policy, ctx.now_ms)
                .map_err(|e| invariant(format!("index says {key} is held by {session}: {e}")))?;
            match step.next.state {
                TaskState::Dead => released.dead.push(key),
                _ => released.requeued.push(key),
            }
            self.set_task(key, &rec.state, step.next);
            self.finish_if_done(kv, ctx, key.job)?;
        }
        self.idx.by_session.remove(&session);
        if let Some(mut rec) = self.idx.sessions.remove(&session) {
            if self.idx.live_by_name.get(&rec.name) == Some(&session) {
                self.idx.live_by_name.remove(&rec.name);
            }
            rec.ended = Some((ctx.now_ms, reason));
            self.dirty.sessions.insert(session, Some(rec));
            self.idx.expiry.insert((ctx.now_ms.saturating_add(SESSION_RETENTION_MS), GcTarget::Session(session)));
        }
        Ok(released)
    }
}
