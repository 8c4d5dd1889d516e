//! The HTTP side port: Prometheus `/metrics`, liveness `/healthz`, and
//! readiness `/readyz` (a leader is known and this node has caught up).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use baton_raft_store::{Raft, StoreReader};

/// A node is ready while it is at most this many entries behind its own log.
pub const READY_MAX_APPLY_LAG: u64 = 10_000;
/// How often Raft and table gauges are refreshed.
pub const GAUGE_PERIOD: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct AppState {
    raft: Raft,
    prom: PrometheusHandle,
}

pub fn router(raft: Raft, prom: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { raft, prom })
}

async fn metrics(State(s): State<AppState>) -> String {
    s.prom.render()
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    let m = s.raft.metrics().borrow().clone();
    let applied = m.last_applied.map_or(0, |l| l.index);
    let last = m.last_log_index.unwrap_or(0);
    match m.current_leader {
        None => (StatusCode::SERVICE_UNAVAILABLE, "no leader\n".into()),
        Some(_) if last.saturating_sub(applied) > READY_MAX_APPLY_LAG => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("catching up: applied {applied} of {last}\n"))
        }
        Some(l) => (StatusCode::OK, format!("ready; leader {l}, applied {applied}\n")),
    }
}

/// Refresh gauges from Raft metrics and the table's indexes, forever.
pub async fn gauges(raft: Raft, reader: StoreReader) {
    let mut tick = tokio::time::interval(GAUGE_PERIOD);
    loop {
        tick.tick().await;
        let m = raft.metrics().borrow().clone();
        metrics::gauge!("baton_raft_term").set(m.current_term as f64);
        metrics::gauge!("baton_raft_leader_id").set(m.current_leader.unwrap_or(0) as f64);
        metrics::gauge!("baton_raft_is_leader").set(if m.state.is_leader() { 1.0 } else { 0.0 });
        let last = m.last_log_index.unwrap_or(0);
        metrics::gauge!("baton_raft_last_log_index").set(last as f64);
        metrics::gauge!("baton_raft_applied_index").set(m.last_applied.map_or(0, |l| l.index) as f64);
        if let Ok(Some(c)) = raft.with_raft_state(|st| st.committed).await {
            metrics::gauge!("baton_raft_commit_index").set(c.index as f64);
        }
        if let Some(rep) = &m.replication {
            for (peer, matched) in rep {
                let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
                metrics::gauge!("baton_raft_replication_lag", "peer" => peer.to_string()).set(lag as f64);
            }
        }
        let (pending, assigned, jobs, workers, gc_queued, gc_lag_ms) = reader.read(|c, _| {
            let pending: usize = c.idx.pending.values().map(|m| m.len()).sum();
            let assigned: usize = c.idx.by_session.values().map(|s| s.len()).sum();
            // How far the oldest queued target is past its time: a collector
            // that keeps up holds this near zero under any load.
            let lag = c.idx.expiry.first().map_or(0, |(at, _)| c.meta.clock_ms.saturating_sub(*at));
            (pending, assigned, c.idx.jobs.len(), c.idx.sessions.len(), c.idx.expiry.len(), lag)
        });
        metrics::gauge!("baton_tasks", "state" => "pending").set(pending as f64);
        metrics::gauge!("baton_tasks", "state" => "running").set(assigned as f64);
        metrics::gauge!("baton_live_jobs").set(jobs as f64);
        metrics::gauge!("baton_live_workers").set(workers as f64);
        metrics::gauge!("baton_gc_queued").set(gc_queued as f64);
        metrics::gauge!("baton_gc_lag_ms").set(gc_lag_ms as f64);
    }
}

/// Blocking GET of `http://{addr}/readyz`; true on a 200. Used by
/// `baton healthcheck`, so container images need no HTTP client.
pub fn probe_ready(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(addrs) = std::net::ToSocketAddrs::to_socket_addrs(addr) else { return false };
    for a in addrs {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)) else { continue };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(format!("GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).is_err() {
            continue;
        }
        let mut head = [0u8; 12];
        if s.read_exact(&mut head).is_ok() {
            return head.starts_with(b"HTTP/1.") && &head[9..12] == b"200";
        }
    }
    false
}
