use std::pin::pin;

use futures::poll;
use openraft::{CommittedLeaderId, LogId, RaftMetrics};

use super::*;

fn applied(index: u64) -> Option<LogId<NodeId>> {
    Some(LogId::new(CommittedLeaderId::new(1, 1), index))
}

#[tokio::test]
async fn only_a_new_applied_index_wakes_a_watch() {
    let (tx, mut rx) = watch::channel(RaftMetrics::<NodeId, NodeInfo>::new_initial(1));
    tx.send_modify(|m| m.last_applied = applied(5));
    let mut woken = pin!(applied_beyond(&mut rx, 5));
    assert!(poll!(woken.as_mut()).is_pending());
    // Raft republishes metrics for heartbeats, terms, replication: no wake-up.
    tx.send_modify(|m| m.current_term = 2);
    tx.send_modify(|m| m.millis_since_quorum_ack = Some(7));
    tx.send_modify(|m| m.last_applied = applied(5));
    assert!(poll!(woken.as_mut()).is_pending());
    tx.send_modify(|m| m.last_applied = applied(6));
    assert!(matches!(poll!(woken.as_mut()), std::task::Poll::Ready(Ok(()))));
}

#[tokio::test]
async fn a_node_shutting_down_ends_the_wait() {
    let (tx, mut rx) = watch::channel(RaftMetrics::<NodeId, NodeInfo>::new_initial(1));
    drop(tx);
    assert!(matches!(applied_beyond(&mut rx, 0).await, Err(ApiError::Unavailable(_))));
}
