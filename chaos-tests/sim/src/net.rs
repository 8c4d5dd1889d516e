//! The simulated network: Raft RPCs between nodes and client requests to
//! nodes, each leg delayed, dropped or blocked by the seeded fault settings.
//!
//! A Raft RPC is two legs. The request is decided at send time (dropped, or
//! delayed), and checked again on arrival (the target may have crashed or a
//! partition may have started meanwhile); the reply likewise. A lost leg never
//! answers: openraft's own RPC timeout (heartbeat interval for appends, the
//! election timeout for votes) ends the call, as with a real network. Lost
//! legs never return `Unreachable`, so openraft never enters its backoff path
//! (whose unbiased `select!` would break determinism).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::OptionalSend;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, ReplicationClosed, StreamingError,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, SnapshotResponse,
    VoteRequest, VoteResponse,
};

use baton_coordinator::network::APPEND_BYTES_BUDGET;
use baton_raft_store::{Command, NodeId, NodeInfo, Proposal, Raft, Response, Snapshot, TypeConfig, Vote};

use crate::disk::placeholder_file;
use crate::world::World;

/// The simulated links' bandwidth, bytes per ms: 1 GbE (125 MB/s). A Raft
/// message's leg takes its seeded latency plus its encoded size over this,
/// so a 1 MiB entry spends about 8 ms on the wire; with openraft's
/// per-AppendEntries timeout of one heartbeat interval, big entries and
/// slow links time out as they do for real. Links do not share bandwidth:
/// concurrent messages do not slow each other.
pub const SIM_BANDWIDTH_BYTES_PER_MS: u64 = 125_000;

/// The size of `value` as the coordinator's codec sends it (a version byte,
/// then bincode with fixed-width integers), counted without building the
/// bytes: a 1 MiB entry is resent often, and copying it each time would
/// dominate the sim's run time.
pub fn encoded_len<T: serde::Serialize>(value: &T) -> u64 {
    let config = bincode::config::standard().with_little_endian().with_fixed_int_encoding();
    let mut size = bincode::enc::write::SizeWriter::default();
    match bincode::serde::encode_into_writer(value, &mut size, config) {
        Ok(()) => 1 + size.bytes_written as u64,
        Err(_) => 0,
    }
}

/// How long `bytes` take on a simulated link, ms (rounded up).
pub fn transfer_ms(bytes: u64) -> u64 {
    bytes.div_ceil(SIM_BANDWIDTH_BYTES_PER_MS)
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>;

fn net_err<E: std::error::Error>(msg: &str) -> RpcErr<E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(msg.to_string())))
}

/// Creates connections for one incarnation of one node.
pub struct SimNetwork {
    pub from: NodeId,
    pub epoch: u64,
    pub world: Arc<Mutex<World>>,
}

impl RaftNetworkFactory<TypeConfig> for SimNetwork {
    type Network = SimConn;

    async fn new_client(&mut self, target: NodeId, _node: &NodeInfo) -> SimConn {
        SimConn { from: self.from, epoch: self.epoch, to: target, world: self.world.clone() }
    }
}

pub struct SimConn {
    from: NodeId,
    epoch: u64,
    to: NodeId,
    world: Arc<Mutex<World>>,
}

impl SimConn {
    /// One RPC: a request leg of `bytes` (encoded), the call on the target, a reply leg.
    async fn call<Resp, Fut, E>(
        &self,
        what: String,
        bytes: u64,
        f: impl FnOnce(Raft) -> Fut,
        describe: impl Fn(&Resp) -> String,
    ) -> Result<Resp, RpcErr<E>>
    where
        Fut: Future<Output = Result<Resp, RaftError<NodeId>>>,
        E: std::error::Error,
    {
        let (from, to) = (self.from, self.to);
        let delay = {
            let mut w = self.world.lock().unwrap();
            if !w.is_current(from, self.epoch) {
                return Err(net_err("sender has crashed"));
            }
            let d = w.transmit(Some(from), Some(to)).map(|d| d + Duration::from_millis(transfer_ms(bytes)));
            w.trace(format_args!("{} n{from}->n{to} {what}", if d.is_some() { "send" } else { "drop" }));
            d
        };
        let Some(delay) = delay else { return std::future::pending().await };
        tokio::time::sleep(delay).await;
        let target = {
            let mut w = self.world.lock().unwrap();
            let ok = w.link_open(Some(from), Some(to));
            let target = w.nodes.get(&to).and_then(|s| Some((s.run.as_ref()?.raft.clone(), s.epoch)));
            match target {
                Some(t) if ok => {
                    w.stats.delivered += 1;
                    w.trace(format_args!("deliver n{from}->n{to}"));
                    Some(t)
                }
                _ => {
                    w.stats.dropped += 1;
                    w.trace(format_args!("lost n{from}->n{to}"));
                    None
                }
            }
        };
        let Some((raft, to_epoch)) = target else { return std::future::pending().await };
        let res = f(raft).await;
        let delay = {
            let mut w = self.world.lock().unwrap();
            let d = if w.is_current(to, to_epoch) { w.transmit(Some(to), Some(from)) } else { None };
            let r = match &res {
                Ok(r) => describe(r),
                Err(e) => format!("error {e}"),
            };
            w.trace(format_args!("{} n{to}->n{from} {r}", if d.is_some() { "reply" } else { "drop-reply" }));
            d
        };
        let Some(delay) = delay else { return std::future::pending().await };
        tokio::time::sleep(delay).await;
        let arrived = {
            let mut w = self.world.lock().unwrap();
            let ok = w.is_current(from, self.epoch) && w.link_open(Some(to), Some(from));
            if ok {
                w.stats.delivered += 1;
                w.trace(format_args!("deliver-reply n{to}->n{from}"));
            } else {
                w.stats.dropped += 1;
                w.trace(format_args!("lost-reply n{to}->n{from}"));
            }
            ok
        };
        if !arrived {
            return std::future::pending().await;
        }
        res.map_err(|e| net_err(&format!("remote: {e}")))
    }
}

impl RaftNetwork<TypeConfig> for SimConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let bytes = encoded_len(&rpc) as usize;
        // What the coordinator's network does: a request over the byte
        // budget that holds more than one entry is refused locally with a
        // hint, and openraft retries with fewer entries.
        let n = rpc.entries.len() as u64;
        if n > 1 && bytes > APPEND_BYTES_BUDGET {
            let fit = (n as u128 * APPEND_BYTES_BUDGET as u128 / bytes as u128) as u64;
            self.world
                .lock()
                .unwrap()
                .trace(format_args!("too-large n{}->n{} n={n} bytes={bytes}", self.from, self.to));
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fit.clamp(1, n - 1))));
        }
        let what = format!(
            "append {} prev={:?} n={} commit={:?} bytes={bytes}",
            rpc.vote,
            rpc.prev_log_id.map(|l| l.index),
            rpc.entries.len(),
            rpc.leader_commit.map(|l| l.index)
        );
        self.call(what, bytes as u64, |raft| async move { raft.append_entries(rpc).await }, |r| format!("{r}")).await
    }

    /// A whole snapshot in one request leg: the sender's durable snapshot is
    /// handed to the receiver's state machine (see `store.rs`), after a delay
    /// that grows with its size. openraft's snapshot timeout bounds it.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let meta = snapshot.meta.clone();
        let id = meta.snapshot_id.clone();
        let data = {
            let w = self.world.lock().unwrap();
            w.nodes.get(&self.from).and_then(|s| s.disk.lock().unwrap().snapshot.clone())
        };
        let fail = |msg: String| StreamingError::Network(NetworkError::new(&std::io::Error::other(msg)));
        let Some(data) = data.filter(|d| d.meta.snapshot_id == id) else {
            return Err(fail(format!("snapshot {id} is no longer on the sender's disk")));
        };
        let (to, world) = (self.to, self.world.clone());
        let what = format!("snapshot {id} last={:?} bytes={}", meta.last_log_id.map(|l| l.index), data.bytes);
        let bytes = data.bytes;
        let install = move |raft: Raft| async move {
            world.lock().unwrap().inflight_snapshots.insert((to, id.clone()), data);
            let r = raft.install_full_snapshot(vote, Snapshot { meta, snapshot: placeholder_file() }).await;
            world.lock().unwrap().inflight_snapshots.remove(&(to, id));
            r.map_err(RaftError::Fatal)
        };
        let sent =
            self.call::<_, _, openraft::error::Infallible>(what, bytes, install, |r: &SnapshotResponse<NodeId>| {
                format!("snapshot-reply {}", r.vote)
            });
        match tokio::time::timeout(option.hard_ttl(), sent).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(fail(e.to_string())),
            Err(_) => Err(fail("snapshot timed out".into())),
        }
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        Err(net_err("the simulation sends whole snapshots (full_snapshot), never chunks"))
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, _option: RPCOption) -> Result<VoteResponse<NodeId>, RpcErr> {
        let what = format!("vote {} last={:?}", rpc.vote, rpc.last_log_id.map(|l| l.index));
        let bytes = encoded_len(&rpc);
        self.call(
            what,
            bytes,
            |raft| async move { raft.vote(rpc).await },
            |r| format!("{} granted={}", r.vote, r.vote_granted),
        )
        .await
    }
}

/// What a client saw.
#[derive(Debug, Clone)]
pub enum ClientReply<T> {
    Ok(T),
    /// The node is not the leader (it may name one). Nothing was appended.
    NotLeader(Option<NodeId>),
    /// The request never reached a process: connection refused. Not applied.
    Refused(String),
    /// No answer: it may or may not have been applied.
    Unknown(String),
}

/// How long a client waits for any reply.
pub const CLIENT_TIMEOUT: Duration = Duration::from_millis(2_000);

/// Send `call` to node `to` over a client link (no partitions between clients
/// and nodes, but delays and drops apply) and bring back its answer.
pub async fn client_call<T, Fut>(
    world: &Arc<Mutex<World>>,
    to: NodeId,
    what: &str,
    call: impl FnOnce(Raft, u64) -> Fut,
) -> ClientReply<T>
where
    Fut: Future<Output = ClientReply<T>>,
{
    let inner = async {
        let delay = {
            let mut w = world.lock().unwrap();
            if !w.is_up(to) {
                w.trace(format_args!("refused c->n{to} {what}"));
                return ClientReply::Refused(format!("node {to} is down"));
            }
            let d = w.transmit(None, Some(to));
            w.trace(format_args!("{} c->n{to} {what}", if d.is_some() { "csend" } else { "cdrop" }));
            d
        };
        let Some(delay) = delay else { return std::future::pending().await };
        tokio::time::sleep(delay).await;
        let target = {
            let mut w = world.lock().unwrap();
            let t = w.nodes.get(&to).and_then(|s| Some((s.run.as_ref()?.raft.clone(), s.epoch)));
            w.trace(format_args!("{} c->n{to}", if t.is_some() { "cdeliver" } else { "clost" }));
            t
        };
        let Some((raft, epoch)) = target else { return std::future::pending().await };
        let reply = call(raft, epoch).await;
        let delay = {
            let mut w = world.lock().unwrap();
            let d = if w.is_current(to, epoch) { w.transmit(Some(to), None) } else { None };
            w.trace(format_args!("{} n{to}->c", if d.is_some() { "creply" } else { "cdrop-reply" }));
            d
        };
        let Some(delay) = delay else { return std::future::pending().await };
        tokio::time::sleep(delay).await;
        reply
    };
    match tokio::time::timeout(CLIENT_TIMEOUT, inner).await {
        Ok(r) => r,
        Err(_) => ClientReply::Unknown("timed out".into()),
    }
}

/// Propose `cmd` through `client_write` on node `to`, as a client request.
pub async fn client_write(world: &Arc<Mutex<World>>, to: NodeId, cmd: Command) -> ClientReply<Response> {
    let what = cmd.kind();
    let w2 = world.clone();
    client_call(world, to, what, move |raft, _| async move {
        // Stamped by the node's log clock, as the coordinator's proposer does.
        let now = w2.lock().unwrap().node_now(to).map_or(0, |n| n.log_ms);
        let leading = raft.metrics().borrow().current_leader == Some(to);
        match raft.client_write(Proposal { proposed_at_ms: now, cmd }).await {
            Ok(r) => ClientReply::Ok(r.data),
            // openraft answers ForwardToLeader both when the node does not
            // lead (nothing appended) and when it loses its log's tail with
            // the entry in it (a snapshot or a new leader's log replaced
            // it), though a later leader may have committed the entry it
            // had replicated: only the first answer is definite.
            Err(RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f))) if !leading => {
                ClientReply::NotLeader(f.leader_id)
            }
            Err(RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f))) => {
                ClientReply::Unknown(format!("leadership lost with the write in flight (leader now {:?})", f.leader_id))
            }
            Err(e) => ClientReply::Unknown(e.to_string()),
        }
    })
    .await
}
