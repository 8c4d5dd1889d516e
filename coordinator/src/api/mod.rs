//! The public gRPC services (`baton.v1`) and what they share: routing to the
//! leader, forwarding, and conversions between the proto and the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::transport::Channel;

use baton_raft_store::{NodeId, Raft, StoreReader};

use crate::config::Config;
use baton_client::error::{ERROR_CODE_HEADER, is_connect_failure};

use crate::error::{ApiError, LeaderHint, to_status};
use crate::identity::Identity;
use crate::leader::LeaderHandle;
use crate::proposer::Proposer;

/// Return the leader's answer when `route` says to forward the call, and
/// otherwise authorize it here (`Ctx::authorize`) before the handler goes on. The
/// last argument says whether the call changes state (`write`, the default)
/// or not (`read`): a write cut off after it was sent has an unknown outcome.
/// `route` is `ctx.route(&req)` (writes) or `ctx.read_route(..)`.
macro_rules! forward_if_not_here {
    ($ctx:expr, $route:expr, $req:ident, $client:ident :: $method:ident) => {
        forward_if_not_here!($ctx, $route, $req, $client::$method, write)
    };
    ($ctx:expr, $route:expr, $req:ident, $client:ident :: $method:ident, write) => {
        forward_if_not_here!(@go $ctx, $route, $req, $client::$method, $crate::api::Call::Write)
    };
    ($ctx:expr, $route:expr, $req:ident, $client:ident :: $method:ident, read) => {
        forward_if_not_here!(@go $ctx, $route, $req, $client::$method, $crate::api::Call::Read)
    };
    (@go $ctx:expr, $route:expr, $req:ident, $client:ident :: $method:ident, $call:expr) => {
        if let $crate::api::Route::Forward(ch) = $route {
            // The leader authenticates and authorizes the caller's credential again.
            let credential = $crate::auth::check::forwarding(&$req);
            let fwd = $ctx.forwarded_with($req.into_inner(), credential);
            return $client::new(ch)
                .max_decoding_message_size($crate::api::FORWARD_MAX_RESPONSE_BYTES)
                .$method(fwd)
                .await
                .map(|r| $ctx.forward_done(r))
                .map_err(|s| $ctx.forward_failed(s, $call));
        }
        // Served here: the caller's role in the namespace of what it names.
        $ctx.authorize(&$req)?;
    };
}

pub mod admission;
pub mod backup;
pub mod cluster;
pub mod convert;
pub mod convert_schedule;
pub mod events;
pub mod job_ops;
pub mod jobs;
pub mod logs;
pub mod namespaces;
pub mod schedules;
pub mod watch;
pub mod workers;
pub mod workflows;

/// Set on calls a follower forwards, so the receiver never forwards again.
pub const FORWARDED_HEADER: &str = "baton-forwarded";
/// Deadline of a forwarded call, enforced here as well as sent to the
/// leader, so a stalled leader cannot hold a follower's handler forever.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer a forwarded call accepts: the SDK's own limit, so whatever
/// a client can read from the leader it can also read through a follower.
pub const FORWARD_MAX_RESPONSE_BYTES: usize = baton_client::client::MAX_RESPONSE_BYTES;
/// Connect timeout towards the leader's API: the same peer-to-peer budget as
/// Raft's own connections.
pub const FORWARD_CONNECT_TIMEOUT_MS: u64 = crate::network::CONNECT_TIMEOUT_MS;

/// What every service needs.
#[derive(Clone)]
pub struct Ctx {
    pub cfg: Arc<Config>,
    pub raft: Raft,
    pub reader: StoreReader,
    pub proposer: Proposer,
    pub leader: LeaderHandle,
    /// This node's data dir and cluster identity.
    pub identity: Arc<Identity>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    pub watches: Arc<Semaphore>,
    pub sessions: Arc<Semaphore>,
    /// TLS material for calls to other nodes (forwarding, probes); `None`: plaintext.
    pub tls: Option<Arc<crate::tls::TlsState>>,
    /// Each namespace's submits-per-second bucket (used on the leader).
    pub submits: Arc<admission::SubmitLimiter>,
}

/// Whether a forwarded call changes state, which decides what a transport
/// failure means for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Read,
    Write,
}

/// Where a call that needs the leader goes.
pub enum Route {
    /// This node is the leader.
    Here,
    /// Forward to the leader over this channel.
    Forward(Channel),
}

impl Ctx {
    pub fn new(
        cfg: Arc<Config>,
        raft: Raft,
        reader: StoreReader,
        proposer: Proposer,
        leader: LeaderHandle,
        identity: Arc<Identity>,
        tls: Option<Arc<crate::tls::TlsState>>,
    ) -> Self {
        let watches = Arc::new(Semaphore::new(cfg.limits.max_watches));
        let sessions = Arc::new(Semaphore::new(cfg.limits.max_sessions));
        let submits = Arc::default();
        Ctx { cfg, raft, reader, proposer, leader, identity, channels: Arc::default(), watches, sessions, submits, tls }
    }

    /// Admit one submit of `namespace` under its submits-per-second quota.
    /// Called where the submit is proposed (the leader), after forwarding.
    pub fn admit_submit(&self, namespace: &str) -> Result<(), ApiError> {
        let rate = self.reader.namespace(namespace).quota.submits_per_sec;
        self.submits.admit(namespace, rate, |ns| self.reader.namespace(ns).quota.submits_per_sec.is_some())
    }

    /// The current leader's id and API address, if known.
    pub fn leader_hint(&self) -> Option<(NodeId, String)> {
        crate::leader::leader_hint(&self.raft)
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.cfg.node_id)
    }

    /// Serve here, forward to the leader, or refuse with the leader hint.
    pub fn route<T>(&self, req: &tonic::Request<T>) -> Result<Route, ApiError> {
        if self.is_leader() {
            return Ok(Route::Here);
        }
        let hint = self.leader_hint();
        // A caller authenticated by its client certificate has no credential
        // to forward (the leader sees this node's certificate, not the
        // caller's): it is sent to the leader instead.
        let by_cert = req.extensions().get::<crate::auth::check::Authed>().is_some()
            && !req.metadata().contains_key(crate::auth::AUTHORIZATION_HEADER);
        match &hint {
            Some((_, addr))
                if self.cfg.forward_to_leader && !by_cert && !req.metadata().contains_key(FORWARDED_HEADER) =>
            {
                Ok(Route::Forward(self.channel(addr)?))
            }
            _ => Err(ApiError::NotLeader { leader: hint }),
        }
    }

    /// A channel to another node's API port (forwarding, leaving).
    pub(crate) fn channel(&self, addr: &str) -> Result<Channel, ApiError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ch = crate::tls::endpoint(addr, self.tls.as_deref())
            .map_err(|e| ApiError::Internal(format!("bad leader address {addr}: {e}")))?
            .connect_timeout(Duration::from_millis(FORWARD_CONNECT_TIMEOUT_MS))
            .timeout(FORWARD_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// A request to the leader on behalf of the caller of `from`: marked as
    /// forwarded, with the caller's credential.
    pub fn forwarded<T, U>(&self, from: &tonic::Request<U>, msg: T) -> tonic::Request<T> {
        self.forwarded_with(msg, crate::auth::check::credential(from.metadata()))
    }

    /// A request to forward: same message, marked as forwarded, carrying
    /// the caller's credential (never trusted as a decision: the leader checks it).
    pub fn forwarded_with<T>(
        &self,
        msg: T,
        credential: Option<tonic::metadata::AsciiMetadataValue>,
    ) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(FORWARD_TIMEOUT);
        r.metadata_mut().insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
        if let Some(c) = credential {
            r.metadata_mut().insert(crate::auth::AUTHORIZATION_HEADER, c);
        }
        r
    }

    /// Whether `[auth]` is configured.
    pub fn auth_on(&self) -> bool {
        self.cfg.auth.is_some()
    }

    /// The per-handler check, once the call is routed here: the caller's
    /// role in the namespace of what the request names (`auth::check`).
    pub fn authorize<T: crate::auth::methods::Target>(&self, req: &tonic::Request<T>) -> Result<(), ApiError> {
        crate::auth::check::authorize(self.auth_on(), &self.reader, req)
    }

    /// A forwarded call's answer, naming the leader that gave it.
    pub fn forward_done<T>(&self, mut r: tonic::Response<T>) -> tonic::Response<T> {
        crate::error::insert_leader_hint(r.metadata_mut(), self.leader_hint());
        r
    }

    /// A forwarded call that failed. The leader's own refusals (they carry
    /// `baton-error-code`) pass through. Otherwise the call did not complete:
    /// if it never left this node it is NOT_LEADER with the hint, so the
    /// client goes there itself; a write that may have reached the leader is
    /// INDETERMINATE, since the leader may have committed it.
    pub fn forward_failed(&self, s: tonic::Status, call: Call) -> tonic::Status {
        forward_failure(s, call, self.leader_hint())
    }

    /// Route a read: linearizable reads run on the leader after a read
    /// barrier (forwarded there from a follower); stale reads run here.
    pub async fn read_route<T>(&self, req: &tonic::Request<T>, stale: bool) -> Result<Route, ApiError> {
        if stale {
            return Ok(Route::Here);
        }
        let route = self.route(req)?;
        if let Route::Here = route {
            self.linearize().await?;
        }
        Ok(route)
    }

    /// Wait until this node (the leader) may serve a linearizable read.
    pub async fn linearize(&self) -> Result<(), ApiError> {
        self.raft.ensure_linearizable().await?;
        Ok(())
    }
}

/// See [`Ctx::forward_failed`].
fn forward_failure(s: tonic::Status, call: Call, leader: LeaderHint) -> tonic::Status {
    if s.metadata().contains_key(ERROR_CODE_HEADER) {
        return s;
    }
    let nothing_sent = is_connect_failure(&s);
    tracing::debug!(status = ?s, nothing_sent, ?call, "forwarding to the leader failed");
    to_status(match call {
        Call::Write if !nothing_sent => ApiError::Indeterminate {
            reason: format!("the leader did not answer a forwarded write: {}", s.message()),
            leader,
        },
        _ => ApiError::NotLeader { leader },
    })
}

#[cfg(test)]
mod tests;
