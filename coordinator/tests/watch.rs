//! WatchJob: a watch whose client goes away gives its slot back even if the
//! job never changes, and a watch opened on a follower right after a submit
//! through the leader finds the job instead of answering NOT_FOUND.

mod common;

use std::time::{Duration, Instant};

use baton_client::{Client, ClientConfig, proto};
use common::*;
use futures::StreamExt;
use tonic::Streaming;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A small `limits.max_watches`, so a leak shows after a handful of watches.
const MAX_WATCHES: usize = 4;

/// How long a dropped watch may keep its slot: the server notices a closed
/// stream at once, this only absorbs scheduling on a busy test machine.
const SLOT_RELEASE_BOUND: Duration = Duration::from_secs(5);

fn few_watches() -> Opts {
    Opts { env: vec![("BATON_LIMITS__MAX_WATCHES".into(), MAX_WATCHES.to_string())], ..Opts::default() }
}

/// Open a watch on `node`, retrying while the node says its watch slots are
/// all taken, for at most `SLOT_RELEASE_BOUND`; return the stream and its
/// first event.
async fn watch_with_a_free_slot(c: &Cluster, node: u64, job: u64) -> (Streaming<proto::JobEvent>, proto::JobEvent) {
    let deadline = Instant::now() + SLOT_RELEASE_BOUND;
    loop {
        match c.jobs(node).await.watch_job(proto::WatchJobRequest { job_id: job }).await {
            Ok(r) => {
                let mut s = r.into_inner();
                let first = s.message().await.expect("first event").expect("stream open");
                return (s, first);
            }
            Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                assert!(Instant::now() < deadline, "watch slots not given back within {SLOT_RELEASE_BOUND:?}: {e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("watch refused: {e:?}"),
        }
    }
}

/// Every slot can be taken at once: none leaked.
async fn all_slots_free(c: &Cluster, node: u64, job: u64) {
    let mut held = Vec::new();
    for _ in 0..MAX_WATCHES {
        held.push(watch_with_a_free_slot(c, node, job).await.0);
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_dropped_on_an_unchanging_job_give_their_slots_back() {
    let c = Cluster::start(1, few_watches());
    let node = c.wait_leader(SECS(15)).await;
    // No worker: the job stays queued, so its watches never get a second event.
    let job = submit(&c, spec("quiet", 1, "quiet"), SECS(10)).await.job_id;
    for _ in 0..3 * MAX_WATCHES {
        let (stream, first) = watch_with_a_free_slot(&c, node, job).await;
        assert_eq!(first.job.unwrap().id, job);
        drop(stream);
    }
    all_slots_free(&c, node, job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_watch_dropped_by_its_consumer_gives_its_slot_back() {
    let c = Cluster::start(1, few_watches());
    let node = c.wait_leader(SECS(15)).await;
    let job = submit(&c, spec("quiet", 1, "quiet-sdk"), SECS(10)).await.job_id;
    let client = Client::new(ClientConfig::new(c.endpoints())).unwrap();
    for _ in 0..3 * MAX_WATCHES {
        let mut events = Box::pin(client.watch(job));
        // The SDK retries a refused watch, so a leaked slot shows as silence.
        let first = tokio::time::timeout(SLOT_RELEASE_BOUND, events.next())
            .await
            .expect("no SDK watch got a slot: earlier ones were not given back")
            .expect("an event")
            .expect("no error");
        assert_eq!(first.job.unwrap().id, job);
        drop(events);
        // The next raw watch must find a free slot: the SDK let go of its stream.
        drop(watch_with_a_free_slot(&c, node, job).await);
    }
    all_slots_free(&c, node, job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_follower_right_after_a_submit_through_the_leader_finds_the_job() {
    let c = Cluster::start(3, Opts::default());
    let leader = c.wait_leader(SECS(15)).await;
    let followers: Vec<u64> = c.live().into_iter().filter(|id| *id != leader).collect();
    let mut at_leader = c.jobs(leader).await;
    for i in 0..40 {
        let job = at_leader
            .submit_job(proto::SubmitJobRequest { spec: Some(spec("lag", 1, &format!("lag-{i}"))) })
            .await
            .expect("the leader acknowledges")
            .into_inner()
            .job_id;
        let follower = followers[i % followers.len()];
        let mut s = match c.jobs(follower).await.watch_job(proto::WatchJobRequest { job_id: job }).await {
            Ok(r) => r.into_inner(),
            Err(e) => panic!("watch {i} of acknowledged job {job} on follower {follower} refused: {e:?}"),
        };
        let first = s.message().await.expect("first event").expect("stream open");
        assert_eq!(first.job.unwrap().id, job);
    }
    // A job nobody knows is still NOT_FOUND, once the leader agrees.
    let e = c.jobs(followers[0]).await.watch_job(proto::WatchJobRequest { job_id: 9_999_999 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert_eq!(e.metadata().get("baton-error-code").unwrap(), "NOT_FOUND");
}
