//! A worker whose side effect lives outside Baton (a file per shard) and uses
//! the fencing token so that a zombie attempt can never overwrite the result of
//! a newer one.
//!
//! The sink keeps, next to each output, the highest token that ever wrote it,
//! and refuses a write carrying a lower token. Baton fences stale *reports*;
//! this is how an external sink fences stale *effects*. A real sink would do
//! the same check-and-write atomically: a conditional UPDATE, or an object
//! store write with a precondition.
//!
//! ```sh
//! cargo run -p baton-client --example fenced_sink -- /tmp/baton-sink
//! ```

use std::path::{Path, PathBuf};

use baton_client::{TaskContext, TaskError, Worker};

/// Write `data` for `key` unless a newer attempt (higher token) already did.
fn fenced_write(dir: &Path, key: &str, token: u64, data: &[u8]) -> Result<bool, std::io::Error> {
    let token_file = dir.join(format!("{key}.token"));
    // An exclusive lock would make check-and-write atomic across processes;
    // a rename of a temp file makes the data write atomic.
    let seen: u64 = std::fs::read_to_string(&token_file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    if token < seen {
        return Ok(false);
    }
    let tmp = dir.join(format!("{key}.tmp"));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, dir.join(key))?;
    std::fs::write(token_file, token.to_string())?;
    Ok(true)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "/tmp/baton-sink".into()));
    std::fs::create_dir_all(&dir)?;
    let endpoints: Vec<String> = std::env::var("BATON_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let sink = dir.clone();
    let worker = Worker::builder()
        .endpoints(endpoints)
        .name("fenced-sink")
        .capacity(4)
        .handler(move |ctx: TaskContext| {
            let sink = sink.clone();
            async move {
                let key = format!("job{}-shard{}", ctx.job_id, ctx.shard);
                let out = ctx.payload.to_ascii_uppercase();
                match fenced_write(&sink, &key, ctx.token, &out) {
                    Ok(true) => Ok(format!("wrote {key} with token {}", ctx.token).into_bytes()),
                    Ok(false) => Err(TaskError::fatal(format!("{key}: a newer attempt already wrote it"))),
                    Err(e) => Err(TaskError::retryable(e)),
                }
            }
        })
        .build()?;
    println!("writing shard outputs to {}; Ctrl-C stops", dir.display());
    let stats = worker
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!("{stats:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_token_never_overwrites_a_higher_one() {
        let dir = std::env::temp_dir().join(format!("fenced-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(fenced_write(&dir, "k", 10, b"new").unwrap());
        assert!(!fenced_write(&dir, "k", 7, b"zombie").unwrap());
        assert_eq!(std::fs::read(dir.join("k")).unwrap(), b"new");
        assert!(fenced_write(&dir, "k", 12, b"newer").unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
