//! What the leader sends down worker streams: the proto messages for the
//! core's actions, and the status a stream is closed with.

use tokio::sync::mpsc;
use tonic::Status;

use baton_client::proto;
use baton_client::proto::coordinator_message::Msg;
use baton_raft_store::{Grant, NodeId, SessionId, TaskKey, Token};

use super::core::{CancelReason, CloseReason};
use crate::error::{ApiError, to_status};

/// What goes down a worker's stream.
pub type Outbound = mpsc::Sender<Result<proto::CoordinatorMessage, Status>>;

pub fn task_ref(t: TaskKey) -> proto::TaskRef {
    proto::TaskRef { job_id: t.job, shard: t.shard }
}

fn msg(m: Msg) -> proto::CoordinatorMessage {
    proto::CoordinatorMessage { msg: Some(m) }
}

pub fn assignment(
    g: &Grant,
    payload: Vec<u8>,
    deadline_in_ms: u64,
    workflow: Option<proto::WorkflowContext>,
) -> proto::CoordinatorMessage {
    msg(Msg::Assignment(proto::Assignment {
        task: Some(task_ref(g.task)),
        token: g.token,
        attempt: g.attempt,
        payload,
        deadline_ms: g.deadline_ms,
        deadline_in_ms,
        workflow,
    }))
}

pub fn cancel(task: TaskKey, token: Token, reason: CancelReason) -> proto::CoordinatorMessage {
    let reason = match reason {
        CancelReason::TimedOut => "attempt timed out",
        CancelReason::Revoked => "attempt no longer held by this session (job cancelled or attempt ended)",
    };
    msg(Msg::Cancel(proto::Cancel { task: Some(task_ref(task)), token, reason: reason.into() }))
}

pub fn heartbeat_ack(seq: u64) -> proto::CoordinatorMessage {
    msg(Msg::HeartbeatAck(proto::HeartbeatAck { seq }))
}

/// The status a closed stream ends with. `hint` names the leader, if known.
pub fn close_status(session: SessionId, reason: CloseReason, hint: Option<(NodeId, String)>) -> Status {
    to_status(match reason {
        CloseReason::NotLeader => ApiError::NotLeader { leader: hint },
        CloseReason::Replaced => ApiError::Aborted(format!("session {session} reattached on another stream")),
        CloseReason::Ended => ApiError::SessionEnded(format!("session {session} has ended; register again")),
        CloseReason::FellBehind => ApiError::Overloaded("worker stream fell behind; reconnect".into()),
    })
}
