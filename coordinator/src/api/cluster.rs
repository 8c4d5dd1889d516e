//! `baton.v1.ClusterService`: status, online membership changes, backups.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use tonic::{Request, Response, Status};

use baton_client::proto;
use baton_client::proto::cluster_service_client::ClusterServiceClient;
use baton_client::proto::cluster_service_server::ClusterService;
use baton_raft_store::{NodeId, NodeInfo};

use super::Ctx;
use crate::config::valid_host_port;
use crate::error::ApiError;
use crate::network::{CONNECT_TIMEOUT_MS, Identified, identify};

/// How long AddLearner keeps asking a new node who it is, for a node that
/// was started just before it was added and is not listening yet.
pub const ADD_NODE_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between those tries.
pub const ADD_NODE_PROBE_INTERVAL: Duration = Duration::from_millis(200);

pub struct Cluster {
    pub ctx: Ctx,
}

impl Cluster {
    fn members(&self) -> Vec<proto::Member> {
        let m = self.ctx.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, n)| proto::Member {
                id: *id,
                raft_addr: n.raft_addr.clone(),
                api_addr: n.api_addr.clone(),
                voter: voters.contains(id),
                incarnation: n.incarnation.to_string(),
            })
            .collect()
    }

    fn membership_response(&self, log_index: u64) -> Response<proto::MembershipResponse> {
        Response::new(proto::MembershipResponse { members: self.members(), log_index })
    }

    /// Ask the node about to be added as `id` at `raft_addr` who it is, and
    /// check it may join: it is node `id`, it belongs to no other cluster,
    /// and if `id` is a member already, it is the same incarnation.
    async fn identify_new(&self, id: NodeId, raft_addr: &str) -> Result<Identified, ApiError> {
        let deadline = Instant::now() + ADD_NODE_PROBE_TIMEOUT;
        let who = loop {
            match identify(raft_addr, self.ctx.tls.as_deref(), Duration::from_millis(CONNECT_TIMEOUT_MS)).await {
                Ok(who) => break who,
                Err(e) if Instant::now() >= deadline => {
                    return Err(ApiError::Unavailable(format!(
                        "cannot ask node {id} at {raft_addr} who it is ({e}); start it before adding it"
                    )));
                }
                Err(_) => tokio::time::sleep(ADD_NODE_PROBE_INTERVAL).await,
            }
        };
        if who.node_id != id {
            return Err(ApiError::Precondition(format!(
                "the node at {raft_addr} is node {}, not node {id}",
                who.node_id
            )));
        }
        let mine = self.ctx.identity.cluster_id();
        if let Some(theirs) = who.cluster_id
            && Some(theirs) != mine
        {
            return Err(ApiError::Precondition(format!(
                "node {id} at {raft_addr} belongs to cluster {theirs}, this is cluster {}: a node of another \
                 cluster cannot be added (give it a new data dir to join this one)",
                mine.map_or_else(|| "<none>".into(), |c| c.to_string())
            )));
        }
        let recorded = self.ctx.raft.metrics().borrow().membership_config.membership().get_node(&id).cloned();
        if let Some(n) = recorded
            && n.incarnation != who.incarnation
        {
            return Err(ApiError::Precondition(format!(
                "node {id} is a member with incarnation {}, but the node at {raft_addr} is incarnation {}: \
                 its data dir was wiped or replaced. Remove it first (`baton cluster remove-node --id {id}`), \
                 then add it again",
                n.incarnation, who.incarnation
            )));
        }
        if who.cluster_id.is_none() && who.initialized {
            return Err(ApiError::Precondition(format!(
                "node {id} at {raft_addr} has Raft state of its own: give it a new data dir to join this cluster"
            )));
        }
        Ok(who)
    }
}

#[tonic::async_trait]
impl ClusterService for Cluster {
    async fn status(&self, req: Request<proto::StatusRequest>) -> Result<Response<proto::StatusResponse>, Status> {
        // Status is open (auth::methods::is_open); its full-table scan is not.
        if req.get_ref().include_state_hash {
            crate::auth::check::require_all(self.ctx.auth_on(), &req, crate::auth::Role::Admin)?;
        }
        let (state_hash, state_hash_index) = if req.into_inner().include_state_hash {
            // The hash comes with the applied index it covers, read off one
            // pinned snapshot (apply is not held up while it is computed).
            let reader = self.ctx.reader.clone();
            let hashed = tokio::task::spawn_blocking(move || reader.state_hash())
                .await
                .map_err(|e| ApiError::Internal(format!("state hash task failed: {e}")))?;
            let (applied, hash) = hashed.map_err(ApiError::from)?;
            (hash.to_vec(), applied.map_or(0, |l| l.index))
        } else {
            (Vec::new(), 0)
        };
        let m = self.ctx.raft.metrics().borrow().clone();
        let committed = self.ctx.raft.with_raft_state(|st| st.committed).await.ok().flatten();
        let last_log = m.last_log_index.unwrap_or(0);
        let replication = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != m.id)
                    .map(|(id, matched)| {
                        let matched = matched.map_or(0, |l| l.index);
                        proto::PeerReplication {
                            node_id: *id,
                            matched_index: matched,
                            lag: last_log.saturating_sub(matched),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (live_workers, live_tasks) = self.ctx.reader.read(|c, _| (c.idx.sessions.len() as u64, c.idx.live_tasks));
        let role = match m.state {
            openraft::ServerState::Leader => "leader",
            openraft::ServerState::Follower => "follower",
            openraft::ServerState::Candidate => "candidate",
            openraft::ServerState::Learner => "learner",
            openraft::ServerState::Shutdown => "shutdown",
        };
        let hint = self.ctx.leader_hint();
        Ok(Response::new(proto::StatusResponse {
            node_id: m.id,
            role: role.into(),
            leader_id: hint.as_ref().map_or(0, |h| h.0),
            leader_api_addr: hint.map(|h| h.1).unwrap_or_default(),
            term: m.current_term,
            last_log_index: last_log,
            commit_index: committed.map_or(0, |l| l.index),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            members: self.members(),
            replication,
            live_workers,
            live_tasks,
            state_hash,
            state_hash_index,
            cluster_id: self.ctx.identity.cluster_hex(),
            incarnation: self.ctx.identity.incarnation().to_string(),
        }))
    }

    async fn add_learner(
        &self,
        req: Request<proto::AddLearnerRequest>,
    ) -> Result<Response<proto::MembershipResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, ClusterServiceClient::add_learner, write);
        let r = req.into_inner();
        if r.node_id == 0 {
            return Err(ApiError::invalid("node_id", "must be greater than 0").into());
        }
        for (field, a) in [("raft_addr", &r.raft_addr), ("api_addr", &r.api_addr)] {
            if !valid_host_port(a) {
                return Err(ApiError::invalid(field, format!("{a:?} is not host:port")).into());
            }
        }
        // Record who answers at the address, so that a data dir wiped later
        // (or another cluster's node) is refused, not taken for this one.
        let who = self.identify_new(r.node_id, &r.raft_addr).await?;
        let node = NodeInfo { raft_addr: r.raft_addr, api_addr: r.api_addr, incarnation: who.incarnation };
        // Blocking: returns once the learner has caught up with the leader.
        let resp = self.ctx.raft.add_learner(r.node_id, node, true).await.map_err(ApiError::from)?;
        tracing::info!(node = r.node_id, "learner added");
        Ok(self.membership_response(resp.log_id.index))
    }

    async fn change_membership(
        &self,
        req: Request<proto::ChangeMembershipRequest>,
    ) -> Result<Response<proto::MembershipResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, ClusterServiceClient::change_membership, write);
        let voters: BTreeSet<NodeId> = req.into_inner().voters.into_iter().collect();
        if voters.is_empty() {
            return Err(ApiError::invalid("voters", "must not be empty").into());
        }
        // Removed voters stay as learners; RemoveNode drops them entirely.
        let resp = self.ctx.raft.change_membership(voters.clone(), true).await.map_err(ApiError::from)?;
        tracing::info!(?voters, "membership changed");
        Ok(self.membership_response(resp.log_id.index))
    }

    async fn remove_node(
        &self,
        req: Request<proto::RemoveNodeRequest>,
    ) -> Result<Response<proto::MembershipResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, ClusterServiceClient::remove_node, write);
        let id = req.into_inner().node_id;
        let members: BTreeMap<u64, bool> = self.members().into_iter().map(|m| (m.id, m.voter)).collect();
        let change = match members.get(&id) {
            None => return Err(ApiError::NotFound(format!("node {id} is not a member")).into()),
            Some(true) => ChangeMembers::RemoveVoters(BTreeSet::from([id])),
            Some(false) => ChangeMembers::RemoveNodes(BTreeSet::from([id])),
        };
        let resp = self.ctx.raft.change_membership(change, false).await.map_err(ApiError::from)?;
        tracing::info!(node = id, "node removed");
        Ok(self.membership_response(resp.log_id.index))
    }

    type BackupStream = super::backup::BackupStream;

    async fn backup(&self, req: Request<proto::BackupRequest>) -> Result<Response<Self::BackupStream>, Status> {
        self.ctx.authorize(&req)?;
        super::backup::serve(&self.ctx, req).await
    }

    async fn trigger_snapshot(
        &self,
        req: Request<proto::TriggerSnapshotRequest>,
    ) -> Result<Response<proto::TriggerSnapshotResponse>, Status> {
        self.ctx.authorize(&req)?;
        self.ctx.raft.trigger().snapshot().await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Ok(Response::new(proto::TriggerSnapshotResponse {}))
    }
}
