//! The core's writes: everything an entry changed, taken from the overlay
//! as (key, value or delete) in a deterministic order for one batch.

use super::*;

impl Core {
    /// Number of records changed since the last [`Core::take_writes`].
    pub fn dirty_len(&self) -> usize {
        let d = &self.dirty;
        d.tasks.len()
            + d.jobs.len()
            + d.gone_jobs.len()
            + d.payloads.len()
            + d.sessions.len()
            + d.names.len()
            + d.idem.len()
            + d.workflows.len()
            + d.gone_workflows.len()
            + d.step_specs.len()
            + d.logs.len()
            + d.namespaces.len()
            + d.schedules.len()
            + d.triggers.len()
            + d.templates.len()
    }

    /// Encode every change since the last call, as (table key, value or delete),
    /// in a deterministic order. The caller writes them atomically.
    ///
    /// Job index keys follow each written job record here: a record's
    /// `indexed_status` names the keys stored with it, so the keys change
    /// exactly when the record is written, whatever the chunking of apply().
    pub fn take_writes(&mut self) -> Result<Vec<(Vec<u8>, Option<Vec<u8>>)>, StoreError> {
        let mut d = std::mem::take(&mut self.dirty);
        let enc = |what: &'static str, r: Result<Vec<u8>, codec::CodecError>| {
            r.map_err(|source| StoreError::Encode { what, source })
        };
        fn put_opt<T: Serialize>(what: &'static str, v: Option<T>) -> Result<Option<Vec<u8>>, StoreError> {
            v.map(|v| codec::encode(&v).map_err(|source| StoreError::Encode { what, source })).transpose()
        }
        let mut w = Vec::with_capacity(1 + d.tasks.len() + 4 * d.jobs.len());
        if d.meta {
            w.push((keys::meta(), Some(enc("meta", codec::encode(&self.meta))?)));
        }
        for id in d.jobs {
            let rec = match self.idx.jobs.get_mut(&id) {
                Some(r) => r,
                None => d
                    .finished
                    .get_mut(&id)
                    .ok_or_else(|| StoreError::Invariant(format!("dirty job {id} has no record")))?,
            };
            // A deleted job leaves every listing at once.
            let want = (!rec.deleted).then(|| rec.status());
            if rec.indexed_status != want {
                index_key_writes(&mut w, rec, rec.indexed_status, want);
                rec.indexed_status = want;
            }
            w.push((keys::job(id), Some(enc("job", codec::encode(&*rec))?)));
        }
        for (id, rec) in d.gone_jobs {
            index_key_writes(&mut w, &rec, rec.indexed_status, None);
            w.push((keys::job(id), None));
        }
        for (k, t) in d.tasks {
            w.push((keys::task(k), put_opt("task", t)?));
        }
        for (k, p) in d.payloads {
            w.push((keys::payload(k), put_opt("payload", p)?));
        }
        for (id, s) in d.sessions {
            w.push((keys::session(id), put_opt("session", s)?));
        }
        for (name, n) in d.names {
            w.push((keys::worker_name(&name), put_opt("worker name", n)?));
        }
        for (key, r) in d.idem {
            w.push((keys::idem(&key), put_opt("idempotency", r)?));
        }
        for ((t, key), put) in d.idem_expiry {
            w.push((keys::idem_by_expiry(t, &key), put.then(Vec::new)));
        }
        for id in d.workflows {
            let rec = self.idx.workflows.get(&id).or_else(|| d.finished_workflows.get(&id));
            let rec = rec.ok_or_else(|| StoreError::Invariant(format!("dirty workflow {id} has no record")))?;
            w.push((keys::workflow(id), Some(enc("workflow", codec::encode(rec))?)));
        }
        for id in d.gone_workflows {
            w.push((keys::workflow(id), None));
        }
        for ((wf, step), t) in d.step_specs {
            w.push((keys::step_spec(wf, step), put_opt("step spec", t)?));
        }
        for ((task, token), l) in d.logs {
            w.push((keys::task_log(task, token), put_opt("task log", l)?));
        }
        for ns in d.namespaces {
            w.push((keys::namespace(&ns), put_opt("namespace", self.idx.namespaces.get(&ns))?));
        }
        for id in d.schedules {
            w.push((keys::schedule(id), put_opt("schedule", self.idx.schedules.get(&id))?));
        }
        for id in d.triggers {
            w.push((keys::trigger(id), put_opt("trigger", self.idx.triggers.get(&id))?));
        }
        for (owner, t) in d.templates {
            w.push((keys::run_template(owner), put_opt("run template", t)?));
        }
        Ok(w)
    }
}

/// The writes that move a job's index keys from those of status `from` to
/// those of `to` (`None`: no keys). The namespace key does not depend on
/// the status, so it only changes when the job enters or leaves the indexes.
fn index_key_writes(
    w: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
    job: &JobRecord,
    from: Option<JobStatus>,
    to: Option<JobStatus>,
) {
    let ns = Some(job.namespace.as_str());
    if let Some(s) = from {
        w.push((keys::job_index(None, Some(s.tag()), job.id), None));
        w.push((keys::job_index(ns, Some(s.tag()), job.id), None));
    }
    match (from.is_some(), to.is_some()) {
        (true, false) => w.push((keys::job_index(ns, None, job.id), None)),
        (false, true) => w.push((keys::job_index(ns, None, job.id), Some(Vec::new()))),
        _ => {}
    }
    if let Some(s) = to {
        w.push((keys::job_index(None, Some(s.tag()), job.id), Some(Vec::new())));
        w.push((keys::job_index(ns, Some(s.tag()), job.id), Some(Vec::new())));
    }
}
