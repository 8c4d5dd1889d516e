//! Reading results bigger than one GetResults page: the server bounds a page
//! by bytes, and the SDK follows `next_shard` to the end.

mod common;

use std::time::Duration;

use baton_client::{Client, ClientConfig, Worker, proto};
use baton_raft_store::limits::MAX_RESULT_BYTES;
use common::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;
/// Six results of the largest size: more than one 4 MiB page.
const SHARDS: u32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_larger_than_a_page_are_read_whole_through_the_sdk() {
    let c = Cluster::start(1, Opts::default());
    c.wait_leader(SECS(15)).await;
    let worker = Worker::builder()
        .endpoints(c.endpoints())
        .name("big-results")
        .capacity(2)
        .handler(|ctx: baton_client::TaskContext| async move { Ok(vec![ctx.shard as u8; MAX_RESULT_BYTES]) })
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let w = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));
    let mut cfg = ClientConfig::new(c.endpoints());
    cfg.deadline = SECS(30);
    let cl = Client::new(cfg).unwrap();
    let spec = proto::JobSpec { namespace: "big".into(), shards: SHARDS, ..Default::default() };
    let job = cl.submit(spec).await.unwrap().job_id;
    let done = wait_job_done(&c, job, SECS(60)).await;
    assert_eq!(done.status, proto::JobStatus::Succeeded as i32, "{done:?}");

    // One raw page stops early, by bytes, and says where to go on.
    let page = c
        .jobs(1)
        .await
        .get_results(proto::GetResultsRequest { job_id: job, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(!page.results.is_empty() && page.results.len() < SHARDS as usize, "{} results", page.results.len());
    assert_eq!(page.next_shard, page.results.len() as u32);

    let results = cl.results(job).await.unwrap();
    assert_eq!(results.iter().map(|r| r.shard).collect::<Vec<_>>(), (0..SHARDS).collect::<Vec<_>>());
    for r in &results {
        assert_eq!(r.status, proto::TaskStatus::Succeeded as i32);
        assert!(
            r.result.len() == MAX_RESULT_BYTES && r.result.iter().all(|b| *b == r.shard as u8),
            "shard {}",
            r.shard
        );
    }
    stop_tx.send(()).unwrap();
    w.await.unwrap().unwrap();
}
