//! Task execution logs: a handler logs through its context and through
//! `tracing` (with the SDK's bridge layer installed), its first attempt
//! fails, and the submitter reads back what each attempt logged.
//!
//! Against a running cluster (`make dev` in another terminal, or
//! `deploy/local/cluster.sh start 3`):
//!
//! ```sh
//! cargo run -p baton-client --example task_logs
//! baton job logs <printed job id>          # the same lines from the CLI
//! ```
//!
//! Set BATON_ENDPOINTS to point elsewhere.

use baton_client::{Client, TaskContext, TaskError, TaskLogLayer, Worker, proto};
use futures::StreamExt;
use tracing_subscriber::prelude::*;

async fn handle(ctx: TaskContext) -> Result<Vec<u8>, TaskError> {
    ctx.info(format!("attempt {} of shard {} starting", ctx.attempt, ctx.shard));
    // Any `tracing` event inside the handler goes to the task log too (and
    // to stderr through the fmt layer).
    tracing::info!(bytes = ctx.payload.len(), "read the payload");
    if ctx.attempt == 1 {
        ctx.warn("the first attempt fails on purpose; Baton retries it");
        return Err(TaskError::retryable("simulated failure"));
    }
    ctx.info("done");
    Ok(b"ok".to_vec())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The bridge: route events emitted inside a handler's span to its task
    // log. The filter sits on the output layer only, so it does not hide the
    // handler span from the bridge.
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(tracing_subscriber::EnvFilter::new("info")))
        .with(TaskLogLayer::new())
        .init();
    let endpoints: Vec<String> = std::env::var("BATON_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let worker = Worker::builder().endpoints(endpoints.clone()).name("task-logs-example").handler(handle).build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));

    let client = Client::connect(endpoints)?;
    let spec = proto::JobSpec {
        namespace: "examples".into(),
        name: "task-logs".into(),
        payloads: vec![b"hello".to_vec()],
        backoff_base_ms: 200,
        ..Default::default()
    };
    let job = client.submit(spec).await?.job_id;
    println!("job {job} submitted");
    let mut events = Box::pin(client.watch(job));
    while events.next().await.transpose()?.is_some() {}

    for record in client.task_logs(job, 0, None).await?.logs {
        println!("attempt {} (token {}):", record.attempt, record.token);
        if record.dropped > 0 {
            println!("  … {} lines dropped", record.dropped);
        }
        for line in record.lines {
            let level = proto::LogLevel::try_from(line.level).map(|l| l.as_str_name()).unwrap_or("?");
            println!("  {level:<17} {}", line.message);
        }
    }
    let _ = stop.send(());
    running.await??;
    Ok(())
}
