//! The `baton` operator CLI: `cluster`, `job` and `worker` commands over the
//! public API, human tables by default and `--json` for scripts. The
//! `workflow` commands are in [`crate::cli_workflow`], the job operations
//! and `namespace` commands in [`crate::cli_job`], `schedule` in
//! [`crate::cli_schedule`], `event` and `trigger` in [`crate::cli_event`]
//! and [`crate::cli_trigger`].

use std::collections::BTreeMap;
use std::time::Duration;

use baton_client::{Client, ClientConfig, Error, proto};
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::{Value, json};

/// Default endpoints: the local cluster of `baton dev` / `deploy/local/cluster.sh`.
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203";

#[derive(Args, Clone)]
pub struct Global {
    /// Cluster nodes' API addresses, comma-separated.
    #[arg(long, env = "BATON_ENDPOINTS", value_delimiter = ',', default_value = DEFAULT_ENDPOINTS, global = true)]
    pub endpoints: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up after this many seconds of retrying.
    #[arg(long, default_value_t = 10, global = true)]
    pub timeout_secs: u64,
    /// Bearer token, for clusters with auth on.
    #[arg(long, env = "BATON_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token (surrounding whitespace ignored).
    #[arg(long, env = "BATON_TOKEN_FILE", global = true, conflicts_with = "token")]
    pub token_file: Option<std::path::PathBuf>,
    /// The cluster CA (PEM): connect with TLS and verify the nodes against it.
    #[arg(long, env = "BATON_CA", global = true)]
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS; with --key.
    #[arg(long, env = "BATON_CERT", global = true, requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// Key of --cert (PEM).
    #[arg(long, env = "BATON_KEY", global = true, requires = "cert")]
    pub key: Option<std::path::PathBuf>,
}

impl Global {
    /// TLS settings from --ca/--cert/--key; `None` when none is given.
    pub fn tls(&self) -> Result<Option<baton_client::TlsOptions>, Error> {
        if self.ca.is_none() && self.cert.is_none() {
            return Ok(None);
        }
        baton_client::TlsOptions::from_files(self.ca.as_deref(), self.cert.as_deref(), self.key.as_deref()).map(Some)
    }

    pub fn client(&self) -> Result<Client, Error> {
        let mut cfg = ClientConfig::new(self.endpoints.clone());
        cfg.tls = self.tls()?;
        cfg.deadline = Duration::from_secs(self.timeout_secs);
        cfg.rpc_timeout = Duration::from_secs(self.timeout_secs.clamp(1, 10));
        cfg.token = self.token()?;
        Client::new(cfg)
    }

    /// `--token`, or the contents of `--token-file`.
    pub fn token(&self) -> Result<Option<String>, Error> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(Some(t.trim().to_string())),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| Error::Config(format!("cannot read the token file {}: {e}", f.display()))),
            (None, None) => Ok(None),
        }
    }
}

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Role, leader, term and log indexes of every endpoint.
    Status,
    /// The membership: voters and learners.
    Members,
    /// Add a running node as a learner (returns once it has caught up).
    AddNode {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        raft_addr: String,
        #[arg(long)]
        api_addr: String,
    },
    /// Make exactly these nodes the voters.
    Promote {
        #[arg(long, value_delimiter = ',', required = true)]
        voters: Vec<u64>,
    },
    /// Remove a node from the membership.
    RemoveNode {
        #[arg(long)]
        id: u64,
    },
    /// Build a snapshot on one node (default: the first endpoint).
    Snapshot {
        #[arg(long)]
        node: Option<String>,
    },
    /// backup, restore, recover: run by [`crate::cli_recovery::run`].
    #[command(flatten)]
    Recovery(crate::cli_recovery::RecoveryCmd),
}

#[derive(Subcommand)]
pub enum JobCmd {
    /// Submit a sharded job.
    Submit(SubmitArgs),
    Get {
        id: u64,
    },
    /// One page of jobs in creation order, optionally of one namespace or status.
    List {
        #[arg(long)]
        namespace: Option<String>,
        /// queued, running, succeeded, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Newest first.
        #[arg(long)]
        newest: bool,
        /// Jobs per page (1..=1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start after this job id: the previous page's next_page_token.
        #[arg(long)]
        after: Option<u64>,
    },
    Cancel {
        id: u64,
        #[arg(long, default_value = "cancelled from the CLI")]
        reason: String,
    },
    /// Follow a job until it finishes, with a progress bar.
    Watch {
        id: u64,
    },
    /// Per-shard results.
    Results {
        id: u64,
    },
    /// What a job's handlers logged: time, level, attempt, message.
    Logs(crate::cli_logs::LogsArgs),
    #[command(flatten)]
    Op(crate::cli_job::JobOpCmd),
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[arg(long, default_value = "default")]
    pub namespace: String,
    #[arg(long, default_value = "")]
    pub name: String,
    /// Number of shards with empty payloads.
    #[arg(long, conflicts_with = "payload_file")]
    pub shards: Option<u32>,
    /// A file with one shard payload per line.
    #[arg(long)]
    pub payload_file: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    #[arg(long, default_value_t = 0)]
    pub max_attempts: u32,
    /// Per-attempt timeout in seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Descriptive label `key=value` (repeatable).
    #[arg(long = "label", value_parser = parse_kv)]
    pub labels: Vec<(String, String)>,
    /// Required worker label `key=value` (repeatable).
    #[arg(long = "constraint", value_parser = parse_kv)]
    pub constraints: Vec<(String, String)>,
    /// Defaults to a fresh random key, so retries never duplicate the job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Start no shard before TIME (RFC 3339 or ms since the Unix epoch; at
    /// most 30 days ahead).
    #[arg(long, conflicts_with = "within")]
    pub at: Option<String>,
    /// Start no shard before DUR from now (e.g. 90s, 2h; at most 30 days).
    #[arg(long = "in", id = "within")]
    pub within: Option<String>,
}

#[derive(Subcommand)]
pub enum WorkerCmd {
    /// Live worker sessions.
    List,
}

pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("{s:?} is not key=value"))
}

/// One line saying what went wrong and what to do.
pub fn explain(e: &Error, endpoints: &[String]) -> String {
    match e {
        Error::DeadlineExceeded { last, .. } if last.is_retryable() => format!(
            "cannot reach a leader at {} ({last}). Is the cluster running and does it have a majority? \
             Start one with `baton dev`, or pass --endpoints / BATON_ENDPOINTS.",
            endpoints.join(",")
        ),
        // A plaintext client on a TLS port: the server's message says what to do.
        Error::DeadlineExceeded { last, .. } if matches!(**last, Error::TlsRequired(_)) => last.to_string(),
        Error::NotFound(m) | Error::InvalidArgument(m) | Error::TlsRequired(m) => m.clone(),
        Error::Unauthenticated(m) => {
            format!(
                "{m}. The cluster has auth on: pass --token, --token-file or BATON_TOKEN (or a client certificate named in its [[auth.certs]], with --cert and --key)."
            )
        }
        other => other.to_string(),
    }
}

/// A `--status` value of `job list`.
pub fn parse_job_status(s: &str) -> Result<proto::JobStatus, Error> {
    Ok(match s {
        "queued" => proto::JobStatus::Queued,
        "running" => proto::JobStatus::Running,
        "succeeded" => proto::JobStatus::Succeeded,
        "failed" => proto::JobStatus::Failed,
        "cancelled" => proto::JobStatus::Cancelled,
        other => {
            return Err(Error::InvalidArgument(format!(
                "unknown status {other:?}; use queued, running, succeeded, failed or cancelled"
            )));
        }
    })
}

fn status_name(v: i32) -> &'static str {
    match proto::JobStatus::try_from(v) {
        Ok(proto::JobStatus::Queued) => "queued",
        Ok(proto::JobStatus::Running) => "running",
        Ok(proto::JobStatus::Succeeded) => "succeeded",
        Ok(proto::JobStatus::Failed) => "failed",
        Ok(proto::JobStatus::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

fn task_status_name(v: i32) -> &'static str {
    match proto::TaskStatus::try_from(v) {
        Ok(proto::TaskStatus::Pending) => "pending",
        Ok(proto::TaskStatus::Running) => "running",
        Ok(proto::TaskStatus::Succeeded) => "succeeded",
        Ok(proto::TaskStatus::Dead) => "dead",
        Ok(proto::TaskStatus::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

/// The documented JSON form of a job.
pub fn job_json(j: &proto::Job) -> Value {
    let c = j.counts.unwrap_or_default();
    json!({
        "id": j.id, "namespace": j.namespace, "name": j.name, "status": status_name(j.status),
        "shards": j.shards, "priority": j.priority,
        "counts": {"pending": c.pending, "running": c.running, "succeeded": c.succeeded, "dead": c.dead, "cancelled": c.cancelled},
        "labels": j.labels, "constraints": j.constraints, "max_attempts": j.max_attempts,
        "attempt_timeout_ms": j.attempt_timeout_ms, "created_ms": j.created_ms,
        "finished_ms": (j.finished_ms != 0).then_some(j.finished_ms),
        "cancel_reason": (!j.cancel_reason.is_empty()).then_some(&j.cancel_reason),
        "idempotency_key": j.idempotency_key,
        "paused": j.paused, "namespace_paused": j.namespace_paused,
        "retention_ms": (j.retention_ms != 0).then_some(j.retention_ms),
        "expires_ms": (j.expires_ms != 0).then_some(j.expires_ms),
        "not_before_ms": (j.not_before_ms != 0).then_some(j.not_before_ms),
        "run_origin": run_origin_json(j.run_origin.as_ref()),
    })
}

/// The documented JSON form of what started a job or workflow (null: a
/// client submitted it).
pub fn run_origin_json(o: Option<&proto::RunOrigin>) -> Value {
    use proto::run_origin::Source;
    match o.and_then(|o| o.source.as_ref()) {
        Some(Source::Schedule(s)) => json!({"schedule_id": s.schedule_id, "fire_ms": s.fire_ms, "manual": s.manual}),
        Some(Source::Event(e)) => json!({"trigger_id": e.trigger_id, "event_id": e.event_id}),
        None => Value::Null,
    }
}

/// What `job get` prints under the job's row when it applies: pauses, and
/// when a finished job will be deleted.
pub fn job_notes(j: &proto::Job, now_ms: u64) -> Vec<String> {
    use proto::run_origin::Source;
    let mut notes = Vec::new();
    if j.not_before_ms != 0 {
        let t = crate::cli_time::rfc3339(j.not_before_ms);
        let rel = crate::cli_time::relative(j.not_before_ms, now_ms);
        notes.push(if j.not_before_ms > now_ms {
            format!("starts at {t} ({rel})")
        } else {
            format!("not started before {t} ({rel})")
        });
    }
    match j.run_origin.as_ref().and_then(|o| o.source.as_ref()) {
        Some(Source::Schedule(s)) if s.manual => notes.push(format!(
            "started by schedule {} (run now at {})",
            s.schedule_id,
            crate::cli_time::rfc3339(s.fire_ms)
        )),
        Some(Source::Schedule(s)) => notes.push(format!(
            "started by schedule {} for fire time {}",
            s.schedule_id,
            crate::cli_time::rfc3339(s.fire_ms)
        )),
        Some(Source::Event(e)) => notes.push(format!("started by trigger {} for event {}", e.trigger_id, e.event_id)),
        None => {}
    }
    if j.finished_ms == 0 {
        if j.paused {
            notes.push("paused: no new attempts start (baton job resume)".to_string());
        }
        if j.namespace_paused {
            notes.push(format!("namespace {} is paused: no new attempts start", j.namespace));
        }
    }
    if j.expires_ms != 0 {
        let left = j.expires_ms.saturating_sub(now_ms);
        let when = if left == 0 { "now".to_string() } else { format!("in {}", crate::cli_job::human_ms(left)) };
        notes.push(format!("deleted {when} (retention)"));
    }
    notes
}

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// One page of a listing: `{key: items, next_page_token}` as JSON, or the
/// table and, when more follow, how to ask for them.
pub fn print_page(g: &Global, key: &str, items: Vec<Value>, table: &str, next_page_token: u64) {
    if g.json {
        print_json(&json!({ key: items, "next_page_token": next_page_token }));
    } else {
        print!("{table}");
        if next_page_token != 0 {
            println!("(more: the same command with --after {next_page_token})");
        }
    }
}

fn job_row(j: &proto::Job) -> String {
    let c = j.counts.unwrap_or_default();
    format!(
        "{:>8}  {:<10}  {:<16}  {:>7}  {:>7} {:>7} {:>7} {:>7}",
        j.id,
        status_name(j.status),
        j.namespace,
        j.shards,
        c.pending,
        c.running,
        c.succeeded,
        c.dead + c.cancelled
    )
}

const JOB_HEADER: &str = "      ID  STATUS      NAMESPACE          SHARDS  PENDING RUNNING    DONE  FAILED";

pub async fn cluster(g: &Global, cmd: ClusterCmd) -> Result<(), Error> {
    let client = g.client()?;
    match cmd {
        ClusterCmd::Status => {
            let mut rows = Vec::new();
            for e in &g.endpoints {
                rows.push((e.clone(), client.status(Some(e)).await));
            }
            if rows.iter().all(|(_, r)| r.is_err()) {
                let e = rows.pop().and_then(|(_, r)| r.err()).unwrap_or(Error::Unavailable("no endpoints".into()));
                return Err(Error::DeadlineExceeded { elapsed: Duration::ZERO, last: Box::new(e) });
            }
            if g.json {
                let nodes: Vec<Value> = rows
                    .iter()
                    .map(|(e, r)| match r {
                        Ok(s) => json!({
                            "endpoint": e, "reachable": true, "node_id": s.node_id, "role": s.role,
                            "leader_id": s.leader_id, "leader_api_addr": s.leader_api_addr, "term": s.term,
                            "last_log_index": s.last_log_index, "commit_index": s.commit_index,
                            "applied_index": s.applied_index, "live_workers": s.live_workers, "live_tasks": s.live_tasks,
                            "cluster_id": s.cluster_id, "incarnation": s.incarnation,
                            "members": s.members.iter().map(member_json).collect::<Vec<_>>(),
                            "replication": s.replication.iter().map(|p| json!({"node_id": p.node_id, "matched_index": p.matched_index, "lag": p.lag})).collect::<Vec<_>>(),
                        }),
                        Err(err) => json!({"endpoint": e, "reachable": false, "error": err.to_string()}),
                    })
                    .collect();
                print_json(&json!({ "nodes": nodes }));
            } else {
                println!(
                    "{:<22} {:>4}  {:<9} {:>6} {:>6} {:>9} {:>9} {:>9} {:>7} {:>9}",
                    "ENDPOINT", "NODE", "ROLE", "LEADER", "TERM", "LAST", "COMMIT", "APPLIED", "WORKERS", "LIVE TASKS"
                );
                for (e, r) in rows {
                    match r {
                        Ok(s) => println!(
                            "{e:<22} {:>4}  {:<9} {:>6} {:>6} {:>9} {:>9} {:>9} {:>7} {:>9}",
                            s.node_id,
                            s.role,
                            s.leader_id,
                            s.term,
                            s.last_log_index,
                            s.commit_index,
                            s.applied_index,
                            s.live_workers,
                            s.live_tasks
                        ),
                        Err(err) => println!("{e:<22}  unreachable: {err}"),
                    }
                }
            }
        }
        ClusterCmd::Members => {
            let s = client.status(None).await?;
            if g.json {
                print_json(
                    &json!({"leader_id": s.leader_id, "cluster_id": s.cluster_id, "members": s.members.iter().map(member_json).collect::<Vec<_>>()}),
                );
            } else {
                if !s.cluster_id.is_empty() {
                    println!("cluster {}", s.cluster_id);
                }
                println!("{:>4}  {:<8} {:<22} {:<22}", "ID", "ROLE", "RAFT", "API");
                for m in s.members {
                    let role = if m.id == s.leader_id {
                        "leader"
                    } else if m.voter {
                        "voter"
                    } else {
                        "learner"
                    };
                    println!("{:>4}  {:<8} {:<22} {:<22}", m.id, role, m.raft_addr, m.api_addr);
                }
            }
        }
        ClusterCmd::AddNode { id, raft_addr, api_addr } => {
            let r = client.add_learner(id, &raft_addr, &api_addr).await?;
            report_members(g, "learner added", &r);
        }
        ClusterCmd::Promote { voters } => {
            let r = client.change_membership(voters).await?;
            report_members(g, "membership changed", &r);
        }
        ClusterCmd::RemoveNode { id } => {
            let r = client.remove_node(id).await?;
            report_members(g, "node removed", &r);
        }
        ClusterCmd::Snapshot { node } => {
            let target = node.unwrap_or_else(|| g.endpoints[0].clone());
            client.trigger_snapshot(Some(&target)).await?;
            if g.json {
                print_json(&json!({"snapshot_triggered": target}));
            } else {
                println!("snapshot triggered on {target}");
            }
        }
        ClusterCmd::Recovery(_) => {
            return Err(Error::InvalidArgument("backup, restore and recover run through cli_recovery::run".into()));
        }
    }
    Ok(())
}

/// The documented JSON form of a member.
fn member_json(m: &proto::Member) -> Value {
    json!({"id": m.id, "raft_addr": m.raft_addr, "api_addr": m.api_addr, "voter": m.voter, "incarnation": m.incarnation})
}

fn report_members(g: &Global, what: &str, r: &proto::MembershipResponse) {
    if g.json {
        print_json(
            &json!({"log_index": r.log_index, "members": r.members.iter().map(member_json).collect::<Vec<_>>()}),
        );
    } else {
        let voters: Vec<String> = r.members.iter().filter(|m| m.voter).map(|m| m.id.to_string()).collect();
        let learners: Vec<String> = r.members.iter().filter(|m| !m.voter).map(|m| m.id.to_string()).collect();
        println!(
            "{what} at log index {}; voters [{}], learners [{}]",
            r.log_index,
            voters.join(","),
            learners.join(",")
        );
    }
}

/// Flags → spec. `now_ms` turns `--in` into a time.
pub fn spec_from(a: &SubmitArgs, now_ms: u64) -> Result<proto::JobSpec, Error> {
    let not_before_ms = crate::cli_time::not_before(a.at.as_deref(), a.within.as_deref(), now_ms)?;
    let payloads = match &a.payload_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", f.display())))?
            .lines()
            .map(|l| l.as_bytes().to_vec())
            .collect(),
        None => Vec::new(),
    };
    Ok(proto::JobSpec {
        namespace: a.namespace.clone(),
        name: a.name.clone(),
        shards: if payloads.is_empty() { a.shards.unwrap_or(1) } else { 0 },
        payloads,
        priority: a.priority,
        max_attempts: a.max_attempts,
        attempt_timeout_ms: a.timeout.map_or(0, |s| s * 1000),
        labels: a.labels.iter().cloned().collect(),
        constraints: a.constraints.iter().cloned().collect(),
        idempotency_key: a.idempotency_key.clone().unwrap_or_default(),
        not_before_ms: not_before_ms.unwrap_or(0),
        ..Default::default()
    })
}

pub async fn job(g: &Global, cmd: JobCmd) -> Result<(), Error> {
    let client = g.client()?;
    match cmd {
        JobCmd::Logs(a) => crate::cli_logs::logs(g, a).await?,
        JobCmd::Submit(a) => {
            let spec = spec_from(&a, crate::cli_time::now_ms())?;
            let not_before_ms = spec.not_before_ms;
            let r = client.submit(spec).await?;
            if g.json {
                print_json(&json!({"job_id": r.job_id, "shards": r.shards, "duplicate": r.duplicate,
                                   "not_before_ms": (not_before_ms != 0).then_some(not_before_ms)}));
            } else {
                println!(
                    "job {} submitted with {} shards{}{}",
                    r.job_id,
                    r.shards,
                    if not_before_ms == 0 {
                        String::new()
                    } else {
                        format!(", starting at {}", crate::cli_time::rfc3339(not_before_ms))
                    },
                    if r.duplicate { " (already existed)" } else { "" }
                );
            }
        }
        JobCmd::Get { id } => {
            let j = client.get(id).await?;
            if g.json {
                print_json(&job_json(&j));
            } else {
                println!("{JOB_HEADER}\n{}", job_row(&j));
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                for note in job_notes(&j, now_ms) {
                    println!("  {note}");
                }
            }
        }
        JobCmd::List { namespace, status, newest, limit, after } => {
            let status = status.as_deref().map(parse_job_status).transpose()?.unwrap_or(proto::JobStatus::Unspecified);
            let r = client
                .list(proto::ListJobsRequest {
                    namespace: namespace.unwrap_or_default(),
                    status: status as i32,
                    page_size: limit,
                    page_token: after.unwrap_or(0),
                    newest_first: newest,
                    ..Default::default()
                })
                .await?;
            let table: String = std::iter::once(JOB_HEADER.to_string())
                .chain(r.jobs.iter().map(job_row))
                .map(|line| line + "\n")
                .collect();
            print_page(g, "jobs", r.jobs.iter().map(job_json).collect(), &table, r.next_page_token);
        }
        JobCmd::Op(op) => crate::cli_job::job_op(g, &client, op).await?,
        JobCmd::Cancel { id, reason } => {
            let n = client.cancel(id, &reason).await?;
            if g.json {
                print_json(&json!({"job_id": id, "tasks_cancelled": n}));
            } else {
                println!("job {id} cancelled ({n} shards stopped)");
            }
        }
        JobCmd::Watch { id } => {
            let j = watch(&client, id, !g.json).await?;
            if g.json {
                print_json(&job_json(&j));
            }
        }
        JobCmd::Results { id } => {
            let r = client.results(id).await?;
            if g.json {
                let v: Vec<Value> = r
                    .iter()
                    .map(|s| json!({"shard": s.shard, "status": task_status_name(s.status), "result": String::from_utf8_lossy(&s.result), "attempts": s.attempts, "token": s.token, "last_error": s.last_error}))
                    .collect();
                print_json(&json!({"job_id": id, "results": v}));
            } else {
                println!("{:>6}  {:<10} {:>8}  RESULT", "SHARD", "STATUS", "ATTEMPTS");
                for s in r {
                    println!(
                        "{:>6}  {:<10} {:>8}  {}",
                        s.shard,
                        task_status_name(s.status),
                        s.attempts,
                        String::from_utf8_lossy(&s.result)
                    );
                }
            }
        }
    }
    Ok(())
}

/// Follow a job to the end; with `bar`, draw a progress bar of shards done.
pub async fn watch(client: &Client, id: u64, bar: bool) -> Result<proto::Job, Error> {
    let job = client.get(id).await?;
    let pb = bar.then(|| {
        let pb = indicatif::ProgressBar::new(job.shards as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{spinner} job {prefix} [{bar:40}] {pos}/{len} shards done  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_prefix(id.to_string());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    });
    let mut last = job;
    let mut events = Box::pin(client.watch(id));
    while let Some(ev) = events.next().await {
        if let Some(j) = ev?.job {
            if let Some(pb) = &pb {
                let c = j.counts.unwrap_or_default();
                pb.set_position((c.succeeded + c.dead + c.cancelled) as u64);
                pb.set_message(format!("running {}  failed {}  {}", c.running, c.dead, status_name(j.status)));
            }
            last = j;
        }
    }
    if let Some(pb) = pb {
        pb.finish_with_message(status_name(last.status).to_string());
    }
    Ok(last)
}

pub async fn worker(g: &Global, cmd: WorkerCmd) -> Result<(), Error> {
    let client = g.client()?;
    match cmd {
        WorkerCmd::List => {
            let ws = client.list_workers().await?;
            if g.json {
                print_json(
                    &json!({"workers": ws.iter().map(|w| json!({"session": w.session, "name": w.name, "epoch": w.epoch, "labels": w.labels, "capacity": w.capacity, "running": w.running, "registered_ms": w.registered_ms})).collect::<Vec<_>>()}),
                );
            } else {
                println!("{:>8}  {:<24} {:>5} {:>8} {:>8}  LABELS", "SESSION", "NAME", "EPOCH", "CAPACITY", "RUNNING");
                for w in ws {
                    let labels: BTreeMap<_, _> = w.labels.into_iter().collect();
                    let labels: Vec<String> = labels.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!(
                        "{:>8}  {:<24} {:>5} {:>8} {:>8}  {}",
                        w.session,
                        w.name,
                        w.epoch,
                        w.capacity,
                        w.running,
                        labels.join(",")
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod explain_tests {
    use super::*;

    #[test]
    fn a_plaintext_client_on_a_tls_port_is_told_so_in_one_line() {
        let m = "this port requires TLS: connect with https:// and the cluster CA (--ca)";
        let e = Error::DeadlineExceeded { elapsed: Duration::ZERO, last: Box::new(Error::TlsRequired(m.into())) };
        assert_eq!(explain(&e, &["a:1".into()]), m);
    }
}
