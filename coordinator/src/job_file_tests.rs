use super::*;

fn toml(text: &str) -> Result<proto::JobSpec, FileError> {
    parse(text, Format::Toml, "job.toml")?.into_spec("job.toml")
}

#[test]
fn a_full_toml_file_becomes_the_spec_it_says() {
    let spec = toml(
        r#"
namespace = "reports"
name = "nightly"
shards = 4
priority = -2
max_attempts = 5
attempt_timeout_ms = 60000
backoff_base_ms = 100
backoff_max_ms = 2000
retention_ms = 86400000
labels = { team = "data" }
constraints = { gpu = "yes" }
"#,
    )
    .unwrap();
    assert_eq!(spec.namespace, "reports");
    assert_eq!(spec.name, "nightly");
    assert_eq!((spec.shards, spec.payloads.len()), (4, 0));
    assert_eq!(spec.priority, -2);
    assert_eq!((spec.max_attempts, spec.attempt_timeout_ms), (5, 60_000));
    assert_eq!((spec.backoff_base_ms, spec.backoff_max_ms, spec.retention_ms), (100, 2000, 86_400_000));
    assert_eq!(spec.labels.get("team").map(String::as_str), Some("data"));
    assert_eq!(spec.constraints.get("gpu").map(String::as_str), Some("yes"));
    assert!(spec.idempotency_key.is_empty() && spec.not_before_ms == 0, "a template has neither");
}

#[test]
fn defaults_payloads_and_json() {
    let spec = toml("").unwrap();
    assert_eq!((spec.namespace.as_str(), spec.shards, spec.max_attempts), ("", 1, 0), "one shard, server defaults");
    let spec =
        parse(r#"{"payloads": ["a", "b"], "name": "j"}"#, Format::sniff("{"), "-").unwrap().into_spec("-").unwrap();
    assert_eq!(spec.payloads, vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(spec.shards, 0);
}

#[test]
fn unknown_keys_and_both_shards_and_payloads_are_named() {
    let e = toml("shards = 1\nidempotency_key = \"k\"\n").unwrap_err().to_string();
    assert!(e.contains("idempotency_key") && e.contains("job.toml"), "{e}");
    let e = toml("shard = 2\n").unwrap_err().to_string();
    assert!(e.contains("unknown field `shard`"), "{e}");
    let e = toml("shards = 1\npayloads = [\"a\"]\n").unwrap_err().to_string();
    assert!(e.contains("payloads") && e.contains("give one"), "{e}");
    let e = toml("priority = \"high\"\n").unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("priority"), "{e}");
}
