//! `baton event publish`: publish an event; every trigger on its topic
//! whose filter matches starts a job, in the event's own log entry.

use baton_client::{Error, proto};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::cli::{Global, parse_kv, print_json};

#[derive(Subcommand, Debug)]
pub enum EventCmd {
    /// Publish an event (idempotent by --id within 24 h).
    Publish(PublishArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub struct PublishArgs {
    pub topic: String,
    /// The payload: TEXT as it is, `@FILE` for a file's bytes, `@-` for stdin.
    #[arg(long, default_value = "")]
    pub payload: String,
    /// The event id; default: a fresh UUID (printed), so a rerun of the
    /// command is another event.
    #[arg(long)]
    pub id: Option<String>,
    /// An attribute `key=value` for triggers' filters (repeatable).
    #[arg(long = "attr", value_parser = parse_kv)]
    pub attrs: Vec<(String, String)>,
    #[arg(long, default_value = "default")]
    pub namespace: String,
}

/// The bytes `--payload` names.
pub fn payload_bytes(arg: &str) -> Result<Vec<u8>, Error> {
    match arg.strip_prefix('@') {
        Some("-") => std::io::read_to_string(std::io::stdin())
            .map(String::into_bytes)
            .map_err(|e| Error::InvalidArgument(format!("--payload @-: cannot read stdin: {e}"))),
        Some(path) => std::fs::read(path).map_err(|e| Error::InvalidArgument(format!("--payload @{path}: {e}"))),
        None => Ok(arg.as_bytes().to_vec()),
    }
}

/// Flags → request; the event id is generated here when none is given,
/// so that it can be printed. Pure but for reading a payload file.
pub fn request_from(a: &PublishArgs) -> Result<proto::PublishEventRequest, Error> {
    Ok(proto::PublishEventRequest {
        namespace: a.namespace.clone(),
        topic: a.topic.clone(),
        event_id: a.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        payload: payload_bytes(&a.payload)?,
        attributes: a.attrs.iter().cloned().collect(),
    })
}

pub async fn event(g: &Global, cmd: EventCmd) -> Result<(), Error> {
    let client = g.client()?;
    match cmd {
        EventCmd::Publish(a) => {
            let req = request_from(&a)?;
            let event_id = req.event_id.clone();
            let r = client.publish_event(req).await?;
            if g.json {
                print_json(&json!({
                    "event_id": event_id, "duplicate": r.duplicate, "debounced": r.debounced,
                    "runs": r.runs.iter().map(|x| json!({
                        "trigger_id": x.trigger_id,
                        "job_id": (x.job_id != 0).then_some(x.job_id),
                        "refused": (!x.refused.is_empty()).then_some(&x.refused),
                    })).collect::<Vec<_>>(),
                }));
            } else if r.duplicate {
                println!("event {event_id} was already published; nothing new started");
            } else {
                println!(
                    "event {event_id} published: {} run(s) started, {} debounced",
                    r.runs.iter().filter(|x| x.job_id != 0).count(),
                    r.debounced
                );
                for x in &r.runs {
                    match x.job_id {
                        0 => println!("  trigger {}: refused: {}", x.trigger_id, x.refused),
                        j => println!("  trigger {}: job {j}", x.trigger_id),
                    }
                }
            }
        }
    }
    Ok(())
}
