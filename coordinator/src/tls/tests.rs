use super::certgen::{Ca, write_private};
use super::*;

struct Files {
    dir: tempfile::TempDir,
    cfg: TlsConfig,
}

fn files(ca: &Ca) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let node = ca.issue(&["localhost", "127.0.0.1", "node1"], None).unwrap();
    let cfg = TlsConfig {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("node.pem"),
        key: dir.path().join("node-key.pem"),
        ..Default::default()
    };
    std::fs::write(&cfg.ca, &ca.cert_pem).unwrap();
    std::fs::write(&cfg.cert, &node.cert_pem).unwrap();
    write_private(&cfg.key, &node.key_pem).unwrap();
    Files { dir, cfg }
}

#[test]
fn valid_files_load_and_config_validation_names_the_bad_one() {
    let ca = Ca::new("test CA").unwrap();
    let f = files(&ca);
    Material::load(&f.cfg).unwrap();
    let mut c = crate::config::Config { tls: Some(f.cfg.clone()), ..Default::default() };
    c.validate().unwrap();

    let mut check = |mutate: &dyn Fn(&mut TlsConfig), needle: &str| {
        let mut t = f.cfg.clone();
        mutate(&mut t);
        c.tls = Some(t);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("tls") && err.contains(needle), "{err} should name {needle}");
    };
    check(&|t| t.cert = f.dir.path().join("missing.pem"), "missing.pem");
    check(&|t| t.key = PathBuf::new(), "tls.key");
    // A CA file that holds no certificate.
    let junk = f.dir.path().join("junk.pem");
    std::fs::write(&junk, "not pem").unwrap();
    check(&|t| t.ca = junk.clone(), "junk.pem");
    // A key that does not belong to the certificate.
    let other = ca.issue(&["other"], None).unwrap();
    let other_key = f.dir.path().join("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).unwrap();
    check(&|t| t.key = other_key.clone(), "tls.cert/tls.key");
}

#[test]
fn client_auth_modes_parse_from_toml() {
    let t: TlsConfig =
        toml::from_str("ca = \"a\"\ncert = \"b\"\nkey = \"c\"\nclient_auth = \"required\"\npeer_names = [\"node1\"]\n")
            .unwrap();
    assert_eq!(t.client_auth, ClientAuth::Required);
    assert_eq!(t.peer_names, vec!["node1".to_string()]);
    assert!(toml::from_str::<TlsConfig>("client_auth = \"sometimes\"").is_err());
}

#[test]
fn reload_swaps_material_and_a_bad_file_keeps_the_old() {
    let ca = Ca::new("test CA").unwrap();
    let f = files(&ca);
    let state = TlsState::new(f.cfg.clone()).unwrap();
    let first = state.current().leaf.clone();
    assert!(!state.changed());

    // A new certificate and key from the same CA.
    let next = ca.issue(&["localhost", "127.0.0.1", "node1"], None).unwrap();
    std::fs::write(&f.cfg.cert, &next.cert_pem).unwrap();
    write_private(&f.cfg.key, &next.key_pem).unwrap();
    state.reload().unwrap();
    assert_eq!(state.current().leaf.as_ref(), next.der.as_slice());
    assert_ne!(state.current().leaf, first);

    // A broken certificate file: the reload fails and the material stays.
    std::fs::write(&f.cfg.cert, "garbage").unwrap();
    assert!(state.reload().is_err());
    assert_eq!(state.current().leaf.as_ref(), next.der.as_slice());
}

#[test]
fn a_changed_file_is_noticed_once() {
    let ca = Ca::new("test CA").unwrap();
    let f = files(&ca);
    let state = TlsState::new(f.cfg.clone()).unwrap();
    // Make the modification time differ even on coarse clocks.
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options().write(true).open(&f.cfg.cert).unwrap().set_modified(later).unwrap();
    assert!(state.changed());
    state.reload().unwrap();
    assert!(!state.changed());
}

#[test]
fn pinning_checks_san_dns_names() {
    let ca = Ca::new("test CA").unwrap();
    let c = ca.issue(&["localhost", "127.0.0.1", "node2"], None).unwrap();
    let der = CertificateDer::from(c.der.clone());
    assert!(verify::names_one_of(&der, &["node2".into()]));
    assert!(verify::names_one_of(&der, &["node1".into(), "node2".into()]));
    assert!(!verify::names_one_of(&der, &["node3".into()]));
    // An IP address is not a member name.
    assert!(!verify::names_one_of(&der, &["127.0.0.1".into()]));
}

/// One in-memory handshake against `server`; the server's verdict (in TLS
/// 1.3 the client is done before the server has checked its certificate).
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    ca_pem: &str,
    client: Option<&super::certgen::Issued>,
) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        Some(i) => b
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(i.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(i.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    let (a, b) = tokio::io::duplex(64 * 1024);
    let accept = tokio::spawn(async move {
        tokio_rustls::TlsAcceptor::from(server).accept(b).await.map(|_| ()).map_err(|e| e.to_string())
    });
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let _client = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, a).await;
    accept.await.unwrap()
}

#[tokio::test]
async fn the_raft_port_requires_a_valid_pinned_client_certificate() {
    let ca = Ca::new("test CA").unwrap();
    let mut f = files(&ca);
    f.cfg.peer_names = vec!["node1".into(), "node2".into()];
    let raft = Material::load(&f.cfg).unwrap().raft;
    let ok = ca.issue(&["node2"], None).unwrap();
    handshake(raft.clone(), &ca.cert_pem, Some(&ok)).await.unwrap();

    let now = time::OffsetDateTime::now_utc();
    let refused = [
        ("no certificate", None),
        ("a name not pinned", Some(ca.issue(&["node3"], None).unwrap())),
        ("a client certificate of the same CA", Some(ca.issue(&["baton-client"], None).unwrap())),
        (
            "expired",
            Some(ca.issue(&["node1"], Some((now - time::Duration::days(9), now - time::Duration::days(1)))).unwrap()),
        ),
        ("another CA", Some(Ca::new("other").unwrap().issue(&["node1"], None).unwrap())),
    ];
    for (what, cert) in refused {
        assert!(handshake(raft.clone(), &ca.cert_pem, cert.as_ref()).await.is_err(), "{what} was accepted");
    }

    // Without pinning, any certificate of the cluster CA is a peer.
    f.cfg.peer_names.clear();
    let raft = Material::load(&f.cfg).unwrap().raft;
    handshake(raft, &ca.cert_pem, Some(&ca.issue(&["node3"], None).unwrap())).await.unwrap();
}

#[tokio::test]
async fn the_api_port_follows_client_auth() {
    let ca = Ca::new("test CA").unwrap();
    let mut f = files(&ca);
    let client = ca.issue(&["someone"], None).unwrap();
    let foreign = Ca::new("other").unwrap().issue(&["someone"], None).unwrap();
    for (mode, none_ok, foreign_ok) in
        [(ClientAuth::None, true, true), (ClientAuth::Optional, true, false), (ClientAuth::Required, false, false)]
    {
        f.cfg.client_auth = mode;
        let api = Material::load(&f.cfg).unwrap().api;
        handshake(api.clone(), &ca.cert_pem, Some(&client)).await.unwrap();
        assert_eq!(handshake(api.clone(), &ca.cert_pem, None).await.is_ok(), none_ok, "{mode:?} without a cert");
        // With `none` the server never asks, so the client sends nothing.
        assert_eq!(handshake(api, &ca.cert_pem, Some(&foreign)).await.is_ok(), foreign_ok, "{mode:?} foreign cert");
    }
}
