//! `ClusterService.Backup`: the leader streams a backup file of its applied
//! state (format: `baton_raft_store::backup`), read from one pinned RocksDB
//! snapshot on a blocking thread while apply() goes on.

use std::io::Write;
use std::pin::Pin;

use futures::Stream;
use tokio::sync::{Semaphore, mpsc};
use tonic::{Request, Response, Status};

use baton_client::proto;

use super::Ctx;
use crate::error::{ApiError, to_status};

/// Bytes per streamed message (1 MiB): a quarter of a gRPC client's default
/// 4 MiB message limit, large enough that per-message overhead is noise.
pub const BACKUP_CHUNK_BYTES: usize = 1024 * 1024;
/// Chunks queued between the writer and the stream. With the chunk being
/// filled and the writer's buffer this bounds a backup's memory at about
/// six chunks, whatever the size of the state; a slow client slows the
/// writer instead.
pub const BACKUP_QUEUE_CHUNKS: usize = 4;
/// Backups running at once on a node. Each pins a RocksDB snapshot (old
/// versions stay on disk until it ends) and reads the whole table twice.
pub const MAX_CONCURRENT_BACKUPS: usize = 2;

static RUNNING: Semaphore = Semaphore::const_new(MAX_CONCURRENT_BACKUPS);

pub type BackupStream = Pin<Box<dyn Stream<Item = Result<proto::BackupChunk, Status>> + Send>>;

/// Serve a backup. Leader only: after the read barrier, the pinned state
/// holds every write acknowledged before the call.
pub async fn serve(ctx: &Ctx, _req: Request<proto::BackupRequest>) -> Result<Response<BackupStream>, Status> {
    if !ctx.is_leader() {
        return Err(ApiError::NotLeader { leader: ctx.leader_hint() }.into());
    }
    let permit = RUNNING.try_acquire().map_err(|_| {
        ApiError::Exhausted(format!("{MAX_CONCURRENT_BACKUPS} backups are already running on this node"))
    })?;
    ctx.linearize().await?;
    let cluster_id =
        ctx.identity.cluster_id().ok_or_else(|| ApiError::Unavailable("this node belongs to no cluster yet".into()))?;
    let taken_at_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let (tx, rx) = mpsc::channel(BACKUP_QUEUE_CHUNKS);
    let reader = ctx.reader.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let sink = ChunkSink { tx: tx.clone(), buf: Vec::with_capacity(BACKUP_CHUNK_BYTES) };
        match reader.write_backup(cluster_id, taken_at_ms, sink) {
            Ok((header, records)) => tracing::info!(
                last_applied = ?header.last_applied,
                records,
                %cluster_id,
                "backup streamed"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "backup ended early");
                let _ = tx.blocking_send(Err(to_status(ApiError::from(e))));
            }
        }
    });
    Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
}

/// Cuts the backup's bytes into [`BACKUP_CHUNK_BYTES`] messages; blocks
/// while the queue is full. Errors once the client has gone away, which
/// ends the backup and releases its snapshot.
struct ChunkSink {
    tx: mpsc::Sender<Result<proto::BackupChunk, Status>>,
    buf: Vec<u8>,
}

impl ChunkSink {
    fn send(&mut self) -> std::io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BACKUP_CHUNK_BYTES));
        self.tx
            .blocking_send(Ok(proto::BackupChunk { data }))
            .map_err(|_| std::io::Error::other("the backup's client went away"))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(BACKUP_CHUNK_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BACKUP_CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() { Ok(()) } else { self.send() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_sends_full_chunks_then_the_rest_on_flush() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut sink = ChunkSink { tx, buf: Vec::new() };
        let data = vec![7u8; BACKUP_CHUNK_BYTES * 2 + 10];
        sink.write_all(&data).unwrap();
        sink.flush().unwrap();
        sink.flush().unwrap();
        let sizes: Vec<usize> = std::iter::from_fn(|| rx.try_recv().ok()).map(|c| c.unwrap().data.len()).collect();
        assert_eq!(sizes, vec![BACKUP_CHUNK_BYTES, BACKUP_CHUNK_BYTES, 10]);
        drop(rx);
        assert!(sink.write_all(&data).is_err(), "a gone client ends the backup");
    }
}
