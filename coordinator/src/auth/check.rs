//! The handler's half of authorization: the namespace of the request's
//! object, and the role there.
//!
//! Objects named by id are looked up in this node's state, on the node that
//! serves the call (the leader, or this node for a stale read). A caller who
//! holds no role at all in the object's namespace gets the same NOT_FOUND as
//! for a missing object, so ids do not reveal what exists in other
//! namespaces; a caller who holds some role there but not the one needed
//! gets PERMISSION_DENIED naming the role and the namespace.

use std::collections::BTreeSet;
use std::sync::Arc;

use baton_raft_store::{CommandError, StoreReader};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

use super::methods::{Object, Rule, Target};
use super::{AUTHORIZATION_HEADER, Principal, Role};
use crate::audit::AuditSlot;
use crate::error::ApiError;

/// What the layer decided, handed to the handler in the request's extensions.
#[derive(Clone, Debug)]
pub struct Authed {
    pub principal: Arc<Principal>,
    pub rule: &'static Rule,
    pub audit: AuditSlot,
}

fn denied(role: Role, namespace: &str) -> ApiError {
    ApiError::PermissionDenied(format!("needs role {role} in namespace {namespace}"))
}

/// The decision for one object, `not_found` being the answer for a missing one.
fn decide_ns(p: &Principal, role: Role, namespace: Option<String>, not_found: CommandError) -> Result<(), ApiError> {
    match namespace {
        Some(ns) if p.allows(role, &ns) => Ok(()),
        Some(ns) if p.sees(&ns) => Err(denied(role, &ns)),
        _ => Err(not_found.into()),
    }
}

/// Whether `p` may do `role` on `object`.
pub fn decide(p: &Principal, role: Role, object: &Object<'_>, reader: &StoreReader) -> Result<(), ApiError> {
    match object {
        Object::Cluster => p.allows_all(role).then_some(()).ok_or_else(|| denied(role, "*")),
        Object::Namespace(ns) => p.allows(role, ns).then_some(()).ok_or_else(|| denied(role, ns)),
        Object::Namespaces(list) => {
            for ns in list {
                if !p.allows(role, ns) {
                    return Err(denied(role, ns));
                }
            }
            Ok(())
        }
        Object::Filter("") => p.allows_all(role).then_some(()).ok_or_else(|| {
            ApiError::PermissionDenied(format!(
                "needs role {role} in namespace * to list every namespace; filter by a namespace"
            ))
        }),
        Object::Filter(ns) => p.allows(role, ns).then_some(()).ok_or_else(|| denied(role, ns)),
        Object::Job(id) => {
            let ns = reader.job(*id)?.map(|j| j.namespace);
            decide_ns(p, role, ns, CommandError::JobNotFound(*id))
        }
        Object::Workflow(id) => {
            let ns = reader.workflow(*id)?.map(|w| w.namespace);
            decide_ns(p, role, ns, CommandError::WorkflowNotFound(*id))
        }
        Object::Schedule(id) => {
            let ns = reader.read(|core, _| core.idx.schedules.get(id).map(|s| s.rule.namespace.clone()));
            decide_ns(p, role, ns, CommandError::ScheduleNotFound(*id))
        }
        Object::Trigger(id) => {
            let ns = reader.read(|core, _| core.idx.triggers.get(id).map(|t| t.namespace.clone()));
            decide_ns(p, role, ns, CommandError::TriggerNotFound(*id))
        }
    }
}

fn describe(object: &Object<'_>) -> String {
    match object {
        Object::Cluster => "cluster".into(),
        Object::Namespace(ns) => format!("namespace {ns}"),
        Object::Namespaces(list) => format!("namespaces {}", list.join(",")),
        Object::Filter("") => "all namespaces".into(),
        Object::Filter(ns) => format!("namespace {ns}"),
        Object::Job(id) => format!("job {id}"),
        Object::Workflow(id) => format!("workflow {id}"),
        Object::Schedule(id) => format!("schedule {id}"),
        Object::Trigger(id) => format!("trigger {id}"),
    }
}

/// The check every handler makes once its call is routed here. With auth
/// off, everything passes; with auth on, a request the layer did not
/// decide is refused (secure by default).
pub fn authorize<T: Target>(auth_on: bool, reader: &StoreReader, req: &tonic::Request<T>) -> Result<(), ApiError> {
    if !auth_on {
        return Ok(());
    }
    let Some(a) = req.extensions().get::<Authed>() else {
        return Err(ApiError::Unauthenticated("the call was not authenticated".into()));
    };
    let object = req.get_ref().object();
    // The map and the request disagree (a test checks they do not): refuse.
    if !object.fits(a.rule.scope) {
        return Err(ApiError::PermissionDenied(format!("{} is mapped to another scope", a.rule.action)));
    }
    a.audit.set_object(describe(&object));
    decide(&a.principal, a.rule.role, &object, reader)
}

/// The namespaces a worker session may receive tasks of: `None` for all.
pub fn worker_namespaces<T>(auth_on: bool, req: &tonic::Request<T>) -> Result<Option<BTreeSet<String>>, ApiError> {
    if !auth_on {
        return Ok(None);
    }
    let a = req
        .extensions()
        .get::<Authed>()
        .ok_or_else(|| ApiError::Unauthenticated("the call was not authenticated".into()))?;
    let ns = a.principal.worker_namespaces();
    a.audit.set_object(ns.as_ref().map_or_else(
        || "all namespaces".to_string(),
        |s| format!("namespaces {}", s.iter().cloned().collect::<Vec<_>>().join(",")),
    ));
    match ns {
        Some(s) if s.is_empty() => Err(denied(Role::Worker, "any")),
        other => Ok(other),
    }
}

/// For an open method's privileged option (Status's state hash): `role` in `*`.
pub fn require_all<T>(auth_on: bool, req: &tonic::Request<T>, role: Role) -> Result<(), ApiError> {
    if !auth_on {
        return Ok(());
    }
    match req.extensions().get::<Arc<Principal>>() {
        Some(p) if p.allows_all(role) => Ok(()),
        Some(_) => Err(denied(role, "*")),
        None => Err(ApiError::Unauthenticated("this option needs a credential".into())),
    }
}

/// The caller's credential, to send on with a forwarded call: the leader
/// authenticates and authorizes it again, trusting nothing from the follower.
pub fn credential(md: &MetadataMap) -> Option<AsciiMetadataValue> {
    md.get(AUTHORIZATION_HEADER).cloned()
}

/// A call being forwarded to the leader: not audited here (the leader
/// does), and its credential goes along.
pub fn forwarding<T>(req: &tonic::Request<T>) -> Option<AsciiMetadataValue> {
    if let Some(a) = req.extensions().get::<Authed>() {
        a.audit.set_forwarded();
    }
    credential(req.metadata())
}
