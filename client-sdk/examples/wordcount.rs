//! A real sharded job: count words in a set of files, one shard per file,
//! and aggregate the per-shard results into the job's answer.
//!
//! Against a running cluster (`make dev` in another terminal, or
//! `deploy/local/cluster.sh start 3`):
//!
//! ```sh
//! cargo run -p baton-client --example wordcount -- README.md docs/*.md
//! ```
//!
//! It starts two workers in this process, submits the job, watches it, and
//! prints the total. Set BATON_ENDPOINTS to point elsewhere.

use std::time::Duration;

use baton_client::{Client, TaskContext, TaskError, Worker, proto};
use futures::StreamExt;

async fn count(ctx: TaskContext) -> Result<Vec<u8>, TaskError> {
    let text = std::str::from_utf8(&ctx.payload).map_err(TaskError::fatal)?;
    Ok(text.split_whitespace().count().to_string().into_bytes())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let files: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!files.is_empty(), "usage: wordcount FILE...");
    let endpoints: Vec<String> = std::env::var("BATON_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203".into())
        .split(',')
        .map(str::to_string)
        .collect();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for i in 0..2 {
        let w = Worker::builder()
            .endpoints(endpoints.clone())
            .name(format!("wordcount-{i}"))
            .capacity(4)
            .handler(count)
            .build()?;
        let mut rx = stop_rx.clone();
        workers.push(tokio::spawn(w.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }

    let client = Client::connect(endpoints)?;
    let payloads = files.iter().map(std::fs::read).collect::<Result<Vec<_>, _>>()?;
    let job = client
        .submit(proto::JobSpec {
            namespace: "examples".into(),
            name: "wordcount".into(),
            payloads,
            ..Default::default()
        })
        .await?;
    println!("job {} submitted with {} shards", job.job_id, job.shards);
    let mut events = Box::pin(client.watch(job.job_id));
    while let Some(ev) = events.next().await {
        let c = ev?.job.and_then(|j| j.counts).unwrap_or_default();
        println!("  done {}/{}  running {}", c.succeeded + c.dead, job.shards, c.running);
    }
    let results = client.results(job.job_id).await?;
    let mut total = 0u64;
    for (file, r) in files.iter().zip(&results) {
        let n: u64 = String::from_utf8_lossy(&r.result).parse().unwrap_or(0);
        println!("{n:>8}  {file}  (attempt {}, token {})", r.attempts, r.token);
        total += n;
    }
    println!("{total:>8}  total");
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }
    Ok(())
}
