//! The job operations (`baton job delete|retry|cancel-task|pause|resume|
//! priority`) and namespace settings (`baton namespace pause|resume|
//! retention|idempotency-window|quota|show`). Tables and sentences by default, `--json` for scripts
//! (fields listed in docs/cli.md). The other `job` commands are in
//! [`crate::cli`].

use std::time::Duration;

use baton_client::{Client, Error, proto};
use clap::{ArgGroup, Subcommand};
use serde_json::{Value, json};

use crate::cli::{Global, print_json};

/// The `job` subcommands that change an existing job; flattened into
/// [`crate::cli::JobCmd`].
#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum JobOpCmd {
    /// Delete a finished job now; it is gone from reads at once (cancel a
    /// running job first).
    Delete { id: u64 },
    /// Run the job's dead and cancelled shards again, each with a fresh
    /// attempt budget.
    Retry { id: u64 },
    /// Cancel one shard; its running attempt is told to stop. A job that
    /// ends with a cancelled shard is failed.
    CancelTask {
        id: u64,
        #[arg(long)]
        shard: u32,
        #[arg(long, default_value = "cancelled from the CLI")]
        reason: String,
    },
    /// Start no new attempt of the job's shards; running attempts finish.
    Pause { id: u64 },
    /// Let a paused job's shards start again.
    Resume { id: u64 },
    /// Set the priority of the job's shards not yet started (higher runs
    /// first; negative values allowed).
    Priority {
        id: u64,
        #[arg(allow_negative_numbers = true)]
        priority: i32,
    },
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum NamespaceCmd {
    /// Start no new attempt of the namespace's jobs, present and future;
    /// running attempts finish.
    Pause { namespace: String },
    /// Let the namespace's jobs start attempts again.
    Resume { namespace: String },
    /// How long the namespace's finished jobs and workflows are kept (for
    /// jobs without a retention of their own, finishing from now on).
    #[command(group(ArgGroup::new("how_long").required(true).args(["days", "ms", "default"])))]
    Retention {
        namespace: String,
        #[arg(long)]
        days: Option<u64>,
        #[arg(long)]
        ms: Option<u64>,
        /// Back to the default (7 days).
        #[arg(long)]
        default: bool,
    },
    /// How long the namespace's idempotency keys (submit keys, event ids)
    /// are remembered, for keys written from now on. After it, a retried
    /// submit with the same key creates a new job.
    #[command(group(ArgGroup::new("how_long").required(true).args(["window", "default"])))]
    IdempotencyWindow {
        namespace: String,
        /// A duration like 90s, 10m or 1h (1 s to 7 days).
        #[arg(long = "for", value_name = "DUR")]
        window: Option<String>,
        /// Back to the default (24 hours).
        #[arg(long)]
        default: bool,
    },
    /// Set or clear the namespace's quotas (0 makes one unlimited; a quota
    /// not given is kept). Submits over a quota are refused with
    /// RESOURCE_EXHAUSTED; what already runs is not touched.
    #[command(group(ArgGroup::new("what").required(true).multiple(true)
        .args(["live_tasks", "payload_bytes", "submits_per_sec", "clear"])))]
    Quota {
        namespace: String,
        /// Most pending + running shards.
        #[arg(long)]
        live_tasks: Option<u64>,
        /// Most payload bytes of live jobs: bytes, or with a unit (64MiB, 1GB).
        #[arg(long, value_name = "SIZE")]
        payload_bytes: Option<String>,
        /// Most submits (jobs, batch items, workflows) per second.
        #[arg(long)]
        submits_per_sec: Option<u32>,
        /// Make every quota unlimited (before applying the others given).
        #[arg(long)]
        clear: bool,
    },
    /// The namespace's pause state, retention, idempotency window, quotas
    /// and usage.
    Show { namespace: String },
}

/// A `SIZE` argument: bytes, or a number with a unit: B, KB/MB/GB/TB
/// (powers of 1000) or KiB/MiB/GiB/TiB (powers of 1024), case-insensitive.
pub fn size_arg(flag: &str, s: &str) -> Result<u64, Error> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || Error::InvalidArgument(format!("{flag} {s:?}: expected bytes or a size like 64MiB or 1GB"));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// `1536` → `1.5KiB`: bytes for people (JSON carries the number).
pub fn human_bytes(n: u64) -> String {
    let units = [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, size) in units {
        if n >= size {
            let tenths = n * 10 / size;
            return if tenths.is_multiple_of(10) {
                format!("{}{name}", tenths / 10)
            } else {
                format!("{}.{}{name}", tenths / 10, tenths % 10)
            };
        }
    }
    format!("{n}B")
}

const DAY_MS: u64 = 24 * 3600 * 1000;

/// The retention `--days`/`--ms`/`--default` ask for: `None` is the
/// default. Zero is refused, so that a typo cannot delete finished work at
/// once; the server checks the upper bound.
pub fn retention_arg(days: Option<u64>, ms: Option<u64>, default: bool) -> Result<Option<Duration>, Error> {
    let ms = match (days, ms, default) {
        (None, None, true) => return Ok(None),
        (Some(d), None, false) => {
            d.checked_mul(DAY_MS).ok_or_else(|| Error::InvalidArgument(format!("--days {d} is too large")))?
        }
        (None, Some(ms), false) => ms,
        _ => return Err(Error::InvalidArgument("give exactly one of --days, --ms and --default".into())),
    };
    if ms == 0 {
        return Err(Error::InvalidArgument("a retention must be positive; --default restores 7 days".into()));
    }
    Ok(Some(Duration::from_millis(ms)))
}

/// The window `--for DUR`/`--default` ask for: `None` is the default. Zero
/// is refused here (it would read as the default); the server checks the
/// bounds.
pub fn idempotency_window_arg(window: Option<&str>, default: bool) -> Result<Option<Duration>, Error> {
    match (window, default) {
        (None, true) => Ok(None),
        (Some(d), false) => match crate::cli_time::duration_ms("--for", d)? {
            0 => Err(Error::InvalidArgument("an idempotency window must be positive; --default restores 24h".into())),
            ms => Ok(Some(Duration::from_millis(ms))),
        },
        _ => Err(Error::InvalidArgument("give exactly one of --for and --default".into())),
    }
}

/// `1500` → `1.5s`, `7 days` → `7d`, `90 min` → `1h30m`: the largest two
/// units, for people (JSON carries the ms).
pub fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        let tenths = ms / 100;
        return if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        };
    }
    let units = [("d", DAY_MS), ("h", 3_600_000), ("m", 60_000), ("s", 1000)];
    let mut parts = Vec::new();
    let mut rest = ms;
    for (name, size) in units {
        if rest >= size && parts.len() < 2 {
            parts.push(format!("{}{name}", rest / size));
            rest %= size;
        } else if !parts.is_empty() {
            // Only adjacent units: "1d0h" is not printed, "1d" is.
            break;
        }
    }
    parts.concat()
}

/// The documented JSON form of a namespace's settings.
pub fn namespace_json(n: &proto::Namespace) -> Value {
    json!({
        "namespace": n.namespace, "paused": n.paused,
        "retention_ms": (n.retention_ms != 0).then_some(n.retention_ms),
        "effective_retention_ms": n.effective_retention_ms,
        "idempotency_window_ms": (n.idempotency_window_ms != 0).then_some(n.idempotency_window_ms),
        "effective_idempotency_window_ms": n.effective_idempotency_window_ms,
        "quota": {
            "live_tasks": (n.quota_live_tasks != 0).then_some(n.quota_live_tasks),
            "payload_bytes": (n.quota_payload_bytes != 0).then_some(n.quota_payload_bytes),
            "submits_per_sec": (n.quota_submits_per_sec != 0).then_some(n.quota_submits_per_sec),
        },
        "usage": { "live_tasks": n.live_tasks, "payload_bytes": n.payload_bytes },
    })
}

/// The namespace's usage against its quotas, one line for people.
pub fn quota_line(n: &proto::Namespace) -> String {
    let of = |used: String, quota: u64, show: fn(u64) -> String| {
        if quota == 0 { format!("{used} (no quota)") } else { format!("{used} of {}", show(quota)) }
    };
    let live = of(n.live_tasks.to_string(), n.quota_live_tasks, |q| q.to_string());
    let bytes = of(human_bytes(n.payload_bytes), n.quota_payload_bytes, human_bytes);
    let rate = match n.quota_submits_per_sec {
        0 => "no quota".to_string(),
        r => format!("at most {r}/s"),
    };
    format!("  usage: live tasks {live}; payload {bytes}; submits {rate}")
}

/// One line for people.
pub fn namespace_line(n: &proto::Namespace) -> String {
    let retention = if n.retention_ms == 0 {
        format!("{} (default)", human_ms(n.effective_retention_ms))
    } else {
        human_ms(n.retention_ms)
    };
    let window = if n.idempotency_window_ms == 0 {
        format!("{} (default)", human_ms(n.effective_idempotency_window_ms))
    } else {
        human_ms(n.idempotency_window_ms)
    };
    let state = if n.paused { "paused (no new attempts start)" } else { "active" };
    format!("namespace {}: {state}; finished jobs kept {retention}; idempotency keys kept {window}", n.namespace)
}

pub async fn job_op(g: &Global, client: &Client, cmd: JobOpCmd) -> Result<(), Error> {
    match cmd {
        JobOpCmd::Delete { id } => {
            client.delete_job(id).await?;
            say(g, json!({"job_id": id, "deleted": true}), format!("job {id} deleted"));
        }
        JobOpCmd::Retry { id } => {
            let n = client.retry_job(id).await?;
            say(
                g,
                json!({"job_id": id, "tasks_requeued": n}),
                format!("job {id}: {n} shard{} requeued with a fresh attempt budget", plural(n)),
            );
        }
        JobOpCmd::CancelTask { id, shard, reason } => {
            let r = client.cancel_task(id, shard, &reason).await?;
            let mut text = format!(
                "shard {shard} of job {id} cancelled{}",
                if r.was_running { "; its running attempt was told to stop" } else { "" }
            );
            if r.job_finished {
                text.push_str("; the job has finished");
            }
            say(
                g,
                json!({"job_id": id, "shard": shard, "was_running": r.was_running, "job_finished": r.job_finished}),
                text,
            );
        }
        JobOpCmd::Pause { id } => {
            client.pause_job(id).await?;
            say(
                g,
                json!({"job_id": id, "paused": true}),
                format!("job {id} paused: no new attempts start; running ones finish"),
            );
        }
        JobOpCmd::Resume { id } => {
            client.resume_job(id).await?;
            say(g, json!({"job_id": id, "paused": false}), format!("job {id} resumed"));
        }
        JobOpCmd::Priority { id, priority } => {
            client.set_priority(id, priority).await?;
            say(g, json!({"job_id": id, "priority": priority}), format!("job {id} priority set to {priority}"));
        }
    }
    Ok(())
}

pub async fn namespace(g: &Global, cmd: NamespaceCmd) -> Result<(), Error> {
    let client = g.client()?;
    let n = match cmd {
        NamespaceCmd::Pause { namespace } => client.pause_namespace(&namespace).await?,
        NamespaceCmd::Resume { namespace } => client.resume_namespace(&namespace).await?,
        NamespaceCmd::Retention { namespace, days, ms, default } => {
            client.set_namespace_retention(&namespace, retention_arg(days, ms, default)?).await?
        }
        NamespaceCmd::IdempotencyWindow { namespace, window, default } => {
            let window = idempotency_window_arg(window.as_deref(), default)?;
            client.set_namespace_idempotency_window(&namespace, window).await?
        }
        NamespaceCmd::Quota { namespace, live_tasks, payload_bytes, submits_per_sec, clear } => {
            let payload_bytes = payload_bytes.map(|s| size_arg("--payload-bytes", &s)).transpose()?;
            let update = baton_client::QuotaUpdate { live_tasks, payload_bytes, submits_per_sec, clear };
            let n = client.set_namespace_quota(&namespace, update).await?;
            say(g, namespace_json(&n), format!("{}\n{}", namespace_line(&n), quota_line(&n)));
            return Ok(());
        }
        NamespaceCmd::Show { namespace } => {
            let n = client.namespace(&namespace).await?;
            say(g, namespace_json(&n), format!("{}\n{}", namespace_line(&n), quota_line(&n)));
            return Ok(());
        }
    };
    say(g, namespace_json(&n), namespace_line(&n));
    Ok(())
}

fn say(g: &Global, v: Value, text: String) {
    if g.json {
        print_json(&v);
    } else {
        println!("{text}");
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
#[path = "cli_job_tests.rs"]
mod tests;
