//! `Client`: submit and watch jobs, and operate the cluster.
//!
//! Every call goes through one retry loop. It tries the last known leader
//! first (learned from `baton-leader-addr` hints), otherwise the endpoints in
//! turn, and retries retryable failures with exponential backoff and full
//! jitter until the client's deadline. Writes whose outcome is unknown are
//! retried only when that is safe: submissions always carry an idempotency key,
//! so a retried submit never creates a second job.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use rand::Rng;
use tonic::service::interceptor::InterceptedService;

use crate::error::{Error, LEADER_ADDR_HEADER, codes, leader_hint};
use crate::proto;
use crate::proto::cluster_service_client::ClusterServiceClient;
use crate::proto::job_service_client::JobServiceClient;
use crate::proto::worker_service_client::WorkerServiceClient;
use crate::tls::{TlsOptions, normalize_url};

/// Largest response accepted (a page of results can hold large shard results).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Events buffered for a `watch` consumer.
pub const WATCH_BUFFER: usize = 64;
/// Shards fetched per GetResults page.
pub const RESULTS_PAGE: u32 = 1000;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` or `http://host:port` of any cluster nodes.
    pub endpoints: Vec<String>,
    /// Total time a call may spend retrying.
    pub deadline: Duration,
    /// Deadline of one attempt.
    pub rpc_timeout: Duration,
    pub connect_timeout: Duration,
    /// First retry delay; doubles per attempt up to `backoff_max` (full jitter).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Bearer token sent as `authorization: Bearer <token>` on every call
    /// and worker session, for clusters with `[auth]` on.
    pub token: Option<String>,
    /// TLS settings; `Some`, or an `https://` endpoint, makes every
    /// connection TLS (see [`crate::tls`]).
    pub tls: Option<TlsOptions>,
    /// How many times a call refused by a namespace quota
    /// ([`Error::QuotaExceeded`]) is tried again, each after the server's
    /// retry-after hint, within `deadline`. Default 0: the refusal is
    /// returned at once, so a caller over its quota hears it instead of
    /// waiting in the SDK.
    pub quota_retries: u32,
}

/// Metadata key of the credential.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// Adds the configured bearer token to every call.
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

impl Bearer {
    /// From an optional token; a token that cannot be a header value is a configuration error.
    pub fn new(token: Option<&str>) -> Result<Bearer, Error> {
        match token.map(str::trim) {
            None => Ok(Bearer(None)),
            Some("") => Err(Error::Config("the token is empty".into())),
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|v| Bearer(Some(v)))
                .map_err(|_| Error::Config("the token has characters a header cannot carry".into())),
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(AUTHORIZATION_HEADER, v.clone());
        }
        Ok(req)
    }
}

/// A channel to one node that carries the client's credential.
pub type Channel = InterceptedService<tonic::transport::Channel, Bearer>;

impl ClientConfig {
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            deadline: Duration::from_secs(30),
            rpc_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            token: None,
            tls: None,
            quota_retries: 0,
        }
    }
}

/// A cluster client. Cheap to clone; clones share connections and the leader hint.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ClientConfig,
    urls: Vec<String>,
    channels: Mutex<HashMap<String, tonic::transport::Channel>>,
    bearer: Bearer,
    leader: Mutex<Option<String>>,
    next: AtomicUsize,
    /// Bare `host:port` addresses (leader hints) get `https://`.
    tls: bool,
}

/// `host:port` → `http://host:port`.
pub fn normalize(endpoint: &str) -> Result<String, Error> {
    normalize_url(endpoint, false)
}

/// Whether these settings make connections TLS.
pub(crate) fn uses_tls(endpoints: &[String], tls: Option<&TlsOptions>) -> bool {
    tls.is_some() || endpoints.iter().any(|e| e.trim().starts_with("https://"))
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Client, Error> {
        if cfg.endpoints.is_empty() {
            return Err(Error::Config("no endpoints given (use --endpoints or BATON_ENDPOINTS)".into()));
        }
        let tls = uses_tls(&cfg.endpoints, cfg.tls.as_ref());
        let urls = cfg.endpoints.iter().map(|e| normalize_url(e, tls)).collect::<Result<Vec<_>, _>>()?;
        let bearer = Bearer::new(cfg.token.as_deref())?;
        Ok(Client {
            inner: Arc::new(Inner {
                bearer,
                cfg,
                urls,
                channels: Mutex::default(),
                leader: Mutex::default(),
                next: AtomicUsize::new(0),
                tls,
            }),
        })
    }

    /// A client with default settings.
    pub fn connect(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Result<Client, Error> {
        Client::new(ClientConfig::new(endpoints))
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// The interceptor adding this client's token, for streams opened outside `retry`.
    pub fn bearer(&self) -> Bearer {
        self.inner.bearer.clone()
    }

    fn channel(&self, url: &str) -> Result<Channel, Error> {
        Ok(InterceptedService::new(self.raw_channel(url)?, self.inner.bearer.clone()))
    }

    fn raw_channel(&self, url: &str) -> Result<tonic::transport::Channel, Error> {
        let mut map = self.inner.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(url) {
            return Ok(c.clone());
        }
        let c = crate::tls::endpoint(url, self.inner.cfg.tls.as_ref())?
            .connect_timeout(self.inner.cfg.connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        map.insert(url.to_string(), c.clone());
        Ok(c)
    }

    /// Whether this client's connections are TLS.
    pub fn uses_tls(&self) -> bool {
        self.inner.tls
    }

    /// An address as a URL with this client's scheme.
    pub(crate) fn url(&self, addr: &str) -> Result<String, Error> {
        normalize_url(addr, self.inner.tls)
    }

    fn target(&self) -> String {
        if let Some(l) = self.inner.leader.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return l;
        }
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.inner.urls[i % self.inner.urls.len()].clone()
    }

    fn set_leader(&self, url: Option<String>) {
        *self.inner.leader.lock().unwrap_or_else(|p| p.into_inner()) = url;
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.inner.cfg.backoff_base.saturating_mul(1 << attempt.min(16)).min(self.inner.cfg.backoff_max);
        Duration::from_micros(rand::rng().random_range(0..=cap.as_micros() as u64))
    }

    /// Run `call` with retries. `write` marks calls that change state.
    pub(crate) async fn retry<T, F, Fut>(&self, write: bool, call: F) -> Result<T, Error>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.retry_opts(write, true, call).await
    }

    /// [`Client::retry`] for a write that is not idempotent: it is retried
    /// only while no attempt may have been applied; the first attempt whose
    /// outcome is unknown ends it with [`Error::Indeterminate`].
    pub(crate) async fn retry_not_idempotent<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.retry_opts(true, false, call).await
    }

    async fn retry_opts<T, F, Fut>(&self, write: bool, idempotent: bool, mut call: F) -> Result<T, Error>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let mut attempt = 0u32;
        // A write that timed out once may have been applied, whatever a
        // later attempt answers; the caller must hear "unknown", not "no".
        let mut maybe_applied = false;
        let mut quota_retries = 0u32;
        loop {
            let url = self.target();
            let err = match tokio::time::timeout(self.inner.cfg.rpc_timeout, call(self.channel(&url)?)).await {
                Ok(Ok(resp)) => {
                    // A follower that forwarded the call names the leader, so
                    // the next call goes straight there.
                    if let Some(addr) = resp.metadata().get(LEADER_ADDR_HEADER).and_then(|v| v.to_str().ok()) {
                        self.set_leader(self.url(addr).ok());
                    }
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => {
                    let e = Error::from_status(&status, write);
                    match leader_hint(&status) {
                        Some(addr) => self.set_leader(self.url(&addr).ok()),
                        None if e.is_retryable() => self.set_leader(None),
                        None => {}
                    }
                    e
                }
                Err(_) => {
                    self.set_leader(None);
                    let m = format!("no answer from {url} within {:?}", self.inner.cfg.rpc_timeout);
                    if write { Error::Indeterminate(m) } else { Error::Unavailable(m) }
                }
            };
            if let Error::QuotaExceeded { retry_after, .. } = &err
                && quota_retries < self.inner.cfg.quota_retries
            {
                let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
                if started.elapsed() + wait < self.inner.cfg.deadline {
                    quota_retries += 1;
                    tracing::debug!(attempt, error = %err, ?wait, "over quota; retrying after the hint");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    continue;
                }
            }
            if !err.is_retryable() {
                if maybe_applied && !matches!(err, Error::Fenced(_)) {
                    return Err(Error::Indeterminate(format!("{err} (an earlier attempt's outcome is unknown)")));
                }
                return Err(err);
            }
            if write && !idempotent && err.is_indeterminate() {
                return Err(err);
            }
            maybe_applied |= write && err.is_indeterminate();
            if started.elapsed() >= self.inner.cfg.deadline {
                return Err(Error::DeadlineExceeded { elapsed: started.elapsed(), last: Box::new(err) });
            }
            tracing::debug!(attempt, error = %err, "retrying");
            tokio::time::sleep(self.backoff(attempt)).await;
            attempt += 1;
        }
    }

    fn jobs(ch: Channel) -> JobServiceClient<Channel> {
        JobServiceClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// Submit one job. An idempotency key is generated when the spec has none,
    /// so retries (here and by the caller) never create a second job.
    pub async fn submit(&self, mut spec: proto::JobSpec) -> Result<proto::SubmitJobResponse, Error> {
        if spec.idempotency_key.is_empty() {
            spec.idempotency_key = uuid::Uuid::new_v4().to_string();
        }
        self.retry(true, |ch| {
            let req = proto::SubmitJobRequest { spec: Some(spec.clone()) };
            async move { Self::jobs(ch).submit_job(req).await }
        })
        .await
    }

    /// Submit many jobs in one round trip; each succeeds or fails on its own.
    pub async fn submit_batch(
        &self,
        mut specs: Vec<proto::JobSpec>,
    ) -> Result<Vec<Result<proto::SubmitJobResponse, Error>>, Error> {
        for s in &mut specs {
            if s.idempotency_key.is_empty() {
                s.idempotency_key = uuid::Uuid::new_v4().to_string();
            }
        }
        let r = self
            .retry(true, |ch| {
                let req = proto::SubmitJobsRequest { specs: specs.clone() };
                async move { Self::jobs(ch).submit_jobs(req).await }
            })
            .await?;
        Ok(r.results
            .into_iter()
            .map(|x| match x.result {
                Some(proto::submit_job_result::Result::Ok(ok)) => Ok(ok),
                Some(proto::submit_job_result::Result::Error(e)) => Err(item_error(&e)),
                None => Err(Error::Internal("empty batch item".into())),
            })
            .collect())
    }

    pub async fn get(&self, job_id: u64) -> Result<proto::Job, Error> {
        self.retry(
            false,
            |ch| async move { Self::jobs(ch).get_job(proto::GetJobRequest { job_id, consistency: 0 }).await },
        )
        .await
    }

    pub async fn list(&self, req: proto::ListJobsRequest) -> Result<proto::ListJobsResponse, Error> {
        self.retry(false, |ch| {
            let req = req.clone();
            async move { Self::jobs(ch).list_jobs(req).await }
        })
        .await
    }

    /// Cancel a job; returns how many shards were cancelled.
    pub async fn cancel(&self, job_id: u64, reason: &str) -> Result<u32, Error> {
        let reason = reason.to_string();
        self.retry(true, |ch| {
            let req = proto::CancelJobRequest { job_id, reason: reason.clone() };
            async move { Self::jobs(ch).cancel_job(req).await }
        })
        .await
        .map(|r| r.tasks_cancelled)
    }

    /// Every shard's result and state, in shard order. Pages end early when
    /// their results are large (the server bounds a page's bytes), so this
    /// follows `next_shard` up to the job's shard count.
    pub async fn results(&self, job_id: u64) -> Result<Vec<proto::ShardResult>, Error> {
        let shards = self.get(job_id).await?.shards;
        let mut out = Vec::with_capacity(shards as usize);
        let mut from = 0u32;
        while from < shards {
            let page = self.results_page(job_id, from, RESULTS_PAGE).await?;
            // The server always advances; fail rather than spin or return part.
            if page.next_shard <= from {
                return Err(Error::Internal(format!(
                    "results of job {job_id}: page from shard {from} did not advance (next_shard {})",
                    page.next_shard
                )));
            }
            from = page.next_shard;
            out.extend(page.results);
        }
        Ok(out)
    }

    /// One page of a job's shard results, from `from_shard`: at most `limit`
    /// shards (0 means the server's default), fewer when their results are
    /// large. Continue from the page's `next_shard`.
    pub async fn results_page(
        &self,
        job_id: u64,
        from_shard: u32,
        limit: u32,
    ) -> Result<proto::GetResultsResponse, Error> {
        self.retry(false, |ch| async move {
            let req = proto::GetResultsRequest { job_id, from_shard, limit, consistency: 0 };
            Self::jobs(ch).get_results(req).await
        })
        .await
    }

    /// The job's state now, then its later states, until it finishes.
    ///
    /// A watch reports states, not transitions: states that follow each other
    /// quickly are coalesced (the server reads the job when it wakes, and a
    /// slow consumer sees only the newest), so intermediate states may be
    /// skipped. The last event is always the finished job.
    ///
    /// The stream survives leader changes and node restarts: it starts at the
    /// known leader, follows leader hints, reconnects to any node (every node
    /// applies the log) and skips states it already sent. Errors that retrying
    /// cannot fix (e.g. NOT_FOUND, which a node answers only once the leader
    /// confirms it) end the stream. Dropping the stream ends the watch at once.
    pub fn watch(&self, job_id: u64) -> impl Stream<Item = Result<proto::JobEvent, Error>> + Send + 'static {
        self.watch_events(
            move |ch| async move { Self::jobs(ch).watch_job(proto::WatchJobRequest { job_id }).await },
            |ev: &proto::JobEvent| (ev.applied_index, ev.job.as_ref().is_some_and(|j| j.finished_ms != 0)),
        )
    }

    /// The watch loop shared by jobs and workflows: `open` starts a server
    /// stream on a channel; `progress` reads an event's applied index and
    /// whether it is the last one (the watched thing finished).
    pub(crate) fn watch_events<E, O, Fut>(
        &self,
        open: O,
        progress: fn(&E) -> (u64, bool),
    ) -> impl Stream<Item = Result<E, Error>> + Send + 'static
    where
        E: Send + 'static,
        O: Fn(Channel) -> Fut + Send + 'static,
        Fut: Future<Output = Result<tonic::Response<tonic::Streaming<E>>, tonic::Status>> + Send,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let client = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tx.closed() => {}
                _ = client.watch_loop(open, progress, &tx) => {}
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    async fn watch_loop<E, O, Fut>(
        &self,
        open: O,
        progress: fn(&E) -> (u64, bool),
        tx: &tokio::sync::mpsc::Sender<Result<E, Error>>,
    ) where
        O: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<tonic::Streaming<E>>, tonic::Status>>,
    {
        let mut last_index = 0u64;
        let mut attempt = 0u32;
        loop {
            let url = self.target();
            let ch = match self.channel(&url) {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            // A stalled node may never answer the open; once open, a quiet
            // stream only means nothing has changed.
            let opened = match tokio::time::timeout(self.inner.cfg.rpc_timeout, open(ch)).await {
                Ok(r) => r,
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "{url} did not open the watch within {:?}",
                    self.inner.cfg.rpc_timeout
                ))),
            };
            match opened {
                Ok(resp) => {
                    let mut s = resp.into_inner();
                    // Until the node goes away, restarts or fails: the
                    // watched record exists, so any node can go on from there.
                    while let Ok(Some(ev)) = s.message().await {
                        attempt = 0;
                        let (index, finished) = progress(&ev);
                        if index > last_index || finished {
                            last_index = index;
                            if tx.send(Ok(ev)).await.is_err() {
                                return;
                            }
                        }
                        if finished {
                            return;
                        }
                    }
                    self.set_leader(None);
                }
                Err(status) => {
                    let e = Error::from_status(&status, false);
                    match leader_hint(&status) {
                        Some(addr) => self.set_leader(self.url(&addr).ok()),
                        None if e.is_retryable() => self.set_leader(None),
                        None => {}
                    }
                    if !e.is_retryable() {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    tracing::debug!(error = %e, url = %url, "watch refused; retrying");
                }
            }
            tokio::time::sleep(self.backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// Status of the node at `endpoint` (no retry, no leader routing), or of
    /// whichever node answers first when `None`.
    pub async fn status(&self, endpoint: Option<&str>) -> Result<proto::StatusResponse, Error> {
        match endpoint {
            Some(e) => self.status_at(e, false).await,
            None => {
                self.retry(false, |ch| async move {
                    ClusterServiceClient::new(ch).status(proto::StatusRequest::default()).await
                })
                .await
            }
        }
    }

    /// The state hash of the node at `endpoint` and the applied index it was
    /// taken at, read atomically: `(state_hash_index, state_hash)`. Replicas
    /// at equal indexes must agree. Costs the node a full scan of its table.
    pub async fn state_hash(&self, endpoint: &str) -> Result<(u64, Vec<u8>), Error> {
        let s = self.status_at(endpoint, true).await?;
        Ok((s.state_hash_index, s.state_hash))
    }

    async fn status_at(&self, endpoint: &str, include_state_hash: bool) -> Result<proto::StatusResponse, Error> {
        let ch = self.channel(&self.url(endpoint)?)?;
        let mut req = tonic::Request::new(proto::StatusRequest { include_state_hash });
        req.set_timeout(self.inner.cfg.rpc_timeout);
        ClusterServiceClient::new(ch)
            .status(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| Error::from_status(&s, false))
    }

    /// The configured endpoints, normalized.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.urls
    }

    pub async fn add_learner(
        &self,
        node_id: u64,
        raft_addr: &str,
        api_addr: &str,
    ) -> Result<proto::MembershipResponse, Error> {
        let req = proto::AddLearnerRequest { node_id, raft_addr: raft_addr.into(), api_addr: api_addr.into() };
        self.retry(true, |ch| {
            let req = req.clone();
            async move { ClusterServiceClient::new(ch).add_learner(req).await }
        })
        .await
    }

    pub async fn change_membership(&self, voters: Vec<u64>) -> Result<proto::MembershipResponse, Error> {
        self.retry(true, |ch| {
            let req = proto::ChangeMembershipRequest { voters: voters.clone() };
            async move { ClusterServiceClient::new(ch).change_membership(req).await }
        })
        .await
    }

    pub async fn remove_node(&self, node_id: u64) -> Result<proto::MembershipResponse, Error> {
        self.retry(true, |ch| async move {
            ClusterServiceClient::new(ch).remove_node(proto::RemoveNodeRequest { node_id }).await
        })
        .await
    }

    /// Ask the node at `endpoint` (or any node) to build a snapshot.
    pub async fn trigger_snapshot(&self, endpoint: Option<&str>) -> Result<(), Error> {
        let ch = match endpoint {
            Some(e) => self.channel(&self.url(e)?)?,
            None => self.channel(&self.target())?,
        };
        ClusterServiceClient::new(ch)
            .trigger_snapshot(proto::TriggerSnapshotRequest {})
            .await
            .map(|_| ())
            .map_err(|s| Error::from_status(&s, true))
    }

    /// Open a backup on the leader (following leader hints): the bytes of
    /// a backup file, in order, as a stream of chunks. Once open, the
    /// stream is not retried: a backup cut short must be taken again (the
    /// file's trailer tells a complete one).
    pub async fn backup(&self) -> Result<tonic::Streaming<proto::BackupChunk>, Error> {
        self.retry(false, |ch| async move {
            ClusterServiceClient::new(ch)
                .max_decoding_message_size(MAX_RESPONSE_BYTES)
                .backup(proto::BackupRequest {})
                .await
        })
        .await
    }

    pub async fn list_workers(&self) -> Result<Vec<proto::Worker>, Error> {
        self.retry(false, |ch| async move {
            WorkerServiceClient::new(ch).list_workers(proto::ListWorkersRequest { consistency: 0 }).await
        })
        .await
        .map(|r| r.workers)
    }
}

fn item_error(e: &proto::ItemError) -> Error {
    if e.error_code == codes::QUOTA_EXCEEDED {
        return Error::QuotaExceeded {
            quota: e.quota.clone(),
            retry_after: (e.retry_after_ms > 0).then(|| Duration::from_millis(e.retry_after_ms)),
            message: e.message.clone(),
        };
    }
    let code = match e.code.as_str() {
        "InvalidArgument" => tonic::Code::InvalidArgument,
        "NotFound" => tonic::Code::NotFound,
        "FailedPrecondition" => tonic::Code::FailedPrecondition,
        "ResourceExhausted" => tonic::Code::ResourceExhausted,
        "Unavailable" => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    };
    Error::from_status(&tonic::Status::new(code, e.message.clone()), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized_and_required() {
        assert_eq!(normalize("127.0.0.1:7201").unwrap(), "http://127.0.0.1:7201");
        assert_eq!(normalize("http://a:1").unwrap(), "http://a:1");
        assert!(Client::connect(Vec::<String>::new()).is_err());
    }

    #[tokio::test]
    async fn unreachable_cluster_gives_up_at_the_deadline_with_a_retryable_error() {
        let mut cfg = ClientConfig::new(["127.0.0.1:1"]);
        cfg.deadline = Duration::from_millis(300);
        let c = Client::new(cfg).unwrap();
        let e = c.get(1).await.unwrap_err();
        assert!(matches!(e, Error::DeadlineExceeded { .. }), "{e}");
        assert!(e.is_indeterminate() || matches!(&e, Error::DeadlineExceeded { last, .. } if last.is_retryable()));
    }

    #[tokio::test]
    async fn a_write_to_nodes_that_refuse_connections_was_never_sent() {
        let mut cfg = ClientConfig::new(["127.0.0.1:1"]);
        cfg.deadline = Duration::from_millis(300);
        let c = Client::new(cfg).unwrap();
        let e = c.cancel(1, "nobody is there").await.unwrap_err();
        assert!(matches!(&e, Error::DeadlineExceeded { last, .. } if matches!(**last, Error::Unavailable(_))), "{e}");
    }
}
