use super::*;

fn job(shards: usize) -> StepKind {
    let mut spec = JobSpec::with_shards("", shards);
    spec.namespace.clear();
    StepKind::Job { job: spec, reduce: None, choice: false, dynamic: false }
}

fn step(name: &str, deps: &[&str]) -> StepSpec {
    StepSpec {
        name: name.into(),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        trigger: TriggerRule::AllSucceeded,
        kind: job(1),
    }
}

fn flow(steps: Vec<StepSpec>) -> WorkflowSpec {
    WorkflowSpec {
        namespace: "ns".into(),
        name: "f".into(),
        labels: BTreeMap::new(),
        idempotency_key: None,
        steps,
        result_step: None,
    }
}

fn invalid_field(r: Result<Graph, CommandError>) -> (String, String) {
    match r {
        Err(CommandError::Invalid { field, reason }) => (field, reason),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn a_diamond_validates_with_its_edges_by_index() {
    let g =
        flow(vec![step("a", &[]), step("b", &["a"]), step("c", &["a"]), step("d", &["b", "c"])]).validate().unwrap();
    assert_eq!(g.preds, vec![vec![], vec![0], vec![0], vec![1, 2]]);
    assert_eq!(g.succs, vec![vec![1, 2], vec![3], vec![3], vec![]]);
    assert_eq!(g.depth(), Ok(3));
}

#[test]
fn a_cycle_is_refused_and_named() {
    let (field, reason) =
        invalid_field(flow(vec![step("a", &["c"]), step("b", &["a"]), step("c", &["b"]), step("d", &[])]).validate());
    assert_eq!(field, "steps");
    assert_eq!(reason, "cycle: a -> b -> c -> a");
    let (_, reason) = invalid_field(flow(vec![step("a", &["a"])]).validate());
    assert_eq!(reason, "cycle: a -> a");
}

#[test]
fn unknown_duplicate_and_repeated_names_are_refused() {
    let (field, reason) = invalid_field(flow(vec![step("a", &["zz"])]).validate());
    assert_eq!((field.as_str(), reason.as_str()), ("steps[0].depends_on", "no step is named \"zz\""));
    let (field, _) = invalid_field(flow(vec![step("a", &[]), step("a", &[])]).validate());
    assert_eq!(field, "steps[1].name");
    let (field, _) = invalid_field(flow(vec![step("a", &[]), step("b", &["a", "a"])]).validate());
    assert_eq!(field, "steps[1].depends_on");
    let (field, _) = invalid_field(flow(vec![]).validate());
    assert_eq!(field, "steps");
}

#[test]
fn limits_on_steps_and_depth_are_enforced() {
    let chain: Vec<StepSpec> = (0..=MAX_WORKFLOW_DEPTH)
        .map(|i| {
            let prev = format!("s{}", i.wrapping_sub(1));
            let deps: Vec<&str> = if i == 0 { vec![] } else { vec![prev.as_str()] };
            step(&format!("s{i}"), &deps)
        })
        .collect();
    let (field, reason) = invalid_field(flow(chain.clone()).validate());
    assert_eq!(field, "steps");
    assert!(reason.contains("longest chain"), "{reason}");
    flow(chain[..MAX_WORKFLOW_DEPTH].to_vec()).validate().unwrap();
    let wide: Vec<StepSpec> = (0..=MAX_STEPS_PER_WORKFLOW).map(|i| step(&format!("w{i}"), &[])).collect();
    let (field, _) = invalid_field(flow(wide).validate());
    assert_eq!(field, "steps");
}

#[test]
fn the_edge_limit_is_enforced_naming_depends_on_and_the_limit() {
    // Two layers: every sink depends on every source. Depth 2, so only the
    // edge limit can refuse it.
    let layered = |sources: usize, sinks: usize| {
        let names: Vec<String> = (0..sources).map(|i| format!("src{i}")).collect();
        let deps: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut steps: Vec<StepSpec> = names.iter().map(|n| step(n, &[])).collect();
        steps.extend((0..sinks).map(|i| step(&format!("sink{i}"), &deps)));
        flow(steps)
    };
    // 100 × 100 = MAX_EDGES_PER_WORKFLOW edges: accepted.
    assert_eq!(MAX_EDGES_PER_WORKFLOW, 100 * 100);
    layered(100, 100).validate().unwrap();
    // 101 × 100 = 10100: refused, naming the field and the limit.
    let (field, reason) = invalid_field(layered(101, 100).validate());
    assert_eq!(field, "steps[*].depends_on");
    assert_eq!(reason, format!("has 10100 dependency edges in all; at most {MAX_EDGES_PER_WORKFLOW} edges"));
    let e = layered(101, 100).validate().unwrap_err().to_string();
    assert!(e.contains("depends_on") && e.contains("at most 10000 edges"), "{e}");
}

#[test]
fn step_job_specs_are_checked_in_place() {
    let mut s = step("a", &[]);
    if let StepKind::Job { job, .. } = &mut s.kind {
        job.max_attempts = 0;
    }
    let (field, _) = invalid_field(flow(vec![s]).validate());
    assert_eq!(field, "steps[0].max_attempts");
    let mut s = step("a", &[]);
    if let StepKind::Job { job, .. } = &mut s.kind {
        job.idempotency_key = Some("k".into());
    }
    let (field, _) = invalid_field(flow(vec![s]).validate());
    assert_eq!(field, "steps[0].idempotency_key");
    let mut s = step("a", &[]);
    if let StepKind::Job { job, .. } = &mut s.kind {
        job.namespace = "other".into();
    }
    let (field, _) = invalid_field(flow(vec![s]).validate());
    assert_eq!(field, "steps[0].namespace");
}

#[test]
fn choice_dynamic_result_and_gate_shapes_are_checked() {
    // A choice with no successors.
    let mut c = step("c", &[]);
    if let StepKind::Job { choice, .. } = &mut c.kind {
        *choice = true;
    }
    let (field, _) = invalid_field(flow(vec![c.clone()]).validate());
    assert_eq!(field, "steps[0].choice");
    flow(vec![c.clone(), step("x", &["c"])]).validate().unwrap();
    // A choice over many shards needs a reduce.
    c.kind = job(3);
    if let StepKind::Job { choice, .. } = &mut c.kind {
        *choice = true;
    }
    let (field, _) = invalid_field(flow(vec![c.clone(), step("x", &["c"])]).validate());
    assert_eq!(field, "steps[0].choice");
    if let StepKind::Job { reduce, .. } = &mut c.kind {
        *reduce = Some(ReduceSpec::default());
    }
    flow(vec![c, step("x", &["c"])]).validate().unwrap();
    // A dynamic map has one generator shard.
    let mut d = step("d", &[]);
    d.kind = job(2);
    if let StepKind::Job { dynamic, .. } = &mut d.kind {
        *dynamic = true;
    }
    let (field, _) = invalid_field(flow(vec![d]).validate());
    assert_eq!(field, "steps[0].payloads");
    // The result step must yield one value.
    let mut f = flow(vec![step("a", &[]), StepSpec { kind: job(2), ..step("b", &[]) }]);
    f.result_step = Some("a".into());
    f.validate().unwrap();
    f.result_step = Some("b".into());
    assert_eq!(invalid_field(f.clone().validate()).0, "result_step");
    f.result_step = Some("nope".into());
    assert_eq!(invalid_field(f.validate()).0, "result_step");
    // Gate timeouts are bounded; a rule other than the default needs predecessors.
    let gate = StepSpec {
        kind: StepKind::Gate { timeout_ms: Some(0), on_timeout: GateTimeout::Reject, event: None },
        ..step("g", &[])
    };
    assert_eq!(invalid_field(flow(vec![gate]).validate()).0, "steps[0].timeout_ms");
    let cleanup = StepSpec { trigger: TriggerRule::AllDone, ..step("c", &[]) };
    assert_eq!(invalid_field(flow(vec![cleanup]).validate()).0, "steps[0].trigger");
}

#[test]
fn control_characters_in_idempotency_keys_are_refused() {
    let mut f = flow(vec![step("a", &[])]);
    f.idempotency_key = Some("a\u{1}b".into());
    assert_eq!(invalid_field(f.validate()).0, "idempotency_key");
}

#[test]
fn trigger_rules_decide_once_every_edge_is_known() {
    use EdgeOutcome::*;
    use Readiness::*;
    use TriggerRule::*;
    let table: &[(TriggerRule, &[EdgeOutcome], Readiness)] = &[
        (AllSucceeded, &[Succeeded, Pending], Wait),
        (AllSucceeded, &[Succeeded, Succeeded], Run),
        (AllSucceeded, &[Succeeded, Failed], Skip),
        (AllSucceeded, &[Succeeded, Skipped], Skip),
        (AllSucceeded, &[], Run),
        (AnySucceeded, &[Failed, Succeeded], Run),
        (AnySucceeded, &[Failed, Skipped], Skip),
        (AnySucceeded, &[Failed, Pending], Wait),
        (AllDone, &[Failed, Skipped], Run),
        (AllDone, &[Succeeded, Pending], Wait),
        (AnyFailed, &[Succeeded, Failed], Run),
        (AnyFailed, &[Succeeded, Skipped], Skip),
        (NoneFailed, &[Succeeded, Skipped], Run),
        (NoneFailed, &[Skipped, Skipped], Skip),
        (NoneFailed, &[Succeeded, Failed], Skip),
    ];
    for (rule, edges, want) in table {
        assert_eq!(readiness(*rule, edges), *want, "{} over {edges:?}", rule.name());
    }
}

#[test]
fn choices_parse_from_a_json_array() {
    assert_eq!(parse_choice(br#"["a","b"]"#), Ok(vec!["a".to_string(), "b".to_string()]));
    assert_eq!(parse_choice(b"[]"), Ok(vec![]));
    assert!(parse_choice(b"a").unwrap_err().contains("JSON array"));
}

#[test]
fn children_round_trip_and_bad_encodings_say_why() {
    let kids = vec![b"x".to_vec(), vec![], vec![7u8; 300]];
    let enc = encode_children(&kids);
    let dec = decode_children(&enc).unwrap();
    assert_eq!(dec.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), kids);
    assert!(decode_children(b"nope").unwrap_err().contains("BTNC"));
    assert!(decode_children(&enc[..enc.len() - 1]).unwrap_err().contains("past the end"));
    let mut extra = enc.clone();
    extra.push(0);
    assert!(decode_children(&extra).unwrap_err().contains("after the last child"));
    let mut many = CHILDREN_MAGIC.to_vec();
    many.extend_from_slice(&((MAX_DYNAMIC_CHILDREN as u32) + 1).to_be_bytes());
    assert!(decode_children(&many).unwrap_err().contains("at most"));
    assert_eq!(decode_children(&encode_children(&[])).unwrap(), Vec::<ByteBuf>::new());
}

#[test]
fn trigger_rule_names_round_trip() {
    for r in [
        TriggerRule::AllSucceeded,
        TriggerRule::AnySucceeded,
        TriggerRule::AllDone,
        TriggerRule::AnyFailed,
        TriggerRule::NoneFailed,
    ] {
        assert_eq!(TriggerRule::parse(r.name()), Some(r));
    }
    assert_eq!(TriggerRule::parse("sometimes"), None);
}
