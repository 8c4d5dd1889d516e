//! `baton trigger create|list|delete`: the event triggers that start a job
//! for every matching published event.

use std::collections::BTreeMap;
use std::path::PathBuf;

use baton_client::{Error, proto};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::cli::{Global, parse_kv, print_json, print_page};
use crate::cli_schedule::{file_err, load_job, namespace_of};
use crate::cli_time;
use crate::workflow_file;

#[derive(Subcommand, Debug)]
pub enum TriggerCmd {
    /// Create a trigger (idempotent by namespace and name).
    Create(TriggerArgs),
    /// Triggers in id order.
    List {
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long)]
        topic: Option<String>,
        /// Triggers per page (1..=1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start after this trigger id: the previous page's next_page_token.
        #[arg(long)]
        after: Option<u64>,
    },
    /// Delete a trigger; jobs it started go on.
    Delete { id: u64 },
}

#[derive(Args, Debug, Clone, Default)]
pub struct TriggerArgs {
    /// Unique in the namespace.
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub topic: String,
    /// A job file (TOML or JSON; `-` for stdin): each matching event starts
    /// this job; its shards without a payload get the event's payload.
    #[arg(short = 'f', long = "file", conflicts_with = "workflow")]
    pub file: Option<PathBuf>,
    /// A workflow file (docs/workflows.md): each matching event starts this
    /// workflow; the shards without a payload of its first steps get the
    /// event's payload.
    #[arg(long)]
    pub workflow: Option<PathBuf>,
    /// Only events whose attribute `key` equals `value` (repeatable; all must match).
    #[arg(long = "filter", value_parser = parse_kv)]
    pub filter: Vec<(String, String)>,
    /// At most one run per debounce key in this window (DUR).
    #[arg(long)]
    pub debounce: Option<String>,
    /// The event attribute whose value is the debounce key (default: one key).
    #[arg(long, requires = "debounce")]
    pub debounce_key: Option<String>,
    /// Default: the job file's namespace, else `default`.
    #[arg(long)]
    pub namespace: Option<String>,
}

/// Flags and the template file's spec → trigger spec. Pure.
pub fn spec_from(a: &TriggerArgs, template: proto::trigger_spec::Template) -> Result<proto::TriggerSpec, Error> {
    let file_ns = match &template {
        proto::trigger_spec::Template::Job(j) => j.namespace.clone(),
        proto::trigger_spec::Template::Workflow(w) => w.namespace.clone(),
    };
    Ok(proto::TriggerSpec {
        namespace: namespace_of(a.namespace.as_deref(), &file_ns)?,
        name: a.name.clone(),
        topic: a.topic.clone(),
        filter: a.filter.iter().cloned().collect(),
        template: Some(template),
        debounce_ms: a.debounce.as_deref().map(|d| cli_time::duration_ms("--debounce", d)).transpose()?.unwrap_or(0),
        debounce_key: a.debounce_key.clone().unwrap_or_default(),
    })
}

/// The documented JSON form of a trigger.
pub fn trigger_json(t: &proto::Trigger) -> Value {
    json!({
        "id": t.id, "namespace": t.namespace, "name": t.name, "topic": t.topic, "filter": t.filter,
        "debounce_ms": (t.debounce_ms != 0).then_some(t.debounce_ms),
        "debounce_key": (!t.debounce_key.is_empty()).then_some(&t.debounce_key),
        "created_ms": t.created_ms, "runs_started": t.runs_started, "events_debounced": t.events_debounced,
    })
}

pub fn list_table(triggers: &[proto::Trigger]) -> String {
    let mut out = format!(
        "{:>6}  {:<16} {:<20} {:<20} {:>6} {:>9}  FILTER\n",
        "ID", "NAMESPACE", "NAME", "TOPIC", "RUNS", "DEBOUNCED"
    );
    for t in triggers {
        let filter: BTreeMap<_, _> = t.filter.iter().collect();
        let filter: Vec<String> = filter.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let debounce = match (t.debounce_ms, t.debounce_key.as_str()) {
            (0, _) => String::new(),
            (ms, "") => format!("  debounce {}", crate::cli_job::human_ms(ms)),
            (ms, key) => format!("  debounce {} by {key}", crate::cli_job::human_ms(ms)),
        };
        out.push_str(&format!(
            "{:>6}  {:<16} {:<20} {:<20} {:>6} {:>9}  {}{debounce}\n",
            t.id,
            t.namespace,
            t.name,
            t.topic,
            t.runs_started,
            t.events_debounced,
            filter.join(",")
        ));
    }
    out
}

pub async fn trigger(g: &Global, cmd: TriggerCmd) -> Result<(), Error> {
    let client = g.client()?;
    match cmd {
        TriggerCmd::Create(a) => {
            use proto::trigger_spec::Template;
            let template = match (&a.file, &a.workflow) {
                (Some(f), None) => Template::Job(load_job(f)?),
                (None, Some(w)) => Template::Workflow(workflow_file::load(w).map_err(file_err)?),
                _ => return Err(Error::InvalidArgument("give -f JOB_FILE or --workflow FILE".into())),
            };
            let spec = spec_from(&a, template)?;
            let r = client.create_trigger(spec).await?;
            if g.json {
                print_json(&json!({"trigger_id": r.trigger_id, "duplicate": r.duplicate}));
            } else {
                let what = if r.duplicate { "already existed" } else { "created" };
                println!("trigger {} {what}", r.trigger_id);
            }
        }
        TriggerCmd::List { namespace, topic, limit, after } => {
            let r = client
                .list_triggers(proto::ListTriggersRequest {
                    namespace: namespace.unwrap_or_default(),
                    topic: topic.unwrap_or_default(),
                    page_size: limit,
                    page_token: after.unwrap_or(0),
                    ..Default::default()
                })
                .await?;
            let items = r.triggers.iter().map(trigger_json).collect();
            print_page(g, "triggers", items, &list_table(&r.triggers), r.next_page_token);
        }
        TriggerCmd::Delete { id } => {
            client.delete_trigger(id).await?;
            if g.json {
                print_json(&json!({"trigger_id": id, "deleted": true}));
            } else {
                println!("trigger {id} deleted");
            }
        }
    }
    Ok(())
}
