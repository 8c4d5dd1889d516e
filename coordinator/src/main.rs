//! The `baton` binary: `baton serve` runs a coordinator node; `baton dev`
//! runs a local demo cluster; `baton cluster|job|namespace|workflow|schedule|
//! event|trigger|worker`
//! operate a cluster.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;

use baton_coordinator::cli::{self, ClusterCmd, Global, JobCmd, WorkerCmd};
use baton_coordinator::cli_event::{self, EventCmd};
use baton_coordinator::cli_job::{self, NamespaceCmd};
use baton_coordinator::cli_recovery;
use baton_coordinator::cli_schedule::{self, ScheduleCmd};
use baton_coordinator::cli_trigger::{self, TriggerCmd};
use baton_coordinator::cli_workflow::{self, WorkflowCmd};
use baton_coordinator::config::Config;

#[derive(Parser)]
#[command(name = "baton", version, about = "Raft-replicated, fault-tolerant task coordinator")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a coordinator node.
    Serve(ServeArgs),
    /// Run a local 3-node cluster with demo workers and a demo workflow.
    Dev(baton_coordinator::dev::DevArgs),
    /// Cluster status and membership.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Submit, inspect, list, cancel and watch jobs; pause, resume,
    /// reprioritize, retry and delete them, or cancel one shard.
    #[command(subcommand)]
    Job(JobCmd),
    /// A namespace's settings: pause and resume all its jobs, retention.
    #[command(subcommand)]
    Namespace(NamespaceCmd),
    /// Submit, inspect, watch and cancel workflows; approve or reject gates.
    #[command(subcommand)]
    Workflow(WorkflowCmd),
    /// Create, list, inspect, pause, resume, delete and run schedules.
    #[command(subcommand)]
    Schedule(ScheduleCmd),
    /// Publish events to the triggers of their topic.
    #[command(subcommand)]
    Event(EventCmd),
    /// Create, list and delete event triggers.
    #[command(subcommand)]
    Trigger(TriggerCmd),
    /// Worker sessions.
    #[command(subcommand)]
    Worker(WorkerCmd),
    /// Make API tokens and their hashes for `[[auth.tokens]]`.
    #[command(subcommand)]
    Auth(baton_coordinator::cli_auth::AuthCmd),
    /// Make a CA and node and client certificates for a test cluster.
    #[command(subcommand)]
    Certs(baton_coordinator::cli_certs::CertsCmd),
    /// Run a demo worker (word counting), e.g. in a container next to the cluster.
    DemoWorker {
        #[arg(long, default_value = "demo-worker")]
        name: String,
        #[arg(long, default_value_t = 2)]
        capacity: u32,
    },
    /// Exit 0 if the node's /readyz answers 200 (a container healthcheck
    /// without curl).
    Healthcheck {
        #[arg(long, default_value = "127.0.0.1:7301")]
        http: String,
    },
}

/// Flags override the config file and BATON_* environment variables.
#[derive(clap::Args, Serialize)]
struct ServeArgs {
    /// TOML config file.
    #[arg(long, short)]
    #[serde(skip)]
    config: Option<PathBuf>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    raft_listen: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    raft_advertise: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    api_listen: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    api_advertise: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_listen: Option<String>,
    /// Members of a new cluster: `id=raft_host:port/api_host:port`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    initial_members: Option<Vec<String>>,
    /// Forward calls to the leader (true) or answer with a leader hint (false).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    forward_to_leader: Option<bool>,
    /// `text` or `json`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<String>,
    /// Remove this node from the membership on SIGTERM.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    leave_on_shutdown: Option<bool>,
    /// Derive the node id from a StatefulSet-style hostname `name-N` (id = N + 1).
    #[arg(long)]
    #[serde(skip)]
    node_id_from_ordinal: bool,
    /// Create a new cluster now, from this node and --initial-members (or
    /// this node alone). Refused on an initialized data dir, and when a
    /// member already belongs to a cluster.
    #[arg(long)]
    #[serde(skip)]
    init: bool,
    /// Advertise `<hostname>.<domain>` with the listen ports (e.g. a headless Service domain).
    #[arg(long)]
    #[serde(skip)]
    advertise_domain: Option<String>,
    #[command(flatten)]
    #[serde(skip_serializing_if = "WorkerFlags::is_empty")]
    workers: WorkerFlags,
    #[command(flatten)]
    #[serde(skip_serializing_if = "TlsFlags::is_empty")]
    tls: TlsFlags,
}

/// `[tls]` from flags (the rest of the section from the file or env).
#[derive(clap::Args, Serialize, Default)]
struct TlsFlags {
    /// Cluster CA bundle (PEM): peers' certificates must chain to it.
    #[arg(long = "tls-ca")]
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<PathBuf>,
    /// This node's certificate chain (PEM), for both ports and as a client to peers.
    #[arg(long = "tls-cert")]
    #[serde(skip_serializing_if = "Option::is_none")]
    cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long = "tls-key")]
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<PathBuf>,
    /// CA bundle for API client certificates (default: --tls-ca).
    #[arg(long = "tls-client-ca")]
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ca: Option<PathBuf>,
    /// none, optional or required: client certificates on the API port.
    #[arg(long = "tls-client-auth")]
    #[serde(skip_serializing_if = "Option::is_none")]
    client_auth: Option<String>,
}

impl TlsFlags {
    fn is_empty(&self) -> bool {
        self.ca.is_none()
            && self.cert.is_none()
            && self.key.is_none()
            && self.client_ca.is_none()
            && self.client_auth.is_none()
    }
}

/// Fill in what `--node-id-from-ordinal` and `--advertise-domain` derive from the hostname.
fn derive_from_hostname(args: &mut ServeArgs) -> anyhow::Result<()> {
    if !args.node_id_from_ordinal && args.advertise_domain.is_none() {
        return Ok(());
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .context("cannot read this host's name (HOSTNAME or /etc/hostname)")?;
    if args.node_id_from_ordinal {
        let ordinal: u64 = host
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse().ok())
            .with_context(|| format!("hostname {host:?} does not end in -<ordinal>"))?;
        args.node_id = Some(ordinal + 1);
    }
    if let Some(domain) = &args.advertise_domain {
        let port = |listen: &Option<String>, default: u16| {
            listen
                .as_deref()
                .and_then(|l| l.rsplit_once(':'))
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .unwrap_or(default)
        };
        args.raft_advertise = Some(format!("{host}.{domain}:{}", port(&args.raft_listen, 7101)));
        args.api_advertise = Some(format!("{host}.{domain}:{}", port(&args.api_listen, 7201)));
    }
    Ok(())
}

#[derive(clap::Args, Serialize, Default)]
struct WorkerFlags {
    /// Worker lease TTL in ms.
    #[arg(long = "worker-ttl-ms")]
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
    /// Worker heartbeat interval in ms.
    #[arg(long = "worker-heartbeat-ms")]
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat_interval_ms: Option<u64>,
    /// Failure-detector check interval in ms.
    #[arg(long = "worker-check-ms")]
    #[serde(skip_serializing_if = "Option::is_none")]
    check_interval_ms: Option<u64>,
}

impl WorkerFlags {
    fn is_empty(&self) -> bool {
        self.ttl_ms.is_none() && self.heartbeat_interval_ms.is_none() && self.check_interval_ms.is_none()
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn,tower=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// Operator commands end with one line on error and a non-zero exit.
fn operator(g: &Global, r: Result<(), baton_client::Error>) {
    if let Err(e) = r {
        eprintln!("error: {}", cli::explain(&e, &g.endpoints));
        std::process::exit(1);
    }
}

/// Backup, restore and recover end the same way; their client errors get
/// the same explanation as the other operator commands'.
fn recovery(g: &Global, r: Result<(), cli_recovery::RecoveryError>) {
    match r {
        Ok(()) => {}
        Err(cli_recovery::RecoveryError::Client(e)) => operator(g, Err(e)),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve(mut args) => {
            derive_from_hostname(&mut args)?;
            let file = args.config.clone();
            let mut cfg = Config::load(file.as_deref(), &args).context("invalid configuration")?;
            cfg.init = args.init;
            init_tracing(&cfg.log_format);
            baton_coordinator::node::run(cfg, shutdown_signal()).await.context("node failed")?;
        }
        Cmd::Dev(args) => {
            let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
            tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
            baton_coordinator::dev::run(args).await?;
        }
        Cmd::DemoWorker { name, capacity } => {
            init_tracing("text");
            let tls = cli.global.tls()?;
            baton_coordinator::dev::demo_worker(cli.global.endpoints.clone(), tls, &name, capacity, shutdown_signal())
                .await?;
        }
        Cmd::Healthcheck { http } => {
            std::process::exit(if baton_coordinator::http::probe_ready(&http) { 0 } else { 1 })
        }
        Cmd::Cluster(ClusterCmd::Recovery(c)) => recovery(&cli.global, cli_recovery::run(&cli.global, c).await),
        Cmd::Cluster(c) => operator(&cli.global, cli::cluster(&cli.global, c).await),
        Cmd::Job(c) => operator(&cli.global, cli::job(&cli.global, c).await),
        Cmd::Namespace(c) => operator(&cli.global, cli_job::namespace(&cli.global, c).await),
        Cmd::Workflow(c) => operator(&cli.global, cli_workflow::workflow(&cli.global, c).await),
        Cmd::Schedule(c) => operator(&cli.global, cli_schedule::schedule(&cli.global, c).await),
        Cmd::Event(c) => operator(&cli.global, cli_event::event(&cli.global, c).await),
        Cmd::Trigger(c) => operator(&cli.global, cli_trigger::trigger(&cli.global, c).await),
        Cmd::Worker(c) => operator(&cli.global, cli::worker(&cli.global, c).await),
        Cmd::Auth(c) => baton_coordinator::cli_auth::run(c, cli.global.json)?,
        Cmd::Certs(c) => baton_coordinator::cli_certs::run(c, cli.global.json)?,
    }
    Ok(())
}
