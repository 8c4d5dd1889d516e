//! Who this node is: the node id its data dir serves as, the data dir's
//! incarnation, and the cluster it belongs to; and the admission check every
//! incoming Raft message passes.
//!
//! Why: Raft's safety rests on each voter remembering its vote and log. A
//! node whose data dir was wiped forgot both and could vote twice in a term;
//! a node of another cluster would mix two logs. Every Raft message names
//! the sender's cluster and the receiver's node id and incarnation as the
//! sender's membership records them; anything else is refused here, before
//! openraft sees it.

use std::sync::Mutex;

use baton_raft_store::{ClusterId, Incarnation, LogStore, NodeId, StoreError};

/// Why a message, or this node's start, was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "this data dir belongs to node {stored}, but the node was started as node {configured}: \
         fix node_id (or the hostname --node-id-from-ordinal reads), or give node {configured} a new data dir"
    )]
    WrongDataDir { stored: NodeId, configured: NodeId },
    #[error("refused a message from node {from} for node {to}: this is node {me} (a wrong address in the membership?)")]
    WrongNode { from: NodeId, to: NodeId, me: NodeId },
    #[error(
        "refused a message from node {from}: the membership records node {me} with incarnation {recorded}, \
         but this data dir is incarnation {mine}. The data dir was wiped or replaced since the node was added, \
         so it forgot its votes and log and must not take part under its old identity. To bring it back, \
         remove the node and add it again: `baton cluster remove-node --id {me}`, then `baton cluster add-node \
         --id {me} --raft-addr … --api-addr …` (and `baton cluster promote` to make it a voter)"
    )]
    WrongIncarnation { from: NodeId, me: NodeId, recorded: String, mine: Incarnation },
    #[error("refused a message from node {from} of cluster {theirs}: this node (node {me}) belongs to cluster {mine}")]
    OtherCluster { from: NodeId, me: NodeId, theirs: String, mine: ClusterId },
    #[error("refused a message from node {from}: it names no cluster, and this node belongs to none either")]
    NoCluster { from: NodeId },
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// This node's identity. Shared by the Raft client and server and the API.
pub struct Identity {
    node_id: NodeId,
    incarnation: Incarnation,
    /// `incarnation` as it travels, compared on every message.
    incarnation_hex: String,
    cluster: Mutex<Option<(ClusterId, String)>>,
    store: LogStore,
}

impl Identity {
    /// Load the data dir's identity, and give a new data dir its node id and
    /// a fresh incarnation. A data dir of another node id is refused.
    pub fn open(store: &LogStore, node_id: NodeId) -> Result<Identity, IdentityError> {
        match store.node_id()? {
            Some(stored) if stored != node_id => {
                return Err(IdentityError::WrongDataDir { stored, configured: node_id });
            }
            Some(_) => {}
            None => store.save_node_id(node_id)?,
        }
        let incarnation = match store.incarnation()? {
            Some(i) => i,
            None => {
                let i = Incarnation(rand::random());
                store.save_incarnation(i)?;
                i
            }
        };
        let cluster = store.cluster_id()?.map(|c| (c, c.to_string()));
        Ok(Identity {
            node_id,
            incarnation,
            incarnation_hex: incarnation.to_string(),
            cluster: Mutex::new(cluster),
            store: store.clone(),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.lock().as_ref().map(|(c, _)| *c)
    }

    /// The cluster id as messages carry it (empty while there is none).
    pub fn cluster_hex(&self) -> String {
        self.lock().as_ref().map(|(_, h)| h.clone()).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(ClusterId, String)>> {
        self.cluster.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id of the cluster this node is about to initialize: a new random
    /// one, or the one an interrupted initialization already stored. Durable
    /// before it returns, so it is never forgotten once peers may have seen it.
    pub fn found_cluster(&self) -> Result<ClusterId, IdentityError> {
        let mut g = self.lock();
        if let Some((c, _)) = g.as_ref() {
            return Ok(*c);
        }
        let id = ClusterId(rand::random());
        self.store.save_cluster_id(id)?;
        *g = Some((id, id.to_string()));
        Ok(id)
    }

    /// The check of an incoming Raft message: from node `from` of cluster
    /// `cluster`, for node `to` at incarnation `to_incarnation`. A node that
    /// belongs to no cluster yet joins the sender's: the sender could only
    /// name this incarnation after asking this node who it is (`Identify`),
    /// which happens when the node is initialized with it or added to it.
    pub fn admit(&self, from: NodeId, cluster: &str, to: NodeId, to_incarnation: &str) -> Result<(), IdentityError> {
        if to != self.node_id {
            return Err(IdentityError::WrongNode { from, to, me: self.node_id });
        }
        if to_incarnation != self.incarnation_hex {
            return Err(IdentityError::WrongIncarnation {
                from,
                me: self.node_id,
                recorded: to_incarnation.to_string(),
                mine: self.incarnation,
            });
        }
        let mut g = self.lock();
        match g.as_ref() {
            Some((_, mine)) if mine == cluster => Ok(()),
            Some((mine, _)) => Err(IdentityError::OtherCluster {
                from,
                me: self.node_id,
                theirs: if cluster.is_empty() { "<none>".into() } else { cluster.to_string() },
                mine: *mine,
            }),
            None => {
                let theirs: ClusterId = cluster.parse().map_err(|_| IdentityError::NoCluster { from })?;
                self.store.save_cluster_id(theirs)?;
                tracing::info!(cluster = %theirs, from, "joined the cluster");
                *g = Some((theirs, cluster.to_string()));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path, id: NodeId) -> (Identity, baton_raft_store::StateMachine) {
        let (log, sm) = baton_raft_store::open_store(dir).unwrap();
        (Identity::open(&log, id).unwrap(), sm)
    }

    #[test]
    fn a_new_node_joins_the_first_cluster_that_names_it_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let (me, _sm) = open(dir.path(), 2);
        let inc = me.incarnation().to_string();
        let a = ClusterId(0xa).to_string();
        let b = ClusterId(0xb).to_string();
        assert!(matches!(me.admit(1, &a, 3, &inc), Err(IdentityError::WrongNode { to: 3, me: 2, .. })));
        let e = me.admit(1, &a, 2, &Incarnation(9).to_string()).unwrap_err();
        assert!(e.to_string().contains("remove-node --id 2"), "{e}");
        assert_eq!(me.cluster_id(), None, "a refused message joins nothing");
        me.admit(1, &a, 2, &inc).unwrap();
        assert_eq!(me.cluster_id(), Some(ClusterId(0xa)));
        let e = me.admit(4, &b, 2, &inc).unwrap_err();
        assert!(e.to_string().contains(&a) && e.to_string().contains(&b), "names both clusters: {e}");
        drop((me, _sm));

        // All of it is durable.
        let (me, _sm) = open(dir.path(), 2);
        assert_eq!(me.incarnation().to_string(), inc);
        assert_eq!(me.cluster_id(), Some(ClusterId(0xa)));
    }

    #[test]
    fn a_data_dir_serves_one_node_id_and_a_founder_keeps_its_cluster_id() {
        let dir = tempfile::tempdir().unwrap();
        let (me, sm) = open(dir.path(), 1);
        let c = me.found_cluster().unwrap();
        assert_eq!(me.found_cluster().unwrap(), c);
        assert!(matches!(me.admit(2, "", 1, &me.incarnation().to_string()), Err(IdentityError::OtherCluster { .. })));
        drop((me, sm));
        let (log, _sm) = baton_raft_store::open_store(dir.path()).unwrap();
        let e = Identity::open(&log, 5).err().unwrap();
        assert!(matches!(e, IdentityError::WrongDataDir { stored: 1, configured: 5 }), "{e}");
        assert_eq!(Identity::open(&log, 1).unwrap().cluster_id(), Some(c));
    }
}
