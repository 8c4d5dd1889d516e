//! Namespace settings in `baton.v1.JobService`: pause, resume, retention,
//! idempotency window, quotas, and reading them with the namespace's usage. A namespace needs no creation; one without settings has
//! the defaults. Writes are proposed at the leader like the job operations;
//! each answers with the settings as applied.

use tonic::{Request, Response, Status};

use baton_client::proto;
use baton_client::proto::job_service_client::JobServiceClient;
use baton_raft_store::limits::{IDEMPOTENCY_WINDOW_MS_DEFAULT, RETENTION_MS_DEFAULT};
use baton_raft_store::{Command, NamespaceRecord, NamespaceUsage, Outcome, QuotaChange};

use super::convert;
use super::job_ops::unexpected;
use super::jobs::Jobs;

/// The public view of a namespace's settings and usage.
pub fn namespace_view(namespace: &str, (rec, usage): &(NamespaceRecord, NamespaceUsage)) -> proto::Namespace {
    proto::Namespace {
        quota_live_tasks: rec.quota.live_tasks.unwrap_or(0),
        quota_payload_bytes: rec.quota.payload_bytes.unwrap_or(0),
        quota_submits_per_sec: rec.quota.submits_per_sec.unwrap_or(0),
        live_tasks: usage.live_tasks,
        payload_bytes: usage.payload_bytes,
        namespace: namespace.to_string(),
        paused: rec.paused,
        retention_ms: rec.retention_ms.unwrap_or(0),
        effective_retention_ms: rec.retention_ms.unwrap_or(RETENTION_MS_DEFAULT),
        idempotency_window_ms: rec.idempotency_window_ms.unwrap_or(0),
        effective_idempotency_window_ms: rec.idempotency_window_ms.unwrap_or(IDEMPOTENCY_WINDOW_MS_DEFAULT),
    }
}

impl Jobs {
    /// Propose a namespace command and answer with the settings it left. The
    /// leader has applied the entry when the proposal returns, so its reader
    /// holds them (or a later write's).
    async fn update_namespace(&self, namespace: String, cmd: Command) -> Result<proto::Namespace, Status> {
        match self.apply(cmd).await? {
            Outcome::NamespaceUpdated { .. } => {
                Ok(namespace_view(&namespace, &self.ctx.reader.namespace_usage(&namespace)))
            }
            other => Err(unexpected(other)),
        }
    }

    pub(super) async fn pause_ns(
        &self,
        req: Request<proto::PauseNamespaceRequest>,
    ) -> Result<Response<proto::Namespace>, Status> {
        let ns = req.get_ref().namespace.clone();
        let cmd = Self::checked(Command::PauseNamespace { namespace: ns.clone(), paused: true })?;
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, JobServiceClient::pause_namespace, write);
        Ok(Response::new(self.update_namespace(ns, cmd).await?))
    }

    pub(super) async fn resume_ns(
        &self,
        req: Request<proto::ResumeNamespaceRequest>,
    ) -> Result<Response<proto::Namespace>, Status> {
        let ns = req.get_ref().namespace.clone();
        let cmd = Self::checked(Command::PauseNamespace { namespace: ns.clone(), paused: false })?;
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, JobServiceClient::resume_namespace, write);
        Ok(Response::new(self.update_namespace(ns, cmd).await?))
    }

    pub(super) async fn ns_retention(
        &self,
        req: Request<proto::SetNamespaceRetentionRequest>,
    ) -> Result<Response<proto::Namespace>, Status> {
        let r = req.get_ref();
        let ns = r.namespace.clone();
        let retention_ms = (r.retention_ms != 0).then_some(r.retention_ms);
        let cmd = Self::checked(Command::SetNamespaceRetention { namespace: ns.clone(), retention_ms })?;
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, JobServiceClient::set_namespace_retention, write);
        Ok(Response::new(self.update_namespace(ns, cmd).await?))
    }

    pub(super) async fn ns_idempotency_window(
        &self,
        req: Request<proto::SetNamespaceIdempotencyWindowRequest>,
    ) -> Result<Response<proto::Namespace>, Status> {
        let r = req.get_ref();
        let ns = r.namespace.clone();
        let window_ms = (r.idempotency_window_ms != 0).then_some(r.idempotency_window_ms);
        let cmd = Self::checked(Command::SetNamespaceIdempotencyWindow { namespace: ns.clone(), window_ms })?;
        forward_if_not_here!(
            self.ctx,
            self.ctx.route(&req)?,
            req,
            JobServiceClient::set_namespace_idempotency_window,
            write
        );
        Ok(Response::new(self.update_namespace(ns, cmd).await?))
    }

    pub(super) async fn ns_quota(
        &self,
        req: Request<proto::SetNamespaceQuotaRequest>,
    ) -> Result<Response<proto::Namespace>, Status> {
        let r = req.get_ref();
        let ns = r.namespace.clone();
        let change = QuotaChange {
            live_tasks: r.live_tasks,
            payload_bytes: r.payload_bytes,
            submits_per_sec: r.submits_per_sec,
            clear: r.clear,
        };
        let cmd = Self::checked(Command::SetNamespaceQuota { namespace: ns.clone(), change })?;
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, JobServiceClient::set_namespace_quota, write);
        Ok(Response::new(self.update_namespace(ns, cmd).await?))
    }

    pub(super) async fn read_ns(
        &self,
        req: Request<proto::GetNamespaceRequest>,
    ) -> Result<Response<proto::Namespace>, Status> {
        let r = req.get_ref();
        let stale = convert::stale(r.consistency)?;
        // The writes' name rule, checked without proposing anything.
        Self::checked(Command::PauseNamespace { namespace: r.namespace.clone(), paused: false })?;
        forward_if_not_here!(
            self.ctx,
            self.ctx.read_route(&req, stale).await?,
            req,
            JobServiceClient::get_namespace,
            read
        );
        let ns = &req.get_ref().namespace;
        Ok(Response::new(namespace_view(ns, &self.ctx.reader.namespace_usage(ns))))
    }
}
