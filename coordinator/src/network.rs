//! The Raft transport over tonic: the client openraft uses to reach peers, and
//! the internal `RaftService` that receives their calls.
//!
//! Each message is one openraft request or reply encoded with the store's
//! versioned codec. An unreachable peer is `RPCError::Unreachable` (openraft
//! backs off); a message over [`MAX_RAFT_MESSAGE_BYTES`] is `PayloadTooLarge`
//! (openraft retries with fewer entries).
//!
//! Every request carries the sender's cluster id and the receiver's node id
//! and incarnation as the sender's membership records them; the server
//! admits it through [`Identity::admit`] first. A refusal comes back as
//! FAILED_PRECONDITION and is `Unreachable` for openraft (it backs off).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use baton_client::error::codes;
use baton_raft_store::{ClusterId, Incarnation, NodeId, NodeInfo, Raft, TypeConfig, codec};

use crate::identity::Identity;
use crate::tls::TlsState;

pub mod pb {
    tonic::include_proto!("baton.raft.v1");
}

use pb::raft_service_client::RaftServiceClient;
use pb::raft_service_server::RaftService;
use pb::{IdentifyRequest, IdentifyResponse, RaftMessage};

/// Largest Raft message sent or accepted (64 MiB): far above any legal entry
/// (`limits::MAX_ENTRY_BYTES`) or snapshot chunk, so it only stops garbage.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Connection establishment timeout for peers.
pub const CONNECT_TIMEOUT_MS: u64 = 500;
/// Largest AppendEntries sent in one RPC (1 MiB) when it holds more than one
/// entry. openraft gives an AppendEntries one heartbeat interval (30 ms) to
/// be sent, appended and fsynced; a follower catching up would otherwise get
/// up to `max_payload_entries` (300) entries at once, time out every try,
/// and miss every heartbeat. A larger request is refused locally as
/// `PayloadTooLarge` with an entries hint that fits. A single entry cannot be
/// split, which is why the edge keeps every entry within
/// `limits::MAX_ENTRY_BYTES`.
pub const APPEND_BYTES_BUDGET: usize = 1024 * 1024;

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>;

/// How often a refused peer is logged, on either side.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Pause before retrying an unreachable peer (openraft's default).
pub const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(500);
/// Pause before retrying a peer that refused our identity: it needs an
/// operator (remove and add the node again), and retrying it faster only
/// fills both nodes' logs. A re-added node gets a new client at once.
pub const REFUSED_BACKOFF: Duration = Duration::from_secs(5);

/// Creates one lazily connected channel per peer; openraft keeps it for reuse.
#[derive(Clone)]
pub struct Network {
    pub identity: Arc<Identity>,
    /// TLS material; `None`: plaintext.
    pub tls: Option<Arc<TlsState>>,
}

/// A lazily connected channel to a peer's Raft port: mutual TLS with the
/// node's certificate when TLS is on.
fn peer_channel(raft_addr: &str, tls: Option<&TlsState>) -> Result<Channel, String> {
    crate::tls::endpoint(raft_addr, tls).map(|e| {
        e.connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .connect_lazy()
    })
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient {
            target,
            addr: node.raft_addr.clone(),
            channel: peer_channel(&node.raft_addr, self.tls.as_deref()),
            tls_generation: self.tls.as_ref().map_or(0, |t| t.generation()),
            tls: self.tls.clone(),
            identity: self.identity.clone(),
            to_incarnation: node.incarnation.to_string(),
            last_refusal_log: None,
            refused: Arc::default(),
        }
    }
}

/// A connection to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    /// `Err` holds why the address was unusable; every call reports it.
    channel: Result<Channel, String>,
    /// The TLS material the channel was built with: after a reload the
    /// channel is rebuilt, so the peer sees the new client certificate.
    tls: Option<Arc<TlsState>>,
    tls_generation: u64,
    identity: Arc<Identity>,
    /// The peer's incarnation as the membership records it.
    to_incarnation: String,
    last_refusal_log: Option<Instant>,
    /// The last call was refused (sets the backoff).
    refused: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

impl PeerClient {
    fn client(&mut self) -> Result<RaftServiceClient<Channel>, TransportError> {
        if let Some(t) = &self.tls
            && t.generation() != self.tls_generation
        {
            self.tls_generation = t.generation();
            self.channel = peer_channel(&self.addr, Some(t));
        }
        let ch = self.channel.clone().map_err(|e| TransportError(format!("bad peer address {}: {e}", self.addr)))?;
        Ok(RaftServiceClient::new(ch)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
    }

    /// Encode, send, decode, and map failures to what openraft expects.
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: RPCTypes,
        req: &Req,
        option: &RPCOption,
        entries_hint: Option<u64>,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if data.len() > MAX_RAFT_MESSAGE_BYTES {
            return Err(RPCError::PayloadTooLarge(match entries_hint {
                Some(n) => PayloadTooLarge::new_entries_hint((n / 2).max(1)),
                None => PayloadTooLarge::new_entries_hint(1),
            }));
        }
        if rpc == RPCTypes::AppendEntries
            && let Some(fit) = entries_that_fit(entries_hint.unwrap_or(0), data.len())
        {
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fit)));
        }
        let mut client = self.client().map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut request = tonic::Request::new(RaftMessage {
            data,
            cluster_id: self.identity.cluster_hex(),
            from_node: self.identity.node_id(),
            to_node: self.target,
            to_incarnation: self.to_incarnation.clone(),
        });
        request.set_timeout(option.hard_ttl());
        let resp = match rpc {
            RPCTypes::AppendEntries => client.append_entries(request).await,
            RPCTypes::Vote => client.vote(request).await,
            RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
        };
        let refused = matches!(&resp, Err(s) if s.code() == tonic::Code::FailedPrecondition);
        self.refused.store(refused, Ordering::Relaxed);
        let bytes = match resp {
            Ok(r) => r.into_inner().data,
            Err(status) => {
                if refused && rate_ok(&mut self.last_refusal_log) {
                    tracing::warn!(peer = self.target, addr = %self.addr, reason = %status.message(), "peer refused raft message");
                }
                return Err(map_status(status, rpc, self.target, option.hard_ttl()));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// For an AppendEntries of `n` entries encoded in `bytes`: how many entries to
/// send instead, when it is over `APPEND_BYTES_BUDGET` and can be split.
fn entries_that_fit(n: u64, bytes: usize) -> Option<u64> {
    if n <= 1 || bytes <= APPEND_BYTES_BUDGET {
        return None;
    }
    let fit = (n as u128 * APPEND_BYTES_BUDGET as u128 / bytes as u128) as u64;
    Some(fit.clamp(1, n - 1))
}

fn map_status<E: std::error::Error>(status: tonic::Status, rpc: RPCTypes, target: NodeId, ttl: Duration) -> RpcErr<E> {
    let err = TransportError(format!("{}: {}", status.code(), status.message()));
    match status.code() {
        // A refused identity: back off like an unreachable peer; the
        // operator has to act. The reason is long and logged (rate-limited)
        // as "peer refused raft message"; openraft logs every retry.
        tonic::Code::FailedPrecondition if baton_client::error::status_code(&status) == Some(codes::TLS_REQUIRED) => {
            RPCError::Unreachable(Unreachable::new(&TransportError(format!(
                "node {target} serves TLS on its raft port and this node does not: configure [tls]"
            ))))
        }
        tonic::Code::FailedPrecondition => RPCError::Unreachable(Unreachable::new(&TransportError(format!(
            "node {target} refused the message: cluster identity mismatch (see 'peer refused raft message')"
        )))),
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&err)),
        tonic::Code::Unknown if status.message().contains("connect") => RPCError::Unreachable(Unreachable::new(&err)),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Timeout(Timeout { action: rpc, id: 0, target, timeout: ttl })
        }
        tonic::Code::ResourceExhausted | tonic::Code::OutOfRange => {
            RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(1))
        }
        _ => RPCError::Network(NetworkError::new(&err)),
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    /// openraft asks once, at the first `Unreachable`, and keeps it until a
    /// call succeeds; each pause follows what the last call met.
    fn backoff(&self) -> Backoff {
        let refused = self.refused.clone();
        Backoff::new(std::iter::repeat_with(move || {
            if refused.load(Ordering::Relaxed) { REFUSED_BACKOFF } else { UNREACHABLE_BACKOFF }
        }))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let n = rpc.entries.len() as u64;
        self.call(RPCTypes::AppendEntries, &rpc, &option, Some(n)).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(RPCTypes::InstallSnapshot, &rpc, &option, None).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.call(RPCTypes::Vote, &rpc, &option, None).await
    }
}

/// True (and the clock reset) when the last log of this kind is
/// [`REFUSAL_LOG_INTERVAL`] old or there was none.
fn rate_ok(last: &mut Option<Instant>) -> bool {
    if last.is_some_and(|t| t.elapsed() < REFUSAL_LOG_INTERVAL) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// Who answered an `Identify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub node_id: NodeId,
    pub incarnation: Incarnation,
    /// `None` while the node belongs to no cluster.
    pub cluster_id: Option<ClusterId>,
    /// The node has Raft state (a log or a vote).
    pub initialized: bool,
}

impl Identified {
    /// Whether the node is part of some cluster already.
    pub fn in_a_cluster(&self) -> bool {
        self.cluster_id.is_some() || self.initialized
    }
}

/// Ask the node at `raft_addr` who it is (one try, within `timeout`).
pub async fn identify(raft_addr: &str, tls: Option<&TlsState>, timeout: Duration) -> Result<Identified, String> {
    let ch = peer_channel(raft_addr, tls).map_err(|e| format!("bad address {raft_addr}: {e}"))?;
    let mut req = tonic::Request::new(IdentifyRequest {});
    req.set_timeout(timeout);
    let r = tokio::time::timeout(timeout, RaftServiceClient::new(ch).identify(req))
        .await
        .map_err(|_| format!("no answer from {raft_addr} within {timeout:?}"))?
        .map_err(|s| format!("{raft_addr}: {}", s.message()))?
        .into_inner();
    let incarnation = r.incarnation.parse().map_err(|e| format!("{raft_addr} sent a bad incarnation: {e}"))?;
    let cluster_id = match r.cluster_id.as_str() {
        "" => None,
        c => Some(c.parse().map_err(|e| format!("{raft_addr} sent a bad cluster id: {e}"))?),
    };
    Ok(Identified { node_id: r.node_id, incarnation, cluster_id, initialized: r.initialized })
}

/// The receiving side: admits a peer's request, decodes it and hands it to
/// openraft.
pub struct RaftServer {
    pub raft: Raft,
    pub identity: Arc<Identity>,
    /// When a refusal of each sender was last logged.
    refusals_logged: Mutex<HashMap<NodeId, Instant>>,
}

impl RaftServer {
    pub fn new(raft: Raft, identity: Arc<Identity>) -> Self {
        RaftServer { raft, identity, refusals_logged: Mutex::default() }
    }

    /// Admit the request (see [`Identity::admit`]) and decode its message.
    fn admit<T: DeserializeOwned>(&self, req: tonic::Request<RaftMessage>) -> Result<T, tonic::Status> {
        let m = req.into_inner();
        if let Err(e) = self.identity.admit(m.from_node, &m.cluster_id, m.to_node, &m.to_incarnation) {
            let status = match e {
                crate::identity::IdentityError::Store(_) => tonic::Status::unavailable(e.to_string()),
                _ => tonic::Status::failed_precondition(e.to_string()),
            };
            let mut logged = self.refusals_logged.lock().unwrap_or_else(|p| p.into_inner());
            let mut last = logged.get(&m.from_node).copied();
            if rate_ok(&mut last) {
                tracing::error!(from = m.from_node, reason = %e, "refused raft message");
                logged.insert(m.from_node, Instant::now());
            }
            return Err(status);
        }
        codec::decode(&m.data).map_err(|e| tonic::Status::invalid_argument(format!("undecodable raft message: {e}")))
    }
}

fn encode_resp<T: Serialize>(v: &T) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
    codec::encode(v)
        .map(|data| tonic::Response::new(RaftMessage { data, ..Default::default() }))
        .map_err(|e| tonic::Status::internal(format!("cannot encode raft reply: {e}")))
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn append_entries(
        &self,
        req: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.admit(req)?;
        encode_resp(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: tonic::Request<RaftMessage>) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc: VoteRequest<NodeId> = self.admit(req)?;
        encode_resp(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = self.admit(req)?;
        encode_resp(&self.raft.install_snapshot(rpc).await)
    }

    async fn identify(
        &self,
        _req: tonic::Request<IdentifyRequest>,
    ) -> Result<tonic::Response<IdentifyResponse>, tonic::Status> {
        Ok(tonic::Response::new(IdentifyResponse {
            node_id: self.identity.node_id(),
            incarnation: self.identity.incarnation().to_string(),
            cluster_id: self.identity.cluster_hex(),
            initialized: self.raft.is_initialized().await.unwrap_or(false),
        }))
    }
}

#[cfg(test)]
mod append_budget_tests {
    use super::*;

    #[test]
    fn large_appends_are_split_and_small_or_single_ones_are_not() {
        assert_eq!(entries_that_fit(300, APPEND_BYTES_BUDGET), None);
        assert_eq!(entries_that_fit(1, 50 * APPEND_BYTES_BUDGET), None);
        assert_eq!(entries_that_fit(300, 30 * APPEND_BYTES_BUDGET), Some(10));
        assert_eq!(entries_that_fit(2, 10 * APPEND_BYTES_BUDGET), Some(1));
        assert_eq!(entries_that_fit(300, APPEND_BYTES_BUDGET + 1), Some(299));
    }
}
