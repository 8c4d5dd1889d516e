//! Node lifecycle: open the store and the node's identity, start Raft and
//! the services, form a brand-new cluster exactly once (`bootstrap.rs`), and
//! shut down gracefully.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::{ChangeMembers, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use baton_client::proto;
use baton_raft_store::{Raft, StoreError, open_store};

use crate::api::{
    Ctx, cluster::Cluster, events::Events, jobs::Jobs, schedules::Schedules, workers::Workers, workflows::Workflows,
};
use crate::bootstrap::BootstrapError;
use crate::config::{Config, ConfigError};
use crate::identity::{Identity, IdentityError};
use crate::network::{MAX_RAFT_MESSAGE_BYTES, Network, RaftServer, pb::raft_service_server::RaftServiceServer};
use crate::proposer::Proposer;
use crate::tls::Port;
use crate::tls::TlsState;
use crate::tls::accept::{incoming, require_tls};
use tonic::service::InterceptorLayer;

/// Largest header block an API call may send (64 KiB). hyper's default
/// (16 KiB) equals the longest credential the auth layer reads
/// (`auth::MAX_CREDENTIAL_BYTES`), so a long credential was refused by
/// HTTP/2 with a bare status 431, which clients see as UNKNOWN, before the
/// auth layer could say what is wrong. With room above it, a too-long
/// credential gets UNAUTHENTICATED naming the bound; only a header block
/// past this limit is still refused by HTTP/2.
pub const MAX_REQUEST_HEADER_BYTES: u32 = 64 * 1024;
const _: () = assert!(MAX_REQUEST_HEADER_BYTES as usize > 2 * crate::auth::MAX_CREDENTIAL_BYTES);

/// How long a graceful shutdown waits for in-flight calls and for leaving.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("server {what} failed: {reason}")]
    Serve { what: &'static str, reason: String },
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthLoadError),
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

fn raft_config(cfg: &Config) -> Result<Arc<openraft::Config>, NodeError> {
    let r = &cfg.raft;
    let c = openraft::Config {
        cluster_name: "baton".into(),
        heartbeat_interval: r.heartbeat_interval_ms,
        election_timeout_min: r.election_timeout_min_ms,
        election_timeout_max: r.election_timeout_max_ms,
        install_snapshot_timeout: r.rpc_timeout_ms.max(5_000),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(r.snapshot_after_entries),
        max_in_snapshot_log_to_keep: r.keep_logs_after_snapshot,
        ..Default::default()
    };
    c.validate().map(Arc::new).map_err(|e| NodeError::Raft(e.to_string()))
}

/// Accepted connections with Nagle off: Raft replies and pushed assignments
/// are small messages that must not wait for a delayed ACK (a 40 ms stall).
async fn bind(
    addr: std::net::SocketAddr,
) -> Result<impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static, NodeError> {
    use tokio_stream::StreamExt;
    let l = TcpListener::bind(addr).await.map_err(|source| NodeError::Bind { addr, source })?;
    Ok(TcpListenerStream::new(l).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok(s)
    }))
}

/// Run a node until `shutdown` resolves.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), NodeError> {
    cfg.validate()?;
    let auth = match &cfg.auth {
        Some(a) => Some(Arc::new(crate::auth::Authenticator::load(a)?)),
        None => {
            tracing::warn!(api = %cfg.api_listen, "no [auth] configured: the API is open to anyone who can reach it");
            None
        }
    };
    let cfg = Arc::new(cfg);
    let prom = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| NodeError::Serve { what: "metrics", reason: e.to_string() })?;

    let tls = match &cfg.tls {
        Some(t) => Some(TlsState::new(t.clone())?),
        None => {
            tracing::warn!("no [tls] configured: the api and raft ports are plaintext and unauthenticated");
            None
        }
    };
    // Bind first: a taken port fails the start instead of a half-up node.
    let raft_listener = incoming(bind(cfg.raft_listen).await?, tls.clone(), Port::Raft);
    let api_listener = incoming(bind(cfg.api_listen).await?, tls.clone(), Port::Api);
    let http_listener =
        TcpListener::bind(cfg.http_listen).await.map_err(|source| NodeError::Bind { addr: cfg.http_listen, source })?;

    let (log, sm) = open_store(&cfg.data_dir)?;
    let appended = log.appended_bytes();
    let identity = Arc::new(Identity::open(&log, cfg.node_id)?);
    let reader = sm.reader();
    let network = Network { identity: identity.clone(), tls: tls.clone() };
    let raft = Raft::new(cfg.node_id, raft_config(&cfg)?, network, log, sm)
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
    crate::bootstrap::check_second_init(&cfg, &raft, &identity).await?;

    let clock = Arc::new(crate::clock::NodeClock::default());
    let proposer = Proposer::spawn(raft.clone(), &cfg.limits, clock.clone());
    let leader = crate::leader::spawn(cfg.clone(), raft.clone(), reader.clone(), proposer.clone(), clock);
    let ctx = Ctx::new(cfg.clone(), raft.clone(), reader.clone(), proposer, leader, identity.clone(), tls.clone());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let raft_srv = tonic::transport::Server::builder()
        .layer(InterceptorLayer::new(require_tls(tls.is_some())))
        .add_service(
            RaftServiceServer::new(RaftServer::new(raft.clone(), identity.clone()))
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(raft_listener, stopped(stop_rx.clone()));

    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<proto::job_service_server::JobServiceServer<Jobs>>().await;
    health.set_serving::<proto::worker_service_server::WorkerServiceServer<Workers>>().await;
    health.set_serving::<proto::cluster_service_server::ClusterServiceServer<Cluster>>().await;
    health.set_serving::<proto::workflow_service_server::WorkflowServiceServer<Workflows>>().await;
    health.set_serving::<proto::schedule_service_server::ScheduleServiceServer<Schedules>>().await;
    health.set_serving::<proto::event_service_server::EventServiceServer<Events>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| NodeError::Serve { what: "reflection", reason: e.to_string() })?;
    let max = cfg.limits.max_request_bytes;
    let api_srv = tonic::transport::Server::builder()
        .http2_max_header_list_size(MAX_REQUEST_HEADER_BYTES)
        // The first layer added is the outermost: a plaintext caller on a
        // TLS port hears that first, whatever its credential.
        .layer(InterceptorLayer::new(require_tls(tls.is_some())))
        // No handler runs before the auth layer decided (auth/layer.rs).
        .layer(crate::auth::AuthLayer::new(auth))
        .add_service(health_svc)
        .add_service(reflection)
        .add_service(
            proto::job_service_server::JobServiceServer::new(Jobs { ctx: ctx.clone() }).max_decoding_message_size(max),
        )
        .add_service(
            proto::workflow_service_server::WorkflowServiceServer::new(Workflows { ctx: ctx.clone() })
                .max_decoding_message_size(max),
        )
        .add_service(
            proto::schedule_service_server::ScheduleServiceServer::new(Schedules { ctx: ctx.clone() })
                .max_decoding_message_size(max),
        )
        .add_service(
            proto::event_service_server::EventServiceServer::new(Events { ctx: ctx.clone() })
                .max_decoding_message_size(max),
        )
        .add_service(
            proto::worker_service_server::WorkerServiceServer::new(Workers { ctx: ctx.clone() })
                .max_decoding_message_size(max),
        )
        .add_service(
            proto::cluster_service_server::ClusterServiceServer::new(Cluster { ctx: ctx.clone() })
                .max_decoding_message_size(max),
        )
        .serve_with_incoming_shutdown(api_listener, stopped(stop_rx.clone()));

    let http_srv = axum::serve(http_listener, crate::http::router(raft.clone(), prom))
        .with_graceful_shutdown(stopped(stop_rx.clone()));
    let gauges = tokio::spawn(crate::http::gauges(raft.clone(), reader));
    let snapshots =
        tokio::spawn(crate::snapshot_trigger::run(raft.clone(), appended, cfg.raft.snapshot_after_log_bytes));
    let reload = tls.clone().map(|t| tokio::spawn(t.watch()));

    // Forms a new cluster when this node should, while the servers run
    // (the other members answer `Identify` on their Raft port).
    let formation = {
        let (cfg, raft, identity, stop) = (cfg.clone(), raft.clone(), identity.clone(), stop_rx.clone());
        let tls = tls.clone();
        async move {
            tokio::select! {
                r = crate::bootstrap::form(cfg, raft, identity, tls) => r.map_err(NodeError::from),
                _ = stopped(stop) => Ok(()),
            }
        }
    };

    tracing::info!(
        node = cfg.node_id,
        incarnation = %identity.incarnation(),
        cluster = %identity.cluster_id().map_or_else(|| "none yet".to_string(), |c| c.to_string()),
        raft = %cfg.raft_listen,
        api = %cfg.api_listen,
        http = %cfg.http_listen,
        tls = tls.is_some(),
        data = %cfg.data_dir.display(),
        "node started"
    );
    let servers = async {
        tokio::try_join!(
            async { raft_srv.await.map_err(|e| NodeError::Serve { what: "raft", reason: e.to_string() }) },
            async { api_srv.await.map_err(|e| NodeError::Serve { what: "api", reason: e.to_string() }) },
            async { http_srv.await.map_err(|e| NodeError::Serve { what: "http", reason: e.to_string() }) },
            formation,
        )
    };
    tokio::pin!(servers);
    let result = tokio::select! {
        r = &mut servers => r.map(|_| ()),
        _ = shutdown => {
            tracing::info!(node = cfg.node_id, "shutting down");
            if cfg.leave_on_shutdown {
                leave(&ctx).await;
            }
            let _ = stop_tx.send(true);
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut servers).await {
                Ok(r) => r.map(|_| ()),
                Err(_) => {
                    tracing::warn!("servers did not stop within the grace period");
                    Ok(())
                }
            }
        }
    };
    gauges.abort();
    snapshots.abort();
    if let Some(r) = reload {
        r.abort();
    }
    // Stops openraft; the log store's syncer flushes before the store is dropped.
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    tracing::info!(node = cfg.node_id, "stopped");
    result
}

/// Remove this node from the membership before stopping (`leave_on_shutdown`).
async fn leave(ctx: &Ctx) {
    let me = ctx.cfg.node_id;
    let work = async {
        if ctx.is_leader() {
            ctx.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([me])), false)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else if let Some((_, addr)) = ctx.leader_hint() {
            let mut c = proto::cluster_service_client::ClusterServiceClient::new(
                ctx.channel(&addr).map_err(|e| e.to_string())?,
            );
            c.remove_node(proto::RemoveNodeRequest { node_id: me }).await.map(|_| ()).map_err(|e| e.to_string())
        } else {
            Err("no leader known".to_string())
        }
    };
    match tokio::time::timeout(SHUTDOWN_GRACE, work).await {
        Ok(Ok(())) => tracing::info!(node = me, "left the cluster"),
        Ok(Err(e)) => tracing::warn!(node = me, error = %e, "could not leave the cluster"),
        Err(_) => tracing::warn!(node = me, "leaving the cluster timed out"),
    }
}
