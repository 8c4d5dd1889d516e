//! `baton dev`: a local cluster doing real work, for a first look.
//!
//! Starts three `baton serve` processes on loopback (data under `.baton-dev/`),
//! a few demo workers (SDK `Worker`s), submits the word-count workflow of
//! `docs/workflows/wordcount.toml` over this repository's docs (a dynamic map
//! with a reduce, a choice, a join), shows its steps progressing, and checks
//! its result against one computed here. It keeps running until Ctrl-C
//! unless `--exit-after-demo` is given.
//!
//! The demo workers understand a small payload language (documented in
//! docs/workflows.md), so workflows written as files do real work on them.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_client::workflow::{Step, WorkflowBuilder, choose, emit_children};
use baton_client::{Client, ClientConfig, TaskContext, TaskError, Worker, proto};
use clap::Args;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::cli_workflow::{self, WatchView};

#[derive(Args)]
pub struct DevArgs {
    /// Cluster size (3 or 5).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Demo workers to start.
    #[arg(long, default_value_t = 3)]
    pub workers: u32,
    /// Files (map shards) of the generated corpus the demo counts when none
    /// of README.md, ARCHITECTURE.md and docs/ is here (outside the repository).
    #[arg(long, default_value_t = 24)]
    pub shards: u32,
    /// Node i uses ports base+i (Raft), base+100+i (API), base+200+i (HTTP).
    #[arg(long, default_value_t = 7100)]
    pub port_base: u16,
    /// Where node data and logs go; wiped at start.
    #[arg(long, default_value = ".baton-dev")]
    pub dir: PathBuf,
    /// Stop everything and exit once the demo workflow is done (for CI).
    #[arg(long)]
    pub exit_after_demo: bool,
    /// Run the cluster with TLS and auth on: generate a CA, node and client
    /// certificates and tokens under `<dir>/tls` and print how to use them.
    #[arg(long)]
    pub secure: bool,
}

/// What the demo counts when run from the repository root.
pub const DEMO_CORPUS: [&str; 3] = ["README.md", "ARCHITECTURE.md", "docs"];
/// Words the demo's reduce keeps.
pub const DEMO_TOP: usize = 10;
/// Over this many words, the demo's choice takes the full report.
pub const DEMO_FULL_OVER: u64 = 10_000;

/// Deterministic demo text: file `i` of the generated corpus.
fn paragraph(i: u32) -> String {
    const WORDS: [&str; 16] = [
        "raft", "shard", "lease", "token", "fence", "leader", "worker", "commit", "apply", "log", "vote", "term",
        "snapshot", "quorum", "batch", "task",
    ];
    let mut x = 0x9e37_79b9u32.wrapping_mul(i + 1);
    (0..(40 + i % 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            WORDS[(x % 16) as usize]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The demo workflow (the same as `docs/workflows/wordcount.toml` for the
/// default corpus): count the words of the files under `corpus` (paths,
/// space-separated) with a dynamic map and a reduce, choose a full or a
/// quick report by the total, and publish the one that ran.
pub fn demo_workflow(corpus: &str) -> proto::WorkflowSpec {
    let one = |payload: &str| proto::JobSpec { payloads: vec![payload.as_bytes().to_vec()], ..Default::default() };
    let count = proto::JobSpec { max_attempts: 5, attempt_timeout_ms: 60_000, ..one(corpus) };
    WorkflowBuilder::new("demo", "docs-wordcount")
        .label("source", "docs")
        .step(Step::job("count", count).dynamic().reduce(DEMO_TOP.to_string()))
        .step(
            Step::job("check", one(&format!("choose-by-words:{DEMO_FULL_OVER}:full:quick")))
                .depends_on(["count"])
                .choice(),
        )
        .step(Step::job("full", one(&format!("report:{DEMO_TOP}"))).depends_on(["check", "count"]))
        .step(Step::job("quick", one("report:3")).depends_on(["check", "count"]))
        .step(Step::job("publish", one("pass")).depends_on(["full", "quick"]).trigger(proto::TriggerRule::NoneFailed))
        .result_step("publish")
        .build()
}

/// Word counts of one text, or of many merged.
pub type Counts = BTreeMap<String, u64>;

/// Add the words of `text` (maximal runs of letters and digits, lowercased).
pub fn count_words_into(text: &str, counts: &mut Counts) {
    for w in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        *counts.entry(w.to_lowercase()).or_default() += 1;
    }
}

/// What the demo's reduce returns: the merged counts, summarized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub total: u64,
    pub distinct: u64,
    /// Shard results merged: one per file.
    pub files: u64,
    /// The most frequent words, most frequent first (ties by word).
    pub top: Vec<(String, u64)>,
}

impl Summary {
    pub fn of(counts: &Counts, files: u64, top: usize) -> Summary {
        let mut all: Vec<(String, u64)> = counts.iter().map(|(w, c)| (w.clone(), *c)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(top);
        Summary { total: counts.values().sum(), distinct: counts.len() as u64, files, top: all }
    }

    /// The text a `report:N` step returns.
    pub fn report(&self, n: usize) -> String {
        let top: Vec<String> = self.top.iter().take(n).map(|(w, c)| format!("{w} {c}")).collect();
        format!(
            "{} words ({} distinct) in {} files; top {}: {}",
            self.total,
            self.distinct,
            self.files,
            top.len(),
            top.join(", ")
        )
    }
}

/// The files a generator's payload names (paths separated by whitespace):
/// each file as given, and the regular files of each directory; sorted.
pub fn list_files(paths: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths.split_whitespace().map(Path::new) {
        if p.is_dir() {
            for e in std::fs::read_dir(p)? {
                let path = e?.path();
                if path.is_file() {
                    files.push(path);
                }
            }
        } else {
            std::fs::metadata(p).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
            files.push(p.to_path_buf());
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// The published result the demo workflow must produce for `corpus`,
/// computed here without the cluster.
pub fn reference_result(corpus: &str) -> std::io::Result<String> {
    let files = list_files(corpus)?;
    let mut counts = Counts::new();
    for f in &files {
        count_words_into(&std::fs::read_to_string(f)?, &mut counts);
    }
    let s = Summary::of(&counts, files.len() as u64, DEMO_TOP);
    Ok(if s.total > DEMO_FULL_OVER { s.report(DEMO_TOP) } else { s.report(3) })
}

/// A client error inside a handler: retry what may pass, fail the rest.
fn task_error(e: baton_client::Error) -> TaskError {
    if e.is_retryable() { TaskError::retryable(e) } else { TaskError::fatal(e) }
}

/// The result of this step's first input (in step order).
async fn first_input(ctx: &TaskContext) -> Result<Vec<u8>, TaskError> {
    let step = ctx
        .workflow()
        .and_then(|w| w.inputs.first())
        .map(|i| i.step.clone())
        .ok_or_else(|| TaskError::fatal("this step has no input: it needs a succeeded predecessor"))?;
    ctx.input(&step).await.map_err(task_error)
}

async fn first_input_summary(ctx: &TaskContext) -> Result<Summary, TaskError> {
    let raw = first_input(ctx).await?;
    serde_json::from_slice(&raw)
        .map_err(|e| TaskError::fatal(format!("the first input is not a word-count summary: {e}")))
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, TaskError> {
    serde_json::to_vec(v).map_err(TaskError::fatal)
}

/// The demo workers' handler: plain job shards count words; workflow shards
/// follow the payload language of docs/workflows.md.
pub async fn demo_handler(ctx: TaskContext) -> Result<Vec<u8>, TaskError> {
    let text = std::str::from_utf8(&ctx.payload).map_err(TaskError::fatal)?.to_string();
    let role = ctx.workflow().map(|w| proto::StepRole::try_from(w.role).unwrap_or(proto::StepRole::Map));
    let counting = role.is_none() || (role == Some(proto::StepRole::Map) && text.starts_with("file:"));
    // One line per attempt in the task log: `baton job logs ID` shows it.
    let kind = match role {
        Some(proto::StepRole::Generate) => "generator",
        Some(proto::StepRole::Map) => "map",
        Some(proto::StepRole::Reduce) => "reduce",
        _ => "job",
    };
    ctx.info(format_args!("{kind} shard {}, attempt {}", ctx.shard, ctx.attempt));
    if counting {
        // A little simulated work, so the progress is visible.
        let work = Duration::from_millis(150 + (ctx.shard as u64 * 37) % 250);
        let cancel = ctx.cancellation();
        tokio::select! {
            _ = tokio::time::sleep(work) => {}
            _ = cancel.cancelled() => return Err(TaskError::retryable("cancelled")),
        }
    }
    match role {
        None => Ok(text.split_whitespace().count().to_string().into_bytes()),
        Some(proto::StepRole::Generate) => {
            let files = list_files(&text).map_err(TaskError::fatal)?;
            let children: Vec<Vec<u8>> = files.iter().map(|f| format!("file:{}", f.display()).into_bytes()).collect();
            Ok(emit_children(&children))
        }
        Some(proto::StepRole::Reduce) => {
            let top = match text.trim() {
                "" => DEMO_TOP,
                n => n
                    .parse()
                    .map_err(|_| TaskError::fatal(format!("a reduce payload is a number of words; got {n:?}")))?,
            };
            let mut counts = Counts::new();
            let mut files = 0;
            let mut input = Box::pin(ctx.reduce_input());
            while let Some(r) = input.next().await {
                let r = r.map_err(task_error)?;
                let c: Counts = serde_json::from_slice(&r.result)
                    .map_err(|e| TaskError::fatal(format!("shard {} is not word counts: {e}", r.shard)))?;
                for (w, n) in c {
                    *counts.entry(w).or_default() += n;
                }
                files += 1;
            }
            to_json(&Summary::of(&counts, files, top))
        }
        Some(_) => map_verb(&ctx, &text).await,
    }
}

/// A workflow map shard: run its payload's verb.
async fn map_verb(ctx: &TaskContext, text: &str) -> Result<Vec<u8>, TaskError> {
    let mut counts = Counts::new();
    if let Some(path) = text.strip_prefix("file:") {
        let body = std::fs::read_to_string(path).map_err(|e| TaskError::fatal(format!("{path}: {e}")))?;
        count_words_into(&body, &mut counts);
        to_json(&counts)
    } else if let Some(rule) = text.strip_prefix("choose-by-words:") {
        let parts: Vec<&str> = rule.split(':').collect();
        let &[limit, over, under] = &parts[..] else {
            return Err(TaskError::fatal(format!("choose-by-words:N:OVER:UNDER expected; got {text:?}")));
        };
        let limit: u64 = limit.parse().map_err(|_| TaskError::fatal(format!("{limit:?} is not a number")))?;
        let s = first_input_summary(ctx).await?;
        Ok(choose(&[if s.total > limit { over } else { under }]))
    } else if let Some(names) = text.strip_prefix("choose:") {
        let names: Vec<&str> = names.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
        Ok(choose(&names))
    } else if let Some(n) = text.strip_prefix("report:") {
        let n: usize = n.trim().parse().map_err(|_| TaskError::fatal(format!("report:N expected; got {text:?}")))?;
        Ok(first_input_summary(ctx).await?.report(n).into_bytes())
    } else if text == "pass" {
        first_input(ctx).await
    } else if let Some(why) = text.strip_prefix("fail:") {
        Err(TaskError::fatal(why))
    } else {
        count_words_into(text, &mut counts);
        to_json(&counts)
    }
}

/// A standalone demo worker (`baton demo-worker`): runs the demo handler
/// until `shutdown`, then leaves gracefully.
pub async fn demo_worker(
    endpoints: Vec<String>,
    tls: Option<baton_client::TlsOptions>,
    name: &str,
    capacity: u32,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let mut b = Worker::builder().endpoints(endpoints).name(name).capacity(capacity).handler(demo_handler);
    if let Some(t) = tls {
        b = b.tls(t);
    }
    let w = b.build()?;
    let stats = w.run(shutdown).await?;
    tracing::info!(?stats, "demo worker stopped");
    Ok(())
}

/// The credentials of a `--secure` dev cluster: an admin token for the
/// demo's client, a worker token for its workers, and the client
/// certificate standing in for an admin token (`[[auth.certs]]`), so the
/// CLI needs only the certificate.
struct DevAuth {
    /// The `[auth]` config every node reads.
    config: PathBuf,
    admin_token: String,
    worker_token: String,
}

/// The SAN of the client certificate `write_dev_certs` makes.
const DEV_CLIENT_CERT_NAME: &str = "baton-client";

fn write_dev_auth(dir: &Path) -> anyhow::Result<DevAuth> {
    let (admin_token, worker_token) = (crate::auth::new_token(), crate::auth::new_token());
    let toml = format!(
        "# Written by `baton dev --secure`: tokens are stored as their SHA-256.\n\
         [[auth.tokens]]\nname = \"dev-admin\"\nsha256 = \"{}\"\ngrants = [\"admin:*\"]\n\n\
         [[auth.tokens]]\nname = \"dev-worker\"\nsha256 = \"{}\"\ngrants = [\"worker:*\"]\n\n\
         [[auth.certs]]\nname = \"dev-client-cert\"\ndns_name = \"{DEV_CLIENT_CERT_NAME}\"\ngrants = [\"admin:*\"]\n",
        crate::auth::hash_token(&admin_token),
        crate::auth::hash_token(&worker_token),
    );
    let config = dir.join("auth.toml");
    std::fs::write(&config, toml)?;
    crate::tls::certgen::write_private(&dir.join("admin.token"), &admin_token)?;
    crate::tls::certgen::write_private(&dir.join("worker.token"), &worker_token)?;
    Ok(DevAuth { config, admin_token, worker_token })
}

/// How to point the CLI and the SDK at a `--secure` dev cluster.
fn print_secure_usage(c: &crate::tls::certgen::DevCerts, endpoints: &[String]) {
    let (ca, cert, key) = (c.ca.display(), c.client_cert.display(), c.client_key.display());
    let dir = c.ca.parent().map_or_else(String::new, |p| p.display().to_string());
    println!("secure: TLS on every port and [auth] on; certificates and tokens are in {dir}");
    println!("  CLI: export BATON_CA={ca} BATON_CERT={cert} BATON_KEY={key}");
    println!("       (the client certificate is an admin credential; endpoints are https://{})", endpoints[0]);
    println!("       or with a token instead of the certificate: --ca {ca} --token-file {dir}/admin.token");
    println!(
        "  SDK: ClientConfig {{ tls: Some(TlsOptions::from_files(Some(\"{ca}\"), None, None)?), token: Some(<{dir}/admin.token>), .. }}"
    );
    println!("       workers: Worker::builder().tls(...).token(<{dir}/worker.token>)");
}

struct Nodes {
    children: Vec<Child>,
}

impl Nodes {
    fn stop(&mut self) {
        for c in &self.children {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &mut self.children {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The paths the demo counts: the repository's docs when run from its root,
/// else a generated corpus of `--shards` files under `--dir`.
fn demo_corpus(a: &DevArgs) -> anyhow::Result<String> {
    let here: Vec<&str> = DEMO_CORPUS.iter().copied().filter(|p| Path::new(p).exists()).collect();
    if !here.is_empty() {
        return Ok(here.join(" "));
    }
    let dir = a.dir.join("corpus");
    std::fs::create_dir_all(&dir)?;
    for i in 0..a.shards {
        std::fs::write(dir.join(format!("part-{i:04}.txt")), paragraph(i))?;
    }
    let shown = dir.display().to_string();
    anyhow::ensure!(!shown.contains(char::is_whitespace), "--dir must not contain whitespace: {shown}");
    Ok(shown)
}

pub async fn run(a: DevArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.nodes == 3 || a.nodes == 5, "--nodes must be 3 or 5");
    anyhow::ensure!(a.shards > 0 && a.workers > 0, "--shards and --workers must be at least 1");
    let b = a.port_base;
    let raft = |i: u64| format!("127.0.0.1:{}", b as u64 + i);
    let api = |i: u64| format!("127.0.0.1:{}", b as u64 + 100 + i);
    let http = |i: u64| format!("127.0.0.1:{}", b as u64 + 200 + i);
    let members: Vec<String> = (1..=a.nodes).map(|i| format!("{i}={}/{}", raft(i), api(i))).collect();
    if a.dir.exists() {
        std::fs::remove_dir_all(&a.dir)?;
    }
    std::fs::create_dir_all(&a.dir)?;
    let exe = std::env::current_exe()?;
    let certs = if a.secure { Some(crate::tls::certgen::write_dev_certs(&a.dir.join("tls"), a.nodes)?) } else { None };
    let auth = if a.secure { Some(write_dev_auth(&a.dir.join("tls"))?) } else { None };
    let mut nodes = Nodes { children: Vec::new() };
    for i in 1..=a.nodes {
        let log = std::fs::File::create(a.dir.join(format!("node{i}.log")))?;
        let mut cmd = Command::new(&exe);
        if let Some(c) = &certs {
            let (cert, key) = &c.nodes[i as usize - 1];
            cmd.arg("serve").arg("--tls-ca").arg(&c.ca).arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
            cmd.args(["--tls-client-auth", "optional"]);
        } else {
            cmd.arg("serve");
        }
        if let Some(auth) = &auth {
            cmd.arg("--config").arg(&auth.config);
        }
        let child = cmd
            .args(["--node-id", &i.to_string()])
            .arg("--data-dir")
            .arg(a.dir.join(format!("node{i}")))
            .args(["--raft-listen", &raft(i), "--api-listen", &api(i), "--http-listen", &http(i)])
            .args(["--initial-members", &members.join(",")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        nodes.children.push(child);
    }
    let endpoints: Vec<String> = (1..=a.nodes).map(api).collect();
    println!("baton dev: {} nodes starting (logs in {}/node*.log)", a.nodes, a.dir.display());

    let tls = match &certs {
        Some(c) => Some(baton_client::TlsOptions::from_files(
            Some(c.ca.as_path()),
            Some(c.client_cert.as_path()),
            Some(c.client_key.as_path()),
        )?),
        None => None,
    };
    let mut cfg = ClientConfig::new(endpoints.clone());
    cfg.deadline = Duration::from_secs(30);
    cfg.tls = tls.clone();
    cfg.token = auth.as_ref().map(|a| a.admin_token.clone());
    let client = Client::new(cfg)?;
    let started = Instant::now();
    let leader = loop {
        if let Ok(s) = client.status(None).await
            && s.leader_id != 0
        {
            break s.leader_id;
        }
        for (i, c) in nodes.children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait()? {
                anyhow::bail!("node {} exited with {status}; see {}/node{}.log", i + 1, a.dir.display(), i + 1);
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "no leader after 30 s; see {}/node*.log",
            a.dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("cluster up: leader is node {leader} ({:?})", started.elapsed());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for w in 1..=a.workers {
        let mut builder = Worker::builder();
        if let Some(t) = &tls {
            builder = builder.tls(t.clone());
        }
        if let Some(auth) = &auth {
            builder = builder.token(auth.worker_token.clone());
        }
        let worker = builder
            .endpoints(endpoints.clone())
            .name(format!("dev-worker-{w}"))
            .capacity(2)
            .shutdown_grace(Duration::from_secs(5))
            .handler(demo_handler)
            .build()?;
        let mut rx = stop_rx.clone();
        workers.push(tokio::spawn(worker.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }
    println!("{} demo workers started", a.workers);
    if let Some(c) = &certs {
        print_secure_usage(c, &endpoints);
    }

    let corpus = demo_corpus(&a)?;
    let spec = demo_workflow(&corpus);
    let wf = client.submit_workflow(spec).await?;
    println!(
        "submitted workflow {} \"docs-wordcount\" ({} steps): a dynamic map over {corpus} with a reduce, a choice and a join",
        wf.workflow_id, wf.steps
    );
    let view = if std::io::stdout().is_terminal() { WatchView::Bars } else { WatchView::Lines };
    let done = cli_workflow::watch(&client, wf.workflow_id, view).await?;
    let expected = reference_result(&corpus)?;
    let ok = if done.status == proto::WorkflowStatus::Succeeded as i32 {
        let r = client.workflow_result(wf.workflow_id).await?;
        let got = String::from_utf8_lossy(&r.result).into_owned();
        println!("result (step {}, job {}, token {}):\n  {got}", r.step, r.job_id, r.token);
        if got == expected {
            println!("this equals the reference computed here without the cluster");
        } else {
            println!("this differs from the reference computed here:\n  {expected}");
        }
        got == expected
    } else {
        print!("{}", cli_workflow::workflow_table(&done));
        false
    };
    println!("metrics:  http://{}/metrics   status: baton cluster status --endpoints {}", http(1), endpoints.join(","));
    println!("try:      baton workflow get {0}   baton workflow result {0}   (docs/workflows.md)", wf.workflow_id);
    println!("          baton job logs <job id from workflow get>   (what each shard's handler logged)");

    if !a.exit_after_demo {
        println!(
            "the cluster keeps running; submit more with `baton workflow submit -f docs/workflows/release.json` \
             or `baton job submit --shards 10`. Ctrl-C stops everything."
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    println!("stopping workers and nodes");
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }
    nodes.stop();
    anyhow::ensure!(ok, "the demo workflow did not produce the expected result");
    println!("done");
    Ok(())
}

#[cfg(test)]
#[path = "dev_tests.rs"]
mod tests;
