//! TLS on real processes: a TLS cluster forms and a worker completes a job
//! over TLS; plaintext clients get `TLS_REQUIRED`; certificates of another
//! CA, or expired, are refused on both ports; certificates rotate without
//! a failed call.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_client::error::{codes, status_code};
use baton_client::proto::job_service_client::JobServiceClient;
use baton_client::{Client, ClientConfig, TaskContext, TaskError, TlsOptions, Worker, proto};
use baton_coordinator::network::pb;
use baton_coordinator::tls::certgen::{Ca, Issued, write_private};
use common::*;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// One cluster at a time: each test runs three nodes on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A CA, the node certificate every node of a test cluster shares (its SANs
/// are `localhost` and `127.0.0.1`), and a client certificate.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    client: Issued,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test cluster CA").unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        let node = ca.issue(&["localhost", "127.0.0.1"], None).unwrap();
        std::fs::write(dir.path().join("node.pem"), &node.cert_pem).unwrap();
        write_private(&dir.path().join("node-key.pem"), &node.key_pem).unwrap();
        let client = ca.issue(&["test-client"], None).unwrap();
        Pki { dir, ca, client }
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// Node settings: TLS on both ports, client certificates optional on the API.
    fn opts(&self) -> Opts {
        let p = |f: &str| self.path(f).display().to_string();
        Opts {
            env: vec![
                ("BATON_TLS__CA".into(), p("ca.pem")),
                ("BATON_TLS__CERT".into(), p("node.pem")),
                ("BATON_TLS__KEY".into(), p("node-key.pem")),
                ("BATON_TLS__CLIENT_AUTH".into(), "optional".into()),
            ],
            ..Opts::default()
        }
    }

    fn tonic(&self, id: &Issued) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca.cert_pem))
            .identity(Identity::from_pem(&id.cert_pem, &id.key_pem))
    }

    fn sdk(&self, id: Option<&Issued>) -> TlsOptions {
        TlsOptions {
            ca_pem: Some(self.ca.cert_pem.clone().into_bytes()),
            identity: id.map(|i| (i.cert_pem.clone().into_bytes(), i.key_pem.clone().into_bytes())),
            domain: None,
        }
    }

    fn client(&self, c: &Cluster, id: Option<&Issued>) -> Client {
        let mut cfg = ClientConfig::new(bare_endpoints(c));
        cfg.tls = Some(self.sdk(id));
        cfg.deadline = SECS(30);
        Client::new(cfg).unwrap()
    }

    async fn start(&self) -> Cluster {
        let mut c = Cluster::start(3, self.opts());
        c.tls = Some(self.tonic(&self.client));
        c.wait_leader(SECS(30)).await;
        c
    }
}

/// `host:port` endpoints: the SDK picks https because TLS is configured.
fn bare_endpoints(c: &Cluster) -> Vec<String> {
    c.ports.values().map(|p| format!("127.0.0.1:{}", p.api)).collect()
}

fn raft_endpoint(c: &Cluster, id: u64, tls: Option<ClientTlsConfig>) -> Endpoint {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut e = Endpoint::from_shared(format!("{scheme}://127.0.0.1:{}", c.ports[&id].raft)).unwrap();
    if let Some(t) = tls {
        e = e.tls_config(t).unwrap();
    }
    e.connect_timeout(SECS(2)).timeout(SECS(5))
}

/// The certificate the server at `port` presents in a fresh handshake.
async fn presented_cert(port: u16, ca_pem: &str, client: Option<&Issued>) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some(i) => b
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(i.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(i.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_serves_a_worker_and_tells_plaintext_clients_what_is_wrong() {
    let _g = SERIAL.lock().await;
    let pki = Pki::new();
    let c = pki.start().await;

    // A worker doing real work over TLS, found through bare host:port endpoints.
    let worker = Worker::builder()
        .endpoints(bare_endpoints(&c))
        .tls(pki.sdk(Some(&pki.client)))
        .name("tls-worker")
        .capacity(4)
        .handler(|ctx: TaskContext| async move { Ok::<_, TaskError>(ctx.payload.to_ascii_uppercase()) })
        .build()
        .unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));

    let client = pki.client(&c, None);
    let job = client.submit(spec("tls", 6, "tls-job")).await.unwrap().job_id;
    let deadline = Instant::now() + SECS(60);
    let done = loop {
        let j = client.get(job).await.unwrap();
        if j.finished_ms != 0 {
            break j;
        }
        assert!(Instant::now() < deadline, "job not finished: {j:?}\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done.status, proto::JobStatus::Succeeded as i32, "{done:?}");
    let results = client.results(job).await.unwrap();
    assert_eq!(results.len(), 6);
    for r in &results {
        assert_eq!(r.result, format!("P{}", r.shard).into_bytes());
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(SECS(10), running).await;

    // Plaintext on the API port: refused with TLS_REQUIRED, by raw gRPC and by the SDK.
    for id in c.live() {
        let ch = Endpoint::from_shared(format!("http://127.0.0.1:{}", c.ports[&id].api)).unwrap().connect_lazy();
        let s = JobServiceClient::new(ch).get_job(proto::GetJobRequest { job_id: job, ..Default::default() }).await;
        let s = s.unwrap_err();
        assert_eq!((s.code(), status_code(&s)), (tonic::Code::FailedPrecondition, Some(codes::TLS_REQUIRED)));
    }
    let plain = Client::connect([format!("http://127.0.0.1:{}", c.ports[&1].api)]).unwrap();
    let e = plain.get(job).await.unwrap_err();
    assert_eq!(e.code(), Some(codes::TLS_REQUIRED), "{e}");
    // And on the Raft port.
    let mut raft = pb::raft_service_client::RaftServiceClient::new(raft_endpoint(&c, 2, None).connect_lazy());
    let s = raft.identify(pb::IdentifyRequest {}).await.unwrap_err();
    assert_eq!(status_code(&s), Some(codes::TLS_REQUIRED));

    // An expired client certificate is refused on the API port, where a
    // valid one (and none: client_auth = optional) is served.
    let now = time::OffsetDateTime::now_utc();
    let expired =
        pki.ca.issue(&["test-client"], Some((now - time::Duration::days(10), now - time::Duration::days(1)))).unwrap();
    let mut cfg = ClientConfig::new(bare_endpoints(&c));
    cfg.tls = Some(pki.sdk(Some(&expired)));
    cfg.deadline = SECS(2);
    let e = Client::new(cfg).unwrap().get(job).await.unwrap_err();
    assert_ne!(e.code(), Some(codes::NOT_FOUND), "{e}");
    pki.client(&c, Some(&pki.client)).get(job).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_of_another_ca_or_expired_can_neither_join_nor_append() {
    let _g = SERIAL.lock().await;
    let pki = Pki::new();
    let mut c = pki.start().await;
    let leader = c.wait_leader(SECS(30)).await;
    let before = c.status(leader).await.unwrap();

    let other = Ca::new("another CA").unwrap();
    let foreign = other.issue(&["localhost", "127.0.0.1"], None).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let expired = pki
        .ca
        .issue(&["localhost", "127.0.0.1"], Some((now - time::Duration::days(10), now - time::Duration::days(1))))
        .unwrap();

    // The cluster CA's client certificate reaches the Raft service.
    let mut ok = pb::raft_service_client::RaftServiceClient::new(
        raft_endpoint(&c, 2, Some(pki.tonic(&pki.client))).connect_lazy(),
    );
    let who = ok.identify(pb::IdentifyRequest {}).await.unwrap().into_inner();
    // A vote addressed exactly right, from a certificate of another CA or
    // an expired one, never reaches openraft: the handshake refuses it.
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(1_000, 4), None);
    for (what, id) in [("another CA", &foreign), ("expired", &expired)] {
        // The client trusts the cluster CA, so only the server's check can fail.
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca.cert_pem))
            .identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
        let mut raft = pb::raft_service_client::RaftServiceClient::new(raft_endpoint(&c, 2, Some(tls)).connect_lazy());
        let s = raft
            .vote(pb::RaftMessage {
                data: baton_raft_store::codec::encode(&vote).unwrap(),
                cluster_id: who.cluster_id.clone(),
                from_node: 4,
                to_node: 2,
                to_incarnation: who.incarnation.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status_code(&s), None, "{what}: the service answered: {s:?}");
        assert_ne!(s.code(), tonic::Code::FailedPrecondition, "{what}: {s:?}");
    }

    // A node whose certificates come from another CA cannot be added: the
    // leader cannot verify it, and it cannot verify the leader.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &other.cert_pem).unwrap();
    std::fs::write(dir.path().join("node.pem"), &foreign.cert_pem).unwrap();
    write_private(&dir.path().join("node-key.pem"), &foreign.key_pem).unwrap();
    let arg = |f: &str| dir.path().join(f).display().to_string();
    let (ca, cert, key) = (arg("ca.pem"), arg("node.pem"), arg("node-key.pem"));
    c.spawn_args(4, false, &["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]);
    let mut cfg = ClientConfig::new(bare_endpoints(&c).into_iter().take(3));
    cfg.tls = Some(pki.sdk(Some(&pki.client)));
    cfg.deadline = SECS(15);
    let add = Client::new(cfg).unwrap();
    let raft4 = format!("127.0.0.1:{}", c.ports[&4].raft);
    let api4 = format!("127.0.0.1:{}", c.ports[&4].api);
    let e = add.add_learner(4, &raft4, &api4).await.unwrap_err();
    assert!(e.code() != Some(codes::INVALID), "{e}");

    // Nothing changed: same members, same term, no node 4.
    let after = c.status(leader).await.unwrap();
    assert_eq!(after.members, before.members);
    assert_eq!(after.term, before.term);
    assert!(after.members.iter().all(|m| m.id != 4));
    c.kill(4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotated_certificates_are_served_without_a_failed_call() {
    let _g = SERIAL.lock().await;
    let pki = Pki::new();
    let c = pki.start().await;
    let before = presented_cert(c.ports[&1].api, &pki.ca.cert_pem, None).await;

    // A client submitting all along.
    let client = pki.client(&c, None);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let submitter = {
        let (client, stop, sent) = (client.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match client.submit(spec("rotate", 1, &format!("rotate-{i}"))).await {
                    Ok(_) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e.to_string()),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            failures
        })
    };
    let wait_sent = |n: u64| {
        let sent = sent.clone();
        async move {
            let deadline = Instant::now() + SECS(30);
            while sent.load(Ordering::Relaxed) < n {
                assert!(Instant::now() < deadline, "only {} submits acknowledged", sent.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_sent(5).await;

    // New certificate and key from the same CA, each file replaced atomically.
    let next = pki.ca.issue(&["localhost", "127.0.0.1"], None).unwrap();
    let replace = |name: &str, pem: &str| {
        let tmp = pki.path(&format!("{name}.new"));
        write_private(&tmp, pem).unwrap();
        std::fs::rename(&tmp, pki.path(name)).unwrap();
    };
    replace("node-key.pem", &next.key_pem);
    replace("node.pem", &next.cert_pem);
    for id in c.live() {
        c.signal(id, libc::SIGHUP);
    }

    // New handshakes on every port of every node show the new certificate.
    let deadline = Instant::now() + SECS(30);
    for id in c.live() {
        let p = c.ports[&id];
        loop {
            let api = presented_cert(p.api, &pki.ca.cert_pem, None).await;
            let raft = presented_cert(p.raft, &pki.ca.cert_pem, Some(&pki.client)).await;
            if api == next.der && raft == next.der {
                break;
            }
            assert!(Instant::now() < deadline, "node {id} still serves the old certificate\n{}", c.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_ne!(before, next.der);

    // The cluster keeps working on the new material, and no call failed.
    let at_rotation = sent.load(Ordering::Relaxed);
    wait_sent(at_rotation + 5).await;
    pki.client(&c, None).status(None).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let failures = submitter.await.unwrap();
    assert!(failures.is_empty(), "submits failed during rotation: {failures:?}");
}

/// With `[auth]` on, a client certificate named in `[[auth.certs]]` stands
/// in for a token: it gets that entry's grants, through any node (a
/// follower sends it to the leader rather than forwarding a call it has no
/// credential for). A verified certificate that no entry names, or none at
/// all, is UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_certificate_stands_in_for_a_token() {
    let _g = SERIAL.lock().await;
    let pki = Pki::new();
    let hash = baton_coordinator::auth::hash_token("t-admin");
    let cfg = pki.path("auth.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[auth.tokens]]\nname = \"admin\"\nsha256 = {hash:?}\ngrants = [\"admin:*\"]\n\
             [[auth.certs]]\nname = \"ci\"\ndns_name = \"test-client\"\ngrants = [\"submitter:a\"]\n"
        ),
    )
    .unwrap();
    let mut opts = pki.opts();
    opts.args = vec!["--config".into(), cfg.display().to_string()];
    let mut c = Cluster::start(3, opts);
    c.tls = Some(pki.tonic(&pki.client));
    c.wait_leader(SECS(30)).await;

    let mut admin = ClientConfig::new(bare_endpoints(&c));
    admin.tls = Some(pki.sdk(None));
    admin.token = Some("t-admin".into());
    let admin = Client::new(admin).unwrap();
    let spec = |ns: &str| proto::JobSpec { namespace: ns.into(), shards: 1, ..Default::default() };
    let job_b = admin.submit(spec("b")).await.unwrap().job_id;

    // The certificate's grants, whichever node each call reaches first.
    let by_cert = pki.client(&c, Some(&pki.client));
    for _ in 0..6 {
        let id = by_cert.submit(spec("a")).await.unwrap().job_id;
        assert_eq!(by_cert.get(id).await.unwrap().namespace, "a");
    }
    let e = by_cert.get(job_b).await.unwrap_err();
    assert_eq!(e.code(), Some(codes::NOT_FOUND), "{e:?}");
    let e = by_cert.submit(spec("b")).await.unwrap_err();
    assert_eq!(e.code(), Some(codes::PERMISSION_DENIED), "{e:?}");

    // No certificate and no token; a certificate no entry names.
    let e = pki.client(&c, None).submit(spec("a")).await.unwrap_err();
    assert_eq!(e.code(), Some(codes::UNAUTHENTICATED), "{e:?}");
    let stranger = pki.ca.issue(&["someone-else"], None).unwrap();
    let e = pki.client(&c, Some(&stranger)).submit(spec("a")).await.unwrap_err();
    assert_eq!(e.code(), Some(codes::UNAUTHENTICATED), "{e:?}");
    assert!(e.to_string().contains("[[auth.certs]]"), "{e}");
}
