use std::path::Path;

use baton_client::proto::{self, step_spec::Kind};

use super::*;

/// Every key of the format, once.
const FULL_TOML: &str = r#"
namespace = "analytics"
name = "nightly"
labels = { team = "search" }
idempotency_key = "nightly-2024-05-01"
result_step = "count"

[[steps]]
name = "split"
payloads = ["docs/a.md", "docs/b.md"]
dynamic = true

[[steps]]
name = "count"
depends_on = ["split"]
shards = 4
priority = 7
max_attempts = 5
attempt_timeout_ms = 60000
backoff_base_ms = 200
backoff_max_ms = 5000
constraints = { pool = "cpu" }
labels = { stage = "map" }
reduce = { payload = "top=10" }

[[steps]]
name = "check"
depends_on = ["count"]
choice = true

[[steps]]
name = "approve"
depends_on = ["check"]
trigger = "none_failed"
gate = { timeout_ms = 60000, on_timeout = "approve" }

[[steps]]
name = "cleanup"
depends_on = ["approve", "count"]
trigger = "all_done"
"#;

const FULL_JSON: &str = r#"{
  "namespace": "analytics",
  "name": "nightly",
  "labels": {"team": "search"},
  "idempotency_key": "nightly-2024-05-01",
  "result_step": "count",
  "steps": [
    {"name": "split", "payloads": ["docs/a.md", "docs/b.md"], "dynamic": true},
    {"name": "count", "depends_on": ["split"], "shards": 4, "priority": 7, "max_attempts": 5,
     "attempt_timeout_ms": 60000, "backoff_base_ms": 200, "backoff_max_ms": 5000,
     "constraints": {"pool": "cpu"}, "labels": {"stage": "map"}, "reduce": {"payload": "top=10"}},
    {"name": "check", "depends_on": ["count"], "choice": true},
    {"name": "approve", "depends_on": ["check"], "trigger": "none_failed",
     "gate": {"timeout_ms": 60000, "on_timeout": "approve"}},
    {"name": "cleanup", "depends_on": ["approve", "count"], "trigger": "all_done"}
  ]
}"#;

fn spec(text: &str, format: Format) -> Result<proto::WorkflowSpec, FileError> {
    parse(text, format, "flow")?.into_spec("flow")
}

fn job(s: &proto::StepSpec) -> &proto::JobSpec {
    match &s.kind {
        Some(Kind::Job(j)) => j,
        other => panic!("step {} is not a job: {other:?}", s.name),
    }
}

fn err(text: &str, format: Format) -> String {
    match spec(text, format) {
        Ok(s) => panic!("accepted: {s:?}"),
        Err(e) => e.to_string(),
    }
}

fn expected_full() -> proto::WorkflowSpec {
    let job = |f: &dyn Fn(&mut proto::JobSpec)| {
        let mut j = proto::JobSpec { shards: 1, ..Default::default() };
        f(&mut j);
        Some(Kind::Job(j))
    };
    proto::WorkflowSpec {
        namespace: "analytics".into(),
        name: "nightly".into(),
        labels: [("team".to_string(), "search".to_string())].into_iter().collect(),
        idempotency_key: "nightly-2024-05-01".into(),
        result_step: "count".into(),
        steps: vec![
            proto::StepSpec {
                name: "split".into(),
                kind: job(&|j| {
                    j.shards = 0;
                    j.payloads = vec![b"docs/a.md".to_vec(), b"docs/b.md".to_vec()];
                }),
                dynamic: true,
                ..Default::default()
            },
            proto::StepSpec {
                name: "count".into(),
                depends_on: vec!["split".into()],
                kind: job(&|j| {
                    j.shards = 4;
                    j.priority = 7;
                    j.max_attempts = 5;
                    j.attempt_timeout_ms = 60_000;
                    j.backoff_base_ms = 200;
                    j.backoff_max_ms = 5000;
                    j.constraints = [("pool".to_string(), "cpu".to_string())].into_iter().collect();
                    j.labels = [("stage".to_string(), "map".to_string())].into_iter().collect();
                }),
                reduce: Some(proto::ReduceSpec { payload: b"top=10".to_vec() }),
                ..Default::default()
            },
            proto::StepSpec {
                name: "check".into(),
                depends_on: vec!["count".into()],
                kind: job(&|_| {}),
                choice: true,
                ..Default::default()
            },
            proto::StepSpec {
                name: "approve".into(),
                depends_on: vec!["check".into()],
                trigger: proto::TriggerRule::NoneFailed as i32,
                kind: Some(Kind::Gate(proto::GateSpec {
                    timeout_ms: 60_000,
                    approve_on_timeout: true,
                    ..Default::default()
                })),
                ..Default::default()
            },
            proto::StepSpec {
                name: "cleanup".into(),
                depends_on: vec!["approve".into(), "count".into()],
                trigger: proto::TriggerRule::AllDone as i32,
                kind: job(&|_| {}),
                ..Default::default()
            },
        ],
    }
}

#[test]
fn every_key_of_the_toml_format_reaches_the_proto_spec() {
    assert_eq!(spec(FULL_TOML, Format::Toml).unwrap(), expected_full());
}

#[test]
fn the_json_form_is_the_same_format() {
    assert_eq!(spec(FULL_JSON, Format::Json).unwrap(), expected_full());
}

#[test]
fn defaults_are_the_default_namespace_one_empty_shard_and_all_succeeded() {
    let s = spec("[[steps]]\nname = \"only\"\n", Format::Toml).unwrap();
    assert_eq!(s.namespace, "default");
    assert_eq!((s.name.as_str(), s.result_step.as_str(), s.idempotency_key.as_str()), ("", "", ""));
    assert!(s.labels.is_empty());
    let step = &s.steps[0];
    assert_eq!(step.trigger, proto::TriggerRule::AllSucceeded as i32);
    assert!(step.depends_on.is_empty() && step.reduce.is_none() && !step.choice && !step.dynamic);
    assert_eq!(*job(step), proto::JobSpec { shards: 1, ..Default::default() });
}

#[test]
fn every_trigger_name_parses() {
    for (name, rule) in [
        ("all_succeeded", proto::TriggerRule::AllSucceeded),
        ("any_succeeded", proto::TriggerRule::AnySucceeded),
        ("all_done", proto::TriggerRule::AllDone),
        ("any_failed", proto::TriggerRule::AnyFailed),
        ("none_failed", proto::TriggerRule::NoneFailed),
    ] {
        let text =
            format!("[[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\ndepends_on = [\"a\"]\ntrigger = \"{name}\"\n");
        assert_eq!(spec(&text, Format::Toml).unwrap().steps[1].trigger, rule as i32, "{name}");
    }
}

#[test]
fn a_gate_without_options_waits_forever_and_rejects_on_timeout() {
    let s = spec("[[steps]]\nname = \"g\"\ngate = {}\n", Format::Toml).unwrap();
    assert_eq!(
        s.steps[0].kind,
        Some(Kind::Gate(proto::GateSpec { timeout_ms: 0, approve_on_timeout: false, ..Default::default() }))
    );
    let s =
        spec("[[steps]]\nname = \"g\"\ngate = { timeout_ms = 5, on_timeout = \"reject\" }\n", Format::Toml).unwrap();
    assert_eq!(
        s.steps[0].kind,
        Some(Kind::Gate(proto::GateSpec { timeout_ms: 5, approve_on_timeout: false, ..Default::default() }))
    );
}

#[test]
fn a_reduce_without_payload_has_an_empty_one() {
    let s = spec("[[steps]]\nname = \"m\"\nshards = 3\nreduce = {}\n", Format::Toml).unwrap();
    assert_eq!(s.steps[0].reduce, Some(proto::ReduceSpec { payload: Vec::new() }));
}

#[test]
fn payloads_are_utf8_bytes_as_written() {
    let s = spec(r#"{"steps": [{"name": "m", "payloads": ["größe", "", "a b"]}]}"#, Format::Json).unwrap();
    let j = job(&s.steps[0]);
    assert_eq!(j.payloads, vec!["größe".as_bytes().to_vec(), Vec::new(), b"a b".to_vec()]);
    assert_eq!(j.shards, 0, "the cluster counts shards from the payloads");
}

#[test]
fn unknown_keys_are_refused_by_name_at_every_level() {
    for (text, key) in [
        ("colour = \"red\"\n[[steps]]\nname = \"a\"\n", "colour"),
        ("[[steps]]\nname = \"a\"\nshard = 3\n", "shard"),
        ("[[steps]]\nname = \"a\"\nreduce = { payloads = \"x\" }\n", "payloads"),
        ("[[steps]]\nname = \"a\"\ngate = { timeout = 5 }\n", "timeout"),
    ] {
        let e = err(text, Format::Toml);
        assert!(e.contains(&format!("unknown field `{key}`")) && e.starts_with("flow: not valid TOML"), "{e}");
    }
    for (text, key) in [
        (r#"{"steps": [{"name": "a"}], "colour": 1}"#, "colour"),
        (r#"{"steps": [{"name": "a", "depends": []}]}"#, "depends"),
        (r#"{"steps": [{"name": "a", "gate": {"on_timout": "approve"}}]}"#, "on_timout"),
    ] {
        let e = err(text, Format::Json);
        assert!(e.contains(&format!("unknown field `{key}`")) && e.starts_with("flow: not valid JSON"), "{e}");
    }
}

#[test]
fn bad_enum_values_name_the_allowed_ones() {
    let e = err("[[steps]]\nname = \"a\"\ntrigger = \"always\"\n", Format::Toml);
    assert!(e.contains("unknown variant `always`") && e.contains("none_failed"), "{e}");
    let e = err("[[steps]]\nname = \"a\"\ngate = { on_timeout = \"retry\" }\n", Format::Toml);
    assert!(e.contains("unknown variant `retry`") && e.contains("approve"), "{e}");
}

#[test]
fn missing_required_keys_and_wrong_types_are_named() {
    assert!(err("name = \"x\"\n", Format::Toml).contains("missing field `steps`"));
    assert!(err("[[steps]]\nshards = 2\n", Format::Toml).contains("missing field `name`"));
    let e = err("[[steps]]\nname = \"a\"\nshards = \"two\"\n", Format::Toml);
    assert_eq!(e, "flow: not valid TOML: line 3, column 10 (`shards`): invalid type: string \"two\", expected u32");
    let e = err(r#"{"steps": [{"name": "a", "labels": {"k": 1}}]}"#, Format::Json);
    assert!(e.contains("invalid type: integer `1`, expected a string"), "{e}");
    let e = err(r#"{"steps": [{"name": "a", "shards": -1}]}"#, Format::Json);
    assert!(e.contains("invalid value: integer `-1`"), "{e}");
}

#[test]
fn syntax_errors_say_where() {
    let e = err("[[steps]\nname = \"a\"\n", Format::Toml);
    assert!(e.starts_with("flow: not valid TOML: line 1, column "), "{e}");
    let e = err("[[steps]]\nname = \"a\"\n\n[[steps]]\nname = \"b\"\n  shard = 3\n", Format::Toml);
    assert!(e.starts_with("flow: not valid TOML: line 6, column 3: unknown field `shard`"), "{e}");
    assert_eq!(e.lines().count(), 1, "one line, like every CLI error: {e}");
    let e = err("{\"steps\": [}", Format::Json);
    assert!(e.starts_with("flow: not valid JSON") && e.contains("line 1 column"), "{e}");
}

#[test]
fn shards_and_payloads_together_are_refused() {
    let e = err("[[steps]]\nname = \"a\"\n[[steps]]\nname = \"m\"\nshards = 2\npayloads = [\"x\"]\n", Format::Toml);
    assert_eq!(e, "flow: steps[1].payloads: step \"m\" sets both `shards` and `payloads`; give one");
}

#[test]
fn a_gate_with_any_job_key_is_refused_naming_the_key() {
    for (line, key) in [
        ("shards = 1", "shards"),
        ("payloads = [\"x\"]", "payloads"),
        ("priority = 1", "priority"),
        ("max_attempts = 1", "max_attempts"),
        ("attempt_timeout_ms = 1", "attempt_timeout_ms"),
        ("backoff_base_ms = 1", "backoff_base_ms"),
        ("backoff_max_ms = 1", "backoff_max_ms"),
        ("constraints = {}", "constraints"),
        ("labels = {}", "labels"),
        ("reduce = {}", "reduce"),
        ("choice = false", "choice"),
        ("dynamic = false", "dynamic"),
    ] {
        let text = format!("[[steps]]\nname = \"g\"\ngate = {{}}\n{line}\n");
        assert_eq!(
            err(&text, Format::Toml),
            format!("flow: steps[0].{key}: step \"g\" is a gate, which runs no job; remove `{key}` or `gate`"),
        );
    }
}

#[test]
fn the_format_comes_from_the_extension_else_from_the_content() {
    assert_eq!(Format::from_path(Path::new("flow.toml")), Some(Format::Toml));
    assert_eq!(Format::from_path(Path::new("dir/flow.JSON")), Some(Format::Json));
    assert_eq!(Format::from_path(Path::new("-")), None);
    assert_eq!(Format::from_path(Path::new("flow.yaml")), None);
    assert_eq!(Format::sniff("  \n{\"steps\": []}"), Format::Json);
    assert_eq!(Format::sniff("# a comment\n[[steps]]\n"), Format::Toml);
    assert_eq!(Format::sniff(""), Format::Toml);
}

#[test]
fn load_reads_files_by_extension_and_names_unreadable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let toml_path = dir.path().join("flow.toml");
    std::fs::write(&toml_path, FULL_TOML).unwrap();
    assert_eq!(load(&toml_path).unwrap(), expected_full());
    let json_path = dir.path().join("flow.json");
    std::fs::write(&json_path, FULL_JSON).unwrap();
    assert_eq!(load(&json_path).unwrap(), expected_full());
    // No known extension: the content decides.
    let other = dir.path().join("flow.txt");
    std::fs::write(&other, FULL_JSON).unwrap();
    assert_eq!(load(&other).unwrap(), expected_full());
    // The extension wins over the content, so a mislabelled file is an error.
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(&wrong, FULL_JSON).unwrap();
    let e = load(&wrong).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: not valid TOML", wrong.display())), "{e}");
    let missing = dir.path().join("missing.toml");
    let e = load(&missing).unwrap_err().to_string();
    assert!(e.starts_with(&format!("cannot read {}", missing.display())), "{e}");
}

#[test]
fn the_shipped_example_files_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/workflows");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let s = load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.steps.is_empty(), "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 2, "expected the example files in {}", dir.display());
}

#[test]
fn an_event_gate_names_its_topic_and_filter() {
    let text = "[[steps]]\nname = \"g\"\ngate = { event_topic = \"uploads\", event_filter = { bucket = \"raw\" } }\n";
    let s = spec(text, Format::Toml).unwrap();
    let Some(Kind::Gate(g)) = &s.steps[0].kind else { panic!("{s:?}") };
    assert_eq!(g.event_topic, "uploads");
    assert_eq!(g.event_filter.get("bucket").map(String::as_str), Some("raw"));
    let e = spec("[[steps]]\nname = \"g\"\ngate = { topic = \"uploads\" }\n", Format::Toml).unwrap_err();
    assert!(e.to_string().contains("topic"), "{e}");
}
