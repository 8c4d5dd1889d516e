//! The workflow file `baton workflow submit -f` reads (TOML or JSON; the
//! format is documented in docs/workflows.md), and its conversion to the
//! proto spec. Parsing is pure: the CLI reads the bytes, this module turns
//! them into a [`proto::WorkflowSpec`] or an error naming the key at fault.
//!
//! Only what the file format itself adds is checked here (unknown keys,
//! `shards` vs `payloads`, a gate with job keys). Names, limits and the graph
//! (cycles, unknown dependencies, depth) are the cluster's to judge: it
//! refuses a bad spec with INVALID_ARGUMENT naming the field, and checking
//! them twice would let the two drift apart.

use std::collections::BTreeMap;
use std::path::Path;

use baton_client::proto;
use serde::Deserialize;

/// A file that cannot become a workflow spec. Each message names the file
/// position (TOML, JSON) or the key (`steps[2].gate`) at fault.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: not valid TOML: {message}")]
    Toml { path: String, message: String },
    #[error("{path}: not valid JSON: {message}")]
    Json { path: String, message: String },
    #[error("{path}: {field}: {reason}")]
    Invalid { path: String, field: String, reason: String },
}

/// How a workflow file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl Format {
    /// By extension: `.toml` or `.json`; `None` for anything else.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("toml") => Some(Format::Toml),
            Some("json") => Some(Format::Json),
            _ => None,
        }
    }

    /// By content, for stdin and other extensions: a JSON document starts
    /// with `{`, which no TOML document can.
    pub fn sniff(text: &str) -> Format {
        if text.trim_start().starts_with('{') { Format::Json } else { Format::Toml }
    }
}

/// The top level of a workflow file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowFile {
    /// Defaults to `default`, like `baton job submit`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Unset: the SDK picks a fresh key, so a retried submit never duplicates.
    pub idempotency_key: Option<String>,
    pub result_step: Option<String>,
    pub steps: Vec<StepFile>,
}

fn default_namespace() -> String {
    "default".into()
}

/// When a step runs, judged on its predecessors' outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    #[default]
    AllSucceeded,
    AnySucceeded,
    AllDone,
    AnyFailed,
    NoneFailed,
}

impl Trigger {
    fn proto(self) -> proto::TriggerRule {
        match self {
            Trigger::AllSucceeded => proto::TriggerRule::AllSucceeded,
            Trigger::AnySucceeded => proto::TriggerRule::AnySucceeded,
            Trigger::AllDone => proto::TriggerRule::AllDone,
            Trigger::AnyFailed => proto::TriggerRule::AnyFailed,
            Trigger::NoneFailed => proto::TriggerRule::NoneFailed,
        }
    }
}

/// One `[[steps]]` table: a job step (the job keys, optionally `reduce`,
/// `choice`, `dynamic`) or a gate step (`gate` and nothing of a job).
/// Every job key is optional so that a gate carrying one can be named.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepFile {
    pub name: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub trigger: Trigger,
    /// Shards with empty payloads. Without `shards` or `payloads`: one.
    pub shards: Option<u32>,
    /// One UTF-8 payload per shard.
    pub payloads: Option<Vec<String>>,
    pub priority: Option<i32>,
    pub max_attempts: Option<u32>,
    pub attempt_timeout_ms: Option<u64>,
    pub backoff_base_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub constraints: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub reduce: Option<ReduceFile>,
    pub choice: Option<bool>,
    pub dynamic: Option<bool>,
    pub gate: Option<GateFile>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReduceFile {
    /// The reduce task's payload (UTF-8); its input is the map's results.
    #[serde(default)]
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateFile {
    /// Unset: wait for a decision forever.
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// An event gate: approved by the first matching event on this topic.
    pub event_topic: Option<String>,
    /// Attributes the event must hold (with `event_topic`).
    #[serde(default)]
    pub event_filter: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    #[default]
    Reject,
    Approve,
}

impl StepFile {
    /// The job keys this step sets, in file order, to name in an error.
    fn job_keys(&self) -> Vec<&'static str> {
        let set = [
            ("shards", self.shards.is_some()),
            ("payloads", self.payloads.is_some()),
            ("priority", self.priority.is_some()),
            ("max_attempts", self.max_attempts.is_some()),
            ("attempt_timeout_ms", self.attempt_timeout_ms.is_some()),
            ("backoff_base_ms", self.backoff_base_ms.is_some()),
            ("backoff_max_ms", self.backoff_max_ms.is_some()),
            ("constraints", self.constraints.is_some()),
            ("labels", self.labels.is_some()),
            ("reduce", self.reduce.is_some()),
            ("choice", self.choice.is_some()),
            ("dynamic", self.dynamic.is_some()),
        ];
        set.into_iter().filter(|(_, on)| *on).map(|(k, _)| k).collect()
    }
}

/// Parse a workflow file's text. `path` only labels errors (`-` for stdin).
pub fn parse(text: &str, format: Format, path: &str) -> Result<WorkflowFile, FileError> {
    parse_as(text, format, path)
}

/// Parse a TOML or JSON file's text into `T` (a workflow file, a job file),
/// with one-line errors naming the position and key. `path` only labels errors.
pub fn parse_as<T: serde::de::DeserializeOwned>(text: &str, format: Format, path: &str) -> Result<T, FileError> {
    match format {
        // One line, like every CLI error: the position, then toml's message
        // (its Display would add a multi-line excerpt of the file).
        Format::Toml => toml::from_str(text).map_err(|e| {
            let message = match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let start = before.rfind('\n').map_or(0, |i| i + 1);
                    let column = before[start..].chars().count() + 1;
                    // A type error points at the value; name its key too.
                    let key = text[start..].lines().next().and_then(|l| l.split_once('=')).map(|(k, _)| k.trim());
                    match key {
                        Some(k) if !k.is_empty() && start + k.len() < span.start => {
                            format!("line {line}, column {column} (`{k}`): {}", e.message().trim_end())
                        }
                        _ => format!("line {line}, column {column}: {}", e.message().trim_end()),
                    }
                }
                None => e.message().trim_end().to_string(),
            };
            FileError::Toml { path: path.into(), message }
        }),
        Format::Json => {
            serde_json::from_str(text).map_err(|e| FileError::Json { path: path.into(), message: e.to_string() })
        }
    }
}

/// Read and parse a workflow file: `-` is stdin; `.toml` and `.json` go by
/// extension, anything else by content.
pub fn load(path: &Path) -> Result<proto::WorkflowSpec, FileError> {
    let (text, format) = read(path)?;
    let shown = path.display().to_string();
    parse(&text, format, &shown)?.into_spec(&shown)
}

/// A file's text and format: `-` is stdin; `.toml` and `.json` go by
/// extension, anything else by content.
pub fn read(path: &Path) -> Result<(String, Format), FileError> {
    let shown = path.display().to_string();
    let read_err = |source| FileError::Read { path: shown.clone(), source };
    let text = if shown == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(read_err)?
    } else {
        std::fs::read_to_string(path).map_err(read_err)?
    };
    let format = Format::from_path(path).unwrap_or_else(|| Format::sniff(&text));
    Ok((text, format))
}

impl WorkflowFile {
    /// The proto spec this file describes.
    pub fn into_spec(self, path: &str) -> Result<proto::WorkflowSpec, FileError> {
        let invalid = |field: String, reason: String| FileError::Invalid { path: path.into(), field, reason };
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, s) in self.steps.into_iter().enumerate() {
            let field = |k: &str| format!("steps[{i}].{k}");
            if let Some(gate) = &s.gate {
                if let Some(k) = s.job_keys().first() {
                    return Err(invalid(
                        field(k),
                        format!("step {:?} is a gate, which runs no job; remove `{k}` or `gate`", s.name),
                    ));
                }
                steps.push(proto::StepSpec {
                    name: s.name,
                    depends_on: s.depends_on,
                    trigger: s.trigger.proto() as i32,
                    kind: Some(proto::step_spec::Kind::Gate(proto::GateSpec {
                        timeout_ms: gate.timeout_ms.unwrap_or(0),
                        approve_on_timeout: gate.on_timeout == OnTimeout::Approve,
                        event_topic: gate.event_topic.clone().unwrap_or_default(),
                        event_filter: gate.event_filter.clone().into_iter().collect(),
                    })),
                    ..Default::default()
                });
                continue;
            }
            let (shards, payloads) = match (s.shards, s.payloads) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        field("payloads"),
                        format!("step {:?} sets both `shards` and `payloads`; give one", s.name),
                    ));
                }
                (Some(n), None) => (n, Vec::new()),
                (None, Some(p)) => (0, p.into_iter().map(String::into_bytes).collect()),
                (None, None) => (1, Vec::new()),
            };
            let job = proto::JobSpec {
                namespace: String::new(),
                name: String::new(),
                payloads,
                shards,
                priority: s.priority.unwrap_or(0),
                max_attempts: s.max_attempts.unwrap_or(0),
                backoff_base_ms: s.backoff_base_ms.unwrap_or(0),
                backoff_max_ms: s.backoff_max_ms.unwrap_or(0),
                attempt_timeout_ms: s.attempt_timeout_ms.unwrap_or(0),
                labels: s.labels.unwrap_or_default().into_iter().collect(),
                constraints: s.constraints.unwrap_or_default().into_iter().collect(),
                not_before_ms: 0,
                idempotency_key: String::new(),
                // A workflow's jobs are kept as long as the workflow.
                retention_ms: 0,
            };
            steps.push(proto::StepSpec {
                name: s.name,
                depends_on: s.depends_on,
                trigger: s.trigger.proto() as i32,
                kind: Some(proto::step_spec::Kind::Job(job)),
                reduce: s.reduce.map(|r| proto::ReduceSpec { payload: r.payload.into_bytes() }),
                choice: s.choice.unwrap_or(false),
                dynamic: s.dynamic.unwrap_or(false),
            });
        }
        Ok(proto::WorkflowSpec {
            namespace: self.namespace,
            name: self.name,
            labels: self.labels.into_iter().collect(),
            steps,
            result_step: self.result_step.unwrap_or_default(),
            idempotency_key: self.idempotency_key.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
#[path = "workflow_file_tests.rs"]
mod tests;
