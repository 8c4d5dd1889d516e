//! The Raft transport over tonic: the client openraft uses to reach peers, and
//! the internal `RaftService` that receives their calls.
//!
//! Each message is one openraft request or reply encoded with the store's
//! versioned codec. An unreachable peer is `RPCError::Unreachable` (openraft
//! backs off); a message over [`MAX_RAFT_MESSAGE_BYTES`] is `PayloadTooLarge`
//! (openraft retries with fewer entries).

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use baton_raft_store::{NodeId, NodeInfo, Raft, TypeConfig, codec};

pub mod pb {
    tonic::include_proto!("baton.raft.v1");
}

use pb::RaftMessage;
use pb::raft_service_client::RaftServiceClient;
use pb::raft_service_server::RaftService;

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

/// Creates one lazily connected channel per peer; openraft keeps it for reuse.
#[derive(Clone, Default)]
pub struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        let channel = Endpoint::from_shared(format!("http://{}", node.raft_addr))
            .map(|e| {
                e.connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .connect_lazy()
            })
            .map_err(|e| e.to_string());
        PeerClient { target, addr: node.raft_addr.clone(), channel }
    }
}

/// A connection to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    /// `Err` holds why the address was unusable; every call reports it.
    channel: Result<Channel, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

impl PeerClient {
    fn client(&self) -> Result<RaftServiceClient<Channel>, TransportError> {
        let ch = self.channel.clone().map_err(|e| TransportError(format!("bad peer address {}: {e}", self.addr)))?;
        Ok(RaftServiceClient::new(ch)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
    }

    /// Encode, send, decode, and map failures to what openraft expects.
    async fn call<Req, Resp, E>(
        &self,
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
        let mut request = tonic::Request::new(RaftMessage { data });
        request.set_timeout(option.hard_ttl());
        let resp = match rpc {
            RPCTypes::AppendEntries => client.append_entries(request).await,
            RPCTypes::Vote => client.vote(request).await,
            RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
        };
        let bytes = match resp {
            Ok(r) => r.into_inner().data,
            Err(status) => return Err(map_status(status, rpc, self.target, option.hard_ttl())),
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

/// The receiving side: decodes a peer's request and hands it to openraft.
pub struct RaftServer {
    pub raft: Raft,
}

fn decode_req<T: DeserializeOwned>(req: tonic::Request<RaftMessage>) -> Result<T, tonic::Status> {
    codec::decode(&req.into_inner().data)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode_resp<T: Serialize>(v: &T) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
    codec::encode(v)
        .map(|data| tonic::Response::new(RaftMessage { data }))
        .map_err(|e| tonic::Status::internal(format!("cannot encode raft reply: {e}")))
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn append_entries(
        &self,
        req: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode_req(req)?;
        encode_resp(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: tonic::Request<RaftMessage>) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc: VoteRequest<NodeId> = decode_req(req)?;
        encode_resp(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode_req(req)?;
        encode_resp(&self.raft.install_snapshot(rpc).await)
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
