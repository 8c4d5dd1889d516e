//! The deploy files parse, and the fields that keep a cluster safe and
//! reachable are what they must be. Runs everywhere (no Docker or cluster).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use baton_coordinator::config::{Config, TlsConfig, is_config_env_key};
use baton_coordinator::tls::certgen::{Ca, write_private};
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

/// Where the TLS variants mount the certificates in the container.
const TLS_MOUNT: &str = "/etc/baton/tls";

/// A compose `environment` mapping, with `<<` merge keys resolved (the
/// keys written beside a merge win, as in YAML).
fn env_map(env: &Yaml) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let hash = env.as_hash().unwrap_or_else(|| panic!("environment is not a mapping: {env:?}"));
    if let Some(base) = hash.get(&Yaml::String("<<".into())) {
        out.extend(env_map(base));
    }
    for (k, v) in hash {
        let k = k.as_str().unwrap();
        if k != "<<" {
            out.insert(k.to_string(), v.as_str().unwrap_or_else(|| panic!("{k}: not a string")).to_string());
        }
    }
    out
}

/// The `[tls]` section `BATON_TLS__*` variables make, with the mounted
/// files at `files` instead of `TLS_MOUNT`. Unknown keys fail (the struct
/// denies them), as they would fail a node at start.
fn tls_config(env: &BTreeMap<String, String>, files: &Path) -> TlsConfig {
    let mut section = serde_json::Map::new();
    for (k, v) in env {
        assert!(is_config_env_key(k.trim_start_matches("BATON_")), "unknown config key {k}");
        if let Some(field) = k.strip_prefix("BATON_TLS__") {
            let v = match v.strip_prefix(TLS_MOUNT) {
                Some(rest) => files.join(rest.trim_start_matches('/')).display().to_string(),
                None => v.clone(),
            };
            section.insert(field.to_ascii_lowercase(), serde_json::Value::String(v));
        }
    }
    serde_json::from_value(serde_json::Value::Object(section)).expect("a valid [tls] section")
}

/// A node with `tls` passes validation, which loads the files: the
/// variables name a CA, a certificate and its key.
fn assert_tls_loads(tls: TlsConfig) {
    let cfg = Config { node_id: 1, tls: Some(tls), ..Config::default() };
    cfg.validate().expect("a node with these TLS settings starts");
}

/// Certificates as the deploy docs name them, signed by one CA.
fn write_certs(dir: &Path, files: &[(&str, &str)]) {
    let ca = Ca::new("deploy test CA").unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
    std::fs::write(dir.join("ca.crt"), &ca.cert_pem).unwrap();
    for (cert, key) in files {
        let issued = ca.issue(&["localhost"], None).unwrap();
        std::fs::write(dir.join(cert), &issued.cert_pem).unwrap();
        write_private(&dir.join(key), &issued.key_pem).unwrap();
    }
}

#[test]
fn compose_tls_overrides_give_every_node_its_own_certificate() {
    for n in [3usize, 5] {
        let base = &load(&format!("deploy/compose/docker-compose.{n}.yml"))[0];
        let tls = &load(&format!("deploy/compose/docker-compose.{n}.tls.yml"))[0];
        let certs = tempfile::tempdir().unwrap();
        let mut files: Vec<(String, String)> =
            (1..=n).map(|i| (format!("node{i}.pem"), format!("node{i}-key.pem"))).collect();
        files.push(("client.pem".into(), "client-key.pem".into()));
        write_certs(certs.path(), &files.iter().map(|(c, k)| (c.as_str(), k.as_str())).collect::<Vec<_>>());

        // An override only adds to services of the base file: a service it
        // named alone would have no image or command.
        let services: Vec<&str> = tls["services"].as_hash().unwrap().keys().map(|k| k.as_str().unwrap()).collect();
        let mut expected: Vec<String> = (1..=n).map(|i| format!("baton{i}")).collect();
        expected.push("worker".into());
        assert_eq!(services, expected, "the override covers every node and the worker");
        for s in &services {
            assert!(!base["services"][*s].is_badvalue(), "{s} is not in the base file");
            let o = &tls["services"][*s];
            assert_eq!(strs(&o["volumes"]), vec![format!("${{BATON_TLS_DIR:-./certs}}:{TLS_MOUNT}:ro")], "{s}");
            // Command, ports and healthcheck (HTTP, which stays plaintext)
            // come from the base file.
            for key in ["command", "ports", "healthcheck", "image"] {
                assert!(o[key].is_badvalue(), "{s} overrides {key}");
            }
        }
        for i in 1..=n {
            let env = env_map(&tls["services"][format!("baton{i}").as_str()]["environment"]);
            assert_eq!(env["BATON_TLS__CERT"], format!("{TLS_MOUNT}/node{i}.pem"), "node {i} has its own certificate");
            assert_eq!(env["BATON_TLS__KEY"], format!("{TLS_MOUNT}/node{i}-key.pem"));
            assert_tls_loads(tls_config(&env, certs.path()));
        }
        // The worker connects with the CLI's --ca/--cert/--key variables.
        let env = env_map(&tls["services"]["worker"]["environment"]);
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(keys, ["BATON_CA", "BATON_CERT", "BATON_KEY"]);
        for (k, v) in &env {
            let file = v.strip_prefix(TLS_MOUNT).unwrap_or_else(|| panic!("{k}={v} is not under {TLS_MOUNT}"));
            assert!(certs.path().join(file.trim_start_matches('/')).is_file(), "{k}={v}: no such file in the layout");
        }
        baton_client::TlsOptions::from_files(
            Some(&certs.path().join("ca.pem")),
            Some(&certs.path().join("client.pem")),
            Some(&certs.path().join("client-key.pem")),
        )
        .expect("the worker's TLS files load");
    }
}

/// The value at `key` of the mapping `y`.
fn get_mut<'a>(y: &'a mut Yaml, key: &str) -> &'a mut Yaml {
    match y {
        Yaml::Hash(h) => h.get_mut(&Yaml::String(key.into())).unwrap_or_else(|| panic!("no {key}")),
        other => panic!("{key}: {other:?} is not a mapping"),
    }
}

#[test]
fn kubernetes_tls_manifest_is_the_plaintext_one_with_certificates_mounted() {
    let plain = load("deploy/k8s/baton.yaml");
    let tls = load("deploy/k8s/baton-tls.yaml");
    assert_eq!(plain.len(), tls.len());
    for (p, t) in plain.iter().zip(&tls) {
        if p["kind"].as_str() != Some("StatefulSet") {
            assert_eq!(p, t, "baton-tls.yaml differs from baton.yaml outside the StatefulSet");
        }
    }
    let sts_plain = by_kind(&plain, "StatefulSet", "baton");
    let sts = by_kind(&tls, "StatefulSet", "baton");
    let pod = &sts["spec"]["template"]["spec"];
    let c = &pod["containers"][0];

    // The Secret is mounted read-only, whole (a subPath mount would miss
    // updates, and so reloads).
    let mounts = c["volumeMounts"].as_vec().unwrap();
    assert_eq!(mounts.len(), 2);
    assert_eq!(mounts[0], sts_plain["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]);
    let m = &mounts[1];
    assert_eq!(m["mountPath"].as_str(), Some(TLS_MOUNT));
    assert_eq!(m["readOnly"].as_bool(), Some(true));
    assert!(m["subPath"].is_badvalue());
    let volumes = pod["volumes"].as_vec().unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0]["name"], m["name"]);
    assert_eq!(volumes[0]["secret"]["secretName"].as_str(), Some("baton-tls"));
    assert!(volumes[0]["secret"]["items"].is_badvalue(), "every key of the Secret is a file");

    // The variables name the Secret's keys and make a [tls] that loads.
    let env: BTreeMap<String, String> = c["env"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(env["BATON_TLS__CA"], format!("{TLS_MOUNT}/ca.crt"));
    assert_eq!(env["BATON_TLS__CERT"], format!("{TLS_MOUNT}/tls.crt"));
    assert_eq!(env["BATON_TLS__KEY"], format!("{TLS_MOUNT}/tls.key"));
    let certs = tempfile::tempdir().unwrap();
    write_certs(certs.path(), &[("tls.crt", "tls.key")]);
    assert_tls_loads(tls_config(&env, certs.path()));

    // Everything else, probes on the plaintext HTTP port included, is
    // baton.yaml's.
    let mut rest = sts.clone();
    let pod = get_mut(get_mut(get_mut(&mut rest, "spec"), "template"), "spec");
    let Yaml::Hash(h) = &mut *pod else { unreachable!() };
    h.remove(&Yaml::String("volumes".into()));
    let Yaml::Array(containers) = get_mut(pod, "containers") else { panic!("containers is not a list") };
    *get_mut(&mut containers[0], "volumeMounts") =
        sts_plain["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].clone();
    let Yaml::Hash(c) = &mut containers[0] else { unreachable!() };
    c.remove(&Yaml::String("env".into()));
    assert_eq!(&rest, sts_plain, "the TLS StatefulSet adds only env, the mount and the volume");
}
