//! What a workflow step's handler reads: its predecessors' results and, for
//! a reduce, the map's shard results. Results are read page by page with
//! GetResults through the worker's one shared [`Client`], and streamed:
//! a reduce over any number of shards holds one page at a time.

use std::collections::VecDeque;

use futures::{Stream, StreamExt};

use super::TaskContext;
use crate::client::Client;
use crate::error::Error;
use crate::proto;

/// Shards per GetResults page when streaming inputs (a reduce's input
/// page; the only definition, the cluster never sees it): large enough that
/// a 10,000-shard map is 10 round trips, small enough that a page of 1 MiB
/// results is bounded by the server's page byte limit anyway. It must be a
/// page GetResults serves (`RESULTS_PAGE_MAX` in the coordinator; checked by
/// its `the_sdk_reduce_input_page_is_one_get_results_serves` test).
pub const REDUCE_INPUT_PAGE_SHARDS: u32 = 1000;

impl TaskContext {
    /// Set when this shard belongs to a workflow step: the workflow, the
    /// step, its role (generator, map or reduce) and its inputs.
    pub fn workflow(&self) -> Option<&proto::WorkflowContext> {
        self.workflow.as_deref()
    }

    /// The worker's client, to call the cluster from a handler.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The result of predecessor `step`: shard 0 of its output (its reduce,
    /// or its only shard). [`Error::InvalidArgument`] when `step` is not a
    /// succeeded predecessor of this step.
    pub async fn input(&self, step: &str) -> Result<Vec<u8>, Error> {
        let input = self.input_of(step)?;
        let page = self.client.results_page(input.job_id, 0, 1).await?;
        match page.results.into_iter().next() {
            Some(r) if r.status == proto::TaskStatus::Succeeded as i32 => Ok(r.result),
            Some(r) => Err(Error::FailedPrecondition(format!(
                "shard 0 of job {} (the output of step {step:?}) is {:?}, not succeeded",
                input.job_id,
                proto::TaskStatus::try_from(r.status).unwrap_or(proto::TaskStatus::Unspecified)
            ))),
            None => Err(Error::Internal(format!("job {} (the output of step {step:?}) has no shard 0", input.job_id))),
        }
    }

    /// Every shard result of predecessor `step`'s output, in shard order,
    /// one page at a time. The stream's only item is an error when `step`
    /// is not a succeeded predecessor.
    pub fn input_results(&self, step: &str) -> impl Stream<Item = Result<proto::ShardResult, Error>> + Send + 'static {
        let (job, shards, err) = match self.input_of(step) {
            Ok(i) => (i.job_id, i.shards, None),
            Err(e) => (0, 0, Some(e)),
        };
        results(self.client.clone(), job, shards, err)
    }

    /// For a reduce: the map's shard results, in shard order, one page of
    /// [`REDUCE_INPUT_PAGE_SHARDS`] at a time (never all in one buffer).
    /// Empty when a dynamic map emitted no shards; the only item is an error
    /// when this shard is not a reduce.
    pub fn reduce_input(&self) -> impl Stream<Item = Result<proto::ShardResult, Error>> + Send + 'static {
        let (job, shards, err) = match self.workflow() {
            Some(w) if w.role == proto::StepRole::Reduce as i32 => (w.reduce_of_job_id, w.reduce_of_shards, None),
            _ => (0, 0, Some(Error::InvalidArgument(format!("job {} is not a workflow step's reduce", self.job_id)))),
        };
        results(self.client.clone(), job, shards, err)
    }

    fn input_of(&self, step: &str) -> Result<&proto::StepOutput, Error> {
        let w = self.workflow().ok_or_else(|| {
            Error::InvalidArgument(format!("job {} is not a workflow step's; it has no inputs", self.job_id))
        })?;
        w.inputs.iter().find(|i| i.step == step).ok_or_else(|| {
            let names: Vec<&str> = w.inputs.iter().map(|i| i.step.as_str()).collect();
            Error::InvalidArgument(format!(
                "step {step:?} is not an input of step {:?}; its inputs are {names:?} (succeeded predecessors)",
                w.step
            ))
        })
    }
}

/// Paging state of one result stream.
struct Pages {
    client: Client,
    job: u64,
    /// The job's shard count; 0 when unknown (then paging ends at an empty page).
    shards: u32,
    next: u32,
    buf: VecDeque<proto::ShardResult>,
    done: bool,
}

/// The shard results of `job` as a stream of pages: `err` instead, if set;
/// nothing for job 0.
fn results(
    client: Client,
    job: u64,
    shards: u32,
    err: Option<Error>,
) -> impl Stream<Item = Result<proto::ShardResult, Error>> + Send + 'static {
    let state = Pages { client, job, shards, next: 0, buf: VecDeque::new(), done: job == 0 };
    let pages = futures::stream::unfold(state, |mut p| async move {
        loop {
            if let Some(r) = p.buf.pop_front() {
                return Some((Ok(r), p));
            }
            if p.done || (p.shards > 0 && p.next >= p.shards) {
                return None;
            }
            match p.client.results_page(p.job, p.next, REDUCE_INPUT_PAGE_SHARDS).await {
                Ok(page) => {
                    if page.results.is_empty() {
                        return None;
                    }
                    // The server always advances; end with an error rather than spin.
                    if page.next_shard <= p.next {
                        p.done = true;
                        let e = Error::Internal(format!(
                            "results of job {}: page from shard {} did not advance (next_shard {})",
                            p.job, p.next, page.next_shard
                        ));
                        return Some((Err(e), p));
                    }
                    p.next = page.next_shard;
                    p.buf = page.results.into();
                }
                Err(e) => {
                    p.done = true;
                    return Some((Err(e), p));
                }
            }
        }
    });
    futures::stream::iter(err.map(Err)).chain(pages)
}
