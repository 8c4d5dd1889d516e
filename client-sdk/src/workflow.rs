//! Building workflow specs, and the encodings a step's handler returns.
//!
//! ```
//! use baton_client::proto;
//! use baton_client::workflow::{Step, WorkflowBuilder};
//!
//! let shards = |n: u32| proto::JobSpec { shards: n, ..Default::default() };
//! let spec = WorkflowBuilder::new("team-a", "count")
//!     .step(Step::job("map", shards(8)).reduce(b"sum".to_vec()))
//!     .step(Step::gate("publish?").depends_on(["map"]))
//!     .step(Step::job("publish", shards(1)).depends_on(["publish?"]))
//!     .result_step("map")
//!     .build();
//! assert_eq!(spec.steps.len(), 3);
//! ```
//!
//! The cluster validates the spec at submit (names, limits, cycles); the
//! builder only assembles it.

use std::time::Duration;

use crate::proto;
use crate::proto::step_spec::Kind;

/// Assembles a [`proto::WorkflowSpec`].
#[derive(Debug, Clone)]
pub struct WorkflowBuilder {
    spec: proto::WorkflowSpec,
}

impl WorkflowBuilder {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        WorkflowBuilder {
            spec: proto::WorkflowSpec { namespace: namespace.into(), name: name.into(), ..Default::default() },
        }
    }

    /// Add a step; steps keep the order they are added in.
    pub fn step(mut self, step: Step) -> Self {
        self.spec.steps.push(step.spec);
        self
    }

    /// The step whose result is the workflow's result (it must have a
    /// reduce or exactly one shard).
    pub fn result_step(mut self, name: impl Into<String>) -> Self {
        self.spec.result_step = name.into();
        self
    }

    pub fn label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.spec.labels.insert(k.into(), v.into());
        self
    }

    /// Without one, [`crate::Client::submit_workflow`] generates a key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.spec.idempotency_key = key.into();
        self
    }

    pub fn build(self) -> proto::WorkflowSpec {
        self.spec
    }
}

/// One step of a workflow: a sharded job or a gate.
#[derive(Debug, Clone)]
pub struct Step {
    spec: proto::StepSpec,
}

impl Step {
    /// A step that runs `job`. Leave its namespace empty (or the workflow's)
    /// and its idempotency key empty: the workflow's cover it.
    pub fn job(name: impl Into<String>, job: proto::JobSpec) -> Self {
        Step { spec: proto::StepSpec { name: name.into(), kind: Some(Kind::Job(job)), ..Default::default() } }
    }

    /// A step that runs nothing and waits for ApproveStep or RejectStep.
    pub fn gate(name: impl Into<String>) -> Self {
        let gate = proto::GateSpec { timeout_ms: 0, approve_on_timeout: false, ..Default::default() };
        Step { spec: proto::StepSpec { name: name.into(), kind: Some(Kind::Gate(gate)), ..Default::default() } }
    }

    /// Steps this one waits for (added to any named before).
    pub fn depends_on<I, S>(mut self, steps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec.depends_on.extend(steps.into_iter().map(Into::into));
        self
    }

    /// When the step runs, judged on its predecessors' outcomes (default:
    /// all succeeded).
    pub fn trigger(mut self, rule: proto::TriggerRule) -> Self {
        self.spec.trigger = rule as i32;
        self
    }

    /// One reduce task with this payload runs after every shard succeeded;
    /// it reads the shard results with `TaskContext::reduce_input`, and its
    /// result is the step's result.
    pub fn reduce(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.spec.reduce = Some(proto::ReduceSpec { payload: payload.into() });
        self
    }

    /// The step's result (see [`choose`]) names the successors to run; the
    /// others are skipped.
    pub fn choice(mut self) -> Self {
        self.spec.choice = true;
        self
    }

    /// A dynamic map: the job's one shard is a generator whose result (see
    /// [`emit_children`]) lists the payloads of the shards to run.
    pub fn dynamic(mut self) -> Self {
        self.spec.dynamic = true;
        self
    }

    /// For a gate: decide it after `timeout` (approve when
    /// `approve_on_timeout`, else reject). Has no effect on a job step.
    pub fn gate_timeout(mut self, timeout: Duration, approve_on_timeout: bool) -> Self {
        if let Some(Kind::Gate(g)) = &mut self.spec.kind {
            g.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            g.approve_on_timeout = approve_on_timeout;
        }
        self
    }

    /// For a gate: make it an event gate, approved by the first event
    /// published on `topic` (in the workflow's namespace) whose attributes
    /// hold every `filter` pair while it waits. Has no effect on a job step.
    pub fn gate_event<K: Into<String>, V: Into<String>>(
        mut self,
        topic: impl Into<String>,
        filter: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        if let Some(Kind::Gate(g)) = &mut self.spec.kind {
            g.event_topic = topic.into();
            g.event_filter = filter.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        }
        self
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn into_spec(self) -> proto::StepSpec {
        self.spec
    }
}

/// A choice step's result: the successors to run, as a JSON array of names.
pub fn choose(steps: &[&str]) -> Vec<u8> {
    let mut out = String::from("[");
    for (i, s) in steps.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, s);
    }
    out.push(']');
    out.into_bytes()
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Magic that starts a dynamic map generator's result.
pub const CHILDREN_MAGIC: &[u8; 4] = b"BTNC";

/// A dynamic map generator's result: the payloads of the shards to run.
/// The format (the cluster decodes it): `BTNC`, a u32 big-endian count, then
/// each payload as a u32 big-endian length and its bytes. The cluster fails
/// the step beyond its limit of children (10000).
pub fn emit_children(children: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + children.iter().map(|c| 4 + c.len()).sum::<usize>());
    out.extend_from_slice(CHILDREN_MAGIC);
    out.extend_from_slice(&(children.len() as u32).to_be_bytes());
    for c in children {
        out.extend_from_slice(&(c.len() as u32).to_be_bytes());
        out.extend_from_slice(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_encoding_is_pinned() {
        // The cluster's decoder (raft-store) reads these bytes; a coordinator
        // test decodes this function's output with it.
        let got = emit_children(&[b"ab".to_vec(), Vec::new(), b"c".to_vec()]);
        let want: &[u8] = b"BTNC\x00\x00\x00\x03\x00\x00\x00\x02ab\x00\x00\x00\x00\x00\x00\x00\x01c";
        assert_eq!(got, want);
        assert_eq!(emit_children(&[]), b"BTNC\x00\x00\x00\x00");
    }

    #[test]
    fn choose_writes_a_json_array_of_names() {
        assert_eq!(choose(&["fast", "slow"]), br#"["fast","slow"]"#);
        assert_eq!(choose(&[]), b"[]");
        assert_eq!(choose(&["a\"b\\c\n"]), br#"["a\"b\\c\u000a"]"#);
    }

    #[test]
    fn builder_assembles_steps_in_order() {
        let spec = WorkflowBuilder::new("ns", "wf")
            .label("team", "a")
            .idempotency_key("k1")
            .step(Step::job("a", proto::JobSpec { shards: 4, ..Default::default() }).reduce(b"r".to_vec()).choice())
            .step(Step::gate("g").depends_on(["a"]).gate_timeout(Duration::from_millis(1500), true))
            .step(
                Step::job("b", proto::JobSpec { shards: 1, ..Default::default() })
                    .depends_on(["a"])
                    .depends_on(vec!["g".to_string()])
                    .trigger(proto::TriggerRule::NoneFailed)
                    .dynamic(),
            )
            .result_step("a")
            .build();
        assert_eq!((spec.namespace.as_str(), spec.name.as_str(), spec.result_step.as_str()), ("ns", "wf", "a"));
        assert_eq!(spec.idempotency_key, "k1");
        assert_eq!(spec.labels.get("team").map(String::as_str), Some("a"));
        let names: Vec<&str> = spec.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "g", "b"]);
        assert_eq!(spec.steps[0].reduce.as_ref().map(|r| r.payload.as_slice()), Some(&b"r"[..]));
        assert!(spec.steps[0].choice && !spec.steps[0].dynamic);
        assert_eq!(
            spec.steps[1].kind,
            Some(Kind::Gate(proto::GateSpec { timeout_ms: 1500, approve_on_timeout: true, ..Default::default() }))
        );
        assert_eq!(spec.steps[2].depends_on, ["a", "g"]);
        assert_eq!(spec.steps[2].trigger, proto::TriggerRule::NoneFailed as i32);
        assert!(spec.steps[2].dynamic);
        // A timeout on a job step changes nothing.
        let s = Step::job("j", proto::JobSpec::default()).gate_timeout(Duration::from_secs(1), true).into_spec();
        assert!(matches!(s.kind, Some(Kind::Job(_))));
    }
}
