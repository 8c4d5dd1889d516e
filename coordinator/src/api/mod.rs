//! The public gRPC services (`baton.v1`) and what they share: routing to the
//! leader, forwarding, and conversions between the proto and the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};

use baton_raft_store::{NodeId, Raft, StoreReader};

use crate::config::Config;
use crate::error::ApiError;
use crate::leader::LeaderHandle;
use crate::proposer::Proposer;

/// Return the leader's answer when `route` says to forward the call.
/// `route` is `ctx.route(&req)` (writes) or a read route; both yield `Route`.
macro_rules! forward_if_not_here {
    ($ctx:expr, $route:expr, $req:ident, $client:ident :: $method:ident) => {
        if let $crate::api::Route::Forward(ch) = $route {
            let fwd = $ctx.forwarded($req.into_inner());
            return $client::new(ch)
                .$method(fwd)
                .await
                .map(|r| $ctx.forward_done(r))
                .map_err(|s| $ctx.forward_failed(s));
        }
    };
}

pub mod cluster;
pub mod convert;
pub mod jobs;
pub mod workers;

/// Set on calls a follower forwards, so the receiver never forwards again.
pub const FORWARDED_HEADER: &str = "baton-forwarded";
/// Deadline of a forwarded call.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// The current leader's id and API address, read from Raft's metrics without
/// copying them.
pub fn leader_hint(raft: &Raft) -> Option<(NodeId, String)> {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let id = m.current_leader?;
    let node = m.membership_config.membership().get_node(&id)?;
    Some((id, node.api_addr.clone()))
}

/// What every service needs.
#[derive(Clone)]
pub struct Ctx {
    pub cfg: Arc<Config>,
    pub raft: Raft,
    pub reader: StoreReader,
    pub proposer: Proposer,
    pub leader: LeaderHandle,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    pub watches: Arc<Semaphore>,
    pub sessions: Arc<Semaphore>,
}

/// Where a call that needs the leader goes.
pub enum Route {
    /// This node is the leader.
    Here,
    /// Forward to the leader over this channel.
    Forward(Channel),
}

impl Ctx {
    pub fn new(cfg: Arc<Config>, raft: Raft, reader: StoreReader, proposer: Proposer, leader: LeaderHandle) -> Self {
        let watches = Arc::new(Semaphore::new(cfg.limits.max_watches));
        let sessions = Arc::new(Semaphore::new(cfg.limits.max_sessions));
        Ctx { cfg, raft, reader, proposer, leader, channels: Arc::default(), watches, sessions }
    }

    /// The current leader's id and API address, if known.
    pub fn leader_hint(&self) -> Option<(NodeId, String)> {
        leader_hint(&self.raft)
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
        match &hint {
            Some((_, addr)) if self.cfg.forward_to_leader && !req.metadata().contains_key(FORWARDED_HEADER) => {
                Ok(Route::Forward(self.channel(addr)?))
            }
            _ => Err(ApiError::NotLeader { leader: hint }),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, ApiError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ApiError::Internal(format!("bad leader address {addr}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// A request to forward: same message, marked as forwarded.
    pub fn forwarded<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(FORWARD_TIMEOUT);
        r.metadata_mut().insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
        r
    }

    /// A forwarded call's answer, naming the leader that gave it.
    pub fn forward_done<T>(&self, mut r: tonic::Response<T>) -> tonic::Response<T> {
        crate::error::insert_leader_hint(r.metadata_mut(), self.leader_hint());
        r
    }

    /// A forwarded call that could not reach the leader becomes UNAVAILABLE
    /// with the hint, so the client can go there itself.
    pub fn forward_failed(&self, s: tonic::Status) -> tonic::Status {
        if s.code() == tonic::Code::Unavailable && s.metadata().get(crate::error::LEADER_ID_HEADER).is_none() {
            let hinted = crate::error::to_status(ApiError::NotLeader { leader: self.leader_hint() });
            let msg = format!("{}; forwarding failed: {}", hinted.message(), s.message());
            return tonic::Status::with_metadata(hinted.code(), msg, hinted.metadata().clone());
        }
        s
    }

    /// Wait until this node (the leader) may serve a linearizable read.
    pub async fn linearize(&self) -> Result<(), ApiError> {
        self.raft.ensure_linearizable().await.map(|_| ()).map_err(|e| match e {
            openraft::error::RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)) => {
                ApiError::NotLeader { leader: f.leader_id.zip(f.leader_node.map(|n| n.api_addr)) }
            }
            other => ApiError::Unavailable(other.to_string()),
        })
    }
}
