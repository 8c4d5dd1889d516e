//! The audit trail: every admin and operator action, and every refused call,
//! as one structured `tracing` event (target `baton::audit`) with who, the
//! action (the method), the object (namespace, job, ...) and the outcome
//! (`ok`, `denied`, `unauthenticated` or the `baton-error-code`), counted in
//! `baton_audit_events_total{action, outcome}`.
//!
//! The auth layer emits the event once the call has an answer; the handler
//! fills in the object it checked ([`AuditSlot`]). A follower that forwards
//! a call emits nothing: the leader, which re-checks it, audits it.

use std::sync::{Arc, Mutex};

/// The tracing target of audit events, for routing them to their own sink.
pub const TARGET: &str = "baton::audit";
/// The counter of audit events.
pub const METRIC: &str = "baton_audit_events_total";

/// What the handler learned about a call, read by the layer when it ends.
#[derive(Clone, Debug, Default)]
pub struct AuditSlot(Arc<Mutex<Slot>>);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum Slot {
    #[default]
    Unset,
    Object(String),
    /// Forwarded to the leader, which audits it.
    Forwarded,
}

impl AuditSlot {
    pub fn set_object(&self, object: String) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if *s != Slot::Forwarded {
            *s = Slot::Object(object);
        }
    }

    pub fn set_forwarded(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Slot::Forwarded;
    }

    /// The object, or `None` if the call was forwarded (not audited here).
    pub fn object(&self) -> Option<String> {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Slot::Unset => Some("-".into()),
            Slot::Object(o) => Some(o.clone()),
            Slot::Forwarded => None,
        }
    }
}

/// Emit one audit event and count it.
pub fn record(who: &str, action: &str, object: &str, outcome: &str) {
    tracing::info!(target: TARGET, who, action, object, outcome, "audit");
    metrics::counter!(METRIC, "action" => action.to_string(), "outcome" => outcome.to_string()).increment(1);
}
