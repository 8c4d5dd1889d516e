//! The deploy files parse, and the fields that keep a cluster safe and
//! reachable are what they must be. Runs everywhere (no Docker or cluster).

use std::path::PathBuf;

use baton_coordinator::config::{Config, is_config_env_key};
use yaml_rust2::{Yaml, YamlLoader};

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

fn load(p: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(repo(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{p} is not YAML: {e}"))
}

fn by_kind<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

fn strs(y: &Yaml) -> Vec<String> {
    y.as_vec().map(|v| v.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

#[test]
fn kubernetes_manifests_keep_a_majority_and_find_their_peers() {
    let docs = load("deploy/k8s/baton.yaml");
    let sts = by_kind(&docs, "StatefulSet", "baton");
    let headless = by_kind(&docs, "Service", "baton-headless");
    let client = by_kind(&docs, "Service", "baton");
    let pdb = by_kind(&docs, "PodDisruptionBudget", "baton");
    let cm = by_kind(&docs, "ConfigMap", "baton-config");

    let spec = &sts["spec"];
    assert_eq!(spec["replicas"].as_i64(), Some(3));
    assert_eq!(spec["serviceName"].as_str(), Some("baton-headless"));
    assert_eq!(headless["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(headless["spec"]["publishNotReadyAddresses"].as_bool(), Some(true), "peers must resolve before ready");
    assert_eq!(pdb["spec"]["maxUnavailable"].as_i64(), Some(1), "a PDB must never allow losing a majority");
    let pod_labels = &spec["template"]["metadata"]["labels"];
    for selector in [
        &spec["selector"]["matchLabels"],
        &pdb["spec"]["selector"]["matchLabels"],
        &headless["spec"]["selector"],
        &client["spec"]["selector"],
    ] {
        assert_eq!(selector, pod_labels, "a selector does not match the pods");
    }
    let vct = &spec["volumeClaimTemplates"][0];
    assert_eq!(vct["metadata"]["name"].as_str(), Some("data"));
    assert!(vct["spec"]["resources"]["requests"]["storage"].as_str().is_some());

    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let c = &pod["containers"][0];
    let args = strs(&c["args"]);
    assert_eq!(args[0], "serve");
    assert!(args.contains(&"--node-id-from-ordinal".to_string()));
    assert!(args.iter().any(|a| a == "--advertise-domain=baton-headless.default.svc.cluster.local"));
    assert!(args.iter().any(|a| a == "--data-dir=/data"));
    assert_eq!(c["volumeMounts"][0]["mountPath"].as_str(), Some("/data"));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
    let ports: Vec<i64> = c["ports"].as_vec().unwrap().iter().filter_map(|p| p["containerPort"].as_i64()).collect();
    assert_eq!(ports, vec![7101, 7201, 7301]);
    assert_eq!(c["envFrom"][0]["configMapRef"]["name"].as_str(), Some("baton-config"));

    // The ConfigMap is valid configuration: known keys, and members that
    // name pods 0..2 of the headless Service as nodes 1..3.
    let data = cm["data"].as_hash().unwrap();
    for (k, _) in data {
        let k = k.as_str().unwrap();
        assert!(is_config_env_key(k.trim_start_matches("BATON_")), "unknown config key {k}");
    }
    let members: Vec<String> =
        serde_json::from_str(cm["data"]["BATON_INITIAL_MEMBERS"].as_str().unwrap()).expect("a JSON list of members");
    let cfg = Config { node_id: 1, initial_members: members, ..Config::default() };
    let parsed = cfg.members().expect("valid members");
    assert_eq!(parsed.len(), 3);
    for (i, m) in parsed.iter().enumerate() {
        assert_eq!(m.id, i as u64 + 1);
        assert_eq!(m.info.raft_addr, format!("baton-{i}.baton-headless.default.svc.cluster.local:7101"));
    }
}

#[test]
fn compose_files_describe_three_and_five_node_clusters() {
    for n in [3usize, 5] {
        let doc = &load(&format!("deploy/compose/docker-compose.{n}.yml"))[0];
        let services = doc["services"].as_hash().unwrap();
        for i in 1..=n {
            let s = &doc["services"][format!("baton{i}").as_str()];
            let cmd = strs(&s["command"]);
            let at = |flag: &str| cmd.iter().position(|c| c == flag).map(|p| cmd[p + 1].clone()).unwrap();
            assert_eq!(at("--node-id"), i.to_string());
            assert_eq!(at("--raft-advertise"), format!("baton{i}:7101"));
            let members: Vec<String> = at("--initial-members").split(',').map(str::to_string).collect();
            let cfg = Config { node_id: i as u64, initial_members: members, ..Config::default() };
            cfg.validate().expect("valid node config");
            assert_eq!(cfg.members().unwrap().len(), n);
            assert_eq!(strs(&s["volumes"]), vec![format!("baton{i}-data:/data")]);
        }
        assert!(services.contains_key(&Yaml::String("worker".into())));
        let prom = &doc["services"]["prometheus"];
        assert_eq!(strs(&prom["profiles"]), vec!["monitoring"], "Prometheus must not be pulled by a plain `up`");
        let scrape = std::fs::read_to_string(repo(&format!("deploy/compose/prometheus.{n}.yml"))).unwrap();
        for i in 1..=n {
            assert!(scrape.contains(&format!("baton{i}:7301")));
        }
    }
}

#[test]
fn systemd_unit_is_sandboxed_and_its_env_file_is_valid_config() {
    let unit = std::fs::read_to_string(repo("deploy/systemd/baton.service")).unwrap();
    let has = |line: &str| unit.lines().any(|l| l.trim() == line);
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/baton",
        "EnvironmentFile=/etc/baton/baton.env",
        "KillSignal=SIGTERM",
        "User=baton",
    ] {
        assert!(has(line), "baton.service lacks {line}");
    }
    assert!(unit.contains("ExecStart=/usr/local/bin/baton serve"));
    let env = std::fs::read_to_string(repo("deploy/systemd/baton.env")).unwrap();
    for line in env.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (k, _) = line.split_once('=').unwrap();
        assert!(is_config_env_key(k.trim_start_matches("BATON_")), "unknown config key {k}");
    }
}
