//! WatchJob's machinery: finding the job on a node that may trail the
//! leader, and the per-watch loop that sends the job's view as the log
//! applies. Watches are served from this node's applied state, so they
//! survive leader changes; every event names the log index it reflects.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tonic::{Request, Status};

use baton_client::proto;
use baton_client::proto::job_service_client::JobServiceClient;
use baton_raft_store::{CommandError, JobId, JobRecord, NodeId, NodeInfo, StoreReader};

use super::{Call, Ctx, Route};
use crate::error::ApiError;

/// How long a new watch on a node that has not yet applied a job the leader
/// knows waits for its own apply, before answering LAGGING. A follower
/// normally trails the leader by one heartbeat (30 ms); much longer means it
/// is cut off or catching up, and the client does better elsewhere.
pub const WATCH_CATCH_UP_MS: u64 = 2_000;

pub(super) type RaftMetricsRx = watch::Receiver<openraft::RaftMetrics<NodeId, NodeInfo>>;

/// Make sure a new watch's job is known here. A follower may not yet have
/// applied a job the leader has just acknowledged: ask the leader (a
/// linearizable GetJob, forwarded once like other reads) and, if it knows
/// the job, wait up to `WATCH_CATCH_UP_MS` for this node's apply to reach
/// it. NOT_FOUND only when the leader does not know the job either.
pub(super) async fn await_job(ctx: &Ctx, req: &Request<proto::WatchJobRequest>, id: JobId) -> Result<(), Status> {
    await_known(
        ctx,
        req,
        &format!("job {id}"),
        |reader| {
            let (applied, job) = applied_and_job(reader, id);
            (applied, job.map(|j| j.is_some()))
        },
        |ch| async move {
            let ask = ctx.forwarded(req, proto::GetJobRequest { job_id: id, consistency: 0 });
            JobServiceClient::new(ch).get_job(ask).await.map(drop)
        },
        || CommandError::JobNotFound(id).into(),
    )
    .await
}

/// The catch-up of [`await_job`] for any record: `known` reads this node's
/// applied index and whether it holds the record; `ask_leader` reads the
/// record at the leader (a linearizable read, forwarded once); `not_found`
/// is the answer when the leader does not know it either.
pub(super) async fn await_known<T, Ask, AskFut>(
    ctx: &Ctx,
    req: &Request<T>,
    what: &str,
    known: impl Fn(&StoreReader) -> (u64, Result<bool, ApiError>),
    ask_leader: Ask,
    not_found: impl FnOnce() -> ApiError,
) -> Result<(), Status>
where
    Ask: FnOnce(tonic::transport::Channel) -> AskFut,
    AskFut: std::future::Future<Output = Result<(), Status>>,
{
    if known(&ctx.reader).1? {
        return Ok(());
    }
    match ctx.read_route(req, false).await? {
        // The leader, after a read barrier: what it has not applied does not exist.
        Route::Here => {
            return if known(&ctx.reader).1? { Ok(()) } else { Err(not_found().into()) };
        }
        Route::Forward(ch) => ask_leader(ch).await.map_err(|s| ctx.forward_failed(s, Call::Read))?,
    }
    let catch_up = async {
        let mut metrics = ctx.raft.metrics();
        loop {
            let (applied, found) = known(&ctx.reader);
            if found? {
                return Ok::<(), ApiError>(());
            }
            applied_beyond(&mut metrics, applied).await?;
        }
    };
    match tokio::time::timeout(Duration::from_millis(WATCH_CATCH_UP_MS), catch_up).await {
        Ok(r) => r.map_err(Status::from),
        Err(_) => Err(ApiError::Lagging(format!(
            "{what} is known to the leader but this node has not applied it within {WATCH_CATCH_UP_MS} ms"
        ))
        .into()),
    }
}

/// This node's applied index and the job as of that index, read together.
fn applied_and_job(reader: &StoreReader, id: JobId) -> (u64, Result<Option<JobRecord>, ApiError>) {
    reader.read(|core, kv| (core.meta.last_applied.map_or(0, |l| l.index), core.job(kv, id).map_err(ApiError::from)))
}

/// Wait until this node applies an entry past `index`. Raft republishes its
/// metrics many times a second (heartbeats, replication progress); only a
/// new applied index wakes the caller, so idle watches cost nothing.
pub(super) async fn applied_beyond(metrics: &mut RaftMetricsRx, index: u64) -> Result<(), ApiError> {
    metrics
        .wait_for(|m| m.last_applied.is_some_and(|l| l.index > index))
        .await
        .map(drop)
        .map_err(|_| ApiError::Unavailable("node is shutting down".into()))
}

/// Send the job's view each time an applied entry changes it, until it
/// finishes. Intermediate states between two wake-ups are coalesced.
pub(super) async fn watch_loop(
    reader: &StoreReader,
    mut metrics: RaftMetricsRx,
    id: JobId,
    tx: &mpsc::Sender<Result<proto::JobEvent, Status>>,
) {
    let mut last: Option<proto::Job> = None;
    loop {
        let (applied, job) = applied_and_job(reader, id);
        let job = match job {
            Ok(Some(j)) => j,
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        let view = super::jobs::job_view(reader, &job);
        if last.as_ref() != Some(&view) {
            let done = job.finished_ms.is_some();
            if tx.send(Ok(proto::JobEvent { job: Some(view.clone()), applied_index: applied })).await.is_err() || done {
                return;
            }
            last = Some(view);
        }
        if applied_beyond(&mut metrics, applied).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
