//! Authentication, roles scoped to namespaces, workers restricted to their
//! namespaces, and the audit trail, on a real 3-node cluster with `[auth]`
//! on (static tokens and HS256 JWTs).

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use baton_client::error::{ERROR_CODE_HEADER, codes};
use baton_client::{Client, ClientConfig, Error, Worker, proto};
use baton_coordinator::auth::hash_token;
use common::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const JWT_SECRET: &str = "an-hs256-secret-of-more-than-32-bytes";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "baton-test";

/// (token, name, grants) of the static tokens the cluster knows.
const TOKENS: &[(&str, &str, &[&str])] = &[
    ("t-admin", "admin", &["admin:*"]),
    ("t-op-a", "op-a", &["operator:a"]),
    ("t-op-a-reads-b", "op-a-reads-b", &["operator:a", "reader:b"]),
    ("t-reader-a", "reader-a", &["reader:a"]),
    ("t-worker-a", "worker-a", &["worker:a"]),
    ("t-worker-b", "worker-b", &["worker:b"]),
];

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let secret = dir.join("jwt.secret");
    std::fs::write(&secret, JWT_SECRET).unwrap();
    let mut toml = format!(
        "[auth.jwt]\nhs256_secret_file = {:?}\nissuer = {ISSUER:?}\naudience = {AUDIENCE:?}\n",
        secret.display().to_string()
    );
    for (token, name, grants) in TOKENS {
        toml += &format!("[[auth.tokens]]\nname = {name:?}\nsha256 = {:?}\ngrants = {grants:?}\n", hash_token(token));
    }
    let path = dir.join("auth.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn client(c: &Cluster, token: Option<&str>) -> Client {
    let mut cfg = ClientConfig::new(c.endpoints());
    cfg.deadline = SECS(30);
    cfg.token = token.map(str::to_string);
    Client::new(cfg).unwrap()
}

fn jwt(exp_offset_secs: i64, secret: &str, grants: &[&str]) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = serde_json::json!({
        "sub": "jwt-user", "iss": ISSUER, "aud": AUDIENCE, "exp": now + exp_offset_secs, "baton_grants": grants,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn spec(ns: &str, shards: u32) -> proto::JobSpec {
    proto::JobSpec { namespace: ns.into(), shards, ..Default::default() }
}

fn assert_code(r: Result<impl std::fmt::Debug, Error>, code: &str) -> String {
    match r {
        Err(e) if e.code() == Some(code) => e.to_string(),
        other => panic!("expected {code}, got {other:?}"),
    }
}

/// The node's /metrics page (HTTP/1.0, no client library needed).
fn metrics(c: &Cluster, id: u64) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", c.ports[&id].http)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `baton_audit_events_total{action, outcome}` summed over the live nodes.
fn audit_count(c: &Cluster, action: &str, outcome: &str) -> u64 {
    let (a, o) = (format!("action=\"{action}\""), format!("outcome=\"{outcome}\""));
    c.live()
        .into_iter()
        .map(|id| {
            metrics(c, id)
                .lines()
                .filter(|l| l.starts_with("baton_audit_events_total{") && l.contains(&a) && l.contains(&o))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_namespaces_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let c = Cluster::start(3, Opts { args: vec!["--config".into(), cfg.display().to_string()], ..Opts::default() });
    let leader = c.wait_leader(SECS(20)).await;

    // No token, a wrong token, a JWT signed with another key, an expired JWT.
    assert_code(client(&c, None).submit(spec("a", 1)).await, codes::UNAUTHENTICATED);
    assert_code(client(&c, Some("t-nope")).get(1).await, codes::UNAUTHENTICATED);
    let forged = jwt(600, "another-secret-of-more-than-32-bytes!!", &["admin:*"]);
    assert_code(client(&c, Some(&forged)).get(1).await, codes::UNAUTHENTICATED);
    let expired = jwt(-3600, JWT_SECRET, &["admin:*"]);
    assert_code(client(&c, Some(&expired)).get(1).await, codes::UNAUTHENTICATED);
    // On the wire: gRPC UNAUTHENTICATED with the code in `baton-error-code`.
    let raw = c.jobs(leader).await.get_job(proto::GetJobRequest { job_id: 1, consistency: 0 }).await.unwrap_err();
    assert_eq!(raw.code(), tonic::Code::Unauthenticated);
    assert_eq!(raw.metadata().get(ERROR_CODE_HEADER).unwrap(), codes::UNAUTHENTICATED);

    let admin = client(&c, Some("t-admin"));
    let job_a = admin.submit(spec("a", 1)).await.unwrap().job_id;
    let job_b = admin.submit(spec("b", 1)).await.unwrap().job_id;
    // A valid JWT reads what its grants allow.
    let jwt_reader = client(&c, Some(&jwt(600, JWT_SECRET, &["reader:a"])));
    assert_eq!(jwt_reader.get(job_a).await.unwrap().namespace, "a");

    // A token for namespace a cannot read or cancel b's job: it does not
    // even learn that the job exists (NOT_FOUND, as for a missing id).
    let op_a = client(&c, Some("t-op-a"));
    assert_code(op_a.get(job_b).await, codes::NOT_FOUND);
    assert_code(op_a.cancel(job_b, "no").await, codes::NOT_FOUND);
    assert_code(op_a.results(job_b).await, codes::NOT_FOUND);
    assert_code(op_a.get(999_999).await, codes::NOT_FOUND);
    // Listing b, or every namespace, is refused naming the role and namespace.
    let m = assert_code(
        op_a.list(proto::ListJobsRequest { namespace: "b".into(), ..Default::default() }).await,
        codes::PERMISSION_DENIED,
    );
    assert!(m.contains("needs role reader in namespace b"), "{m}");
    assert_code(op_a.list(proto::ListJobsRequest::default()).await, codes::PERMISSION_DENIED);
    assert_code(op_a.submit(spec("b", 1)).await, codes::PERMISSION_DENIED);
    // A caller who may see b but not operate there is told what is missing.
    let op_a_reads_b = client(&c, Some("t-op-a-reads-b"));
    assert_eq!(op_a_reads_b.get(job_b).await.unwrap().id, job_b);
    let m = assert_code(op_a_reads_b.cancel(job_b, "no").await, codes::PERMISSION_DENIED);
    assert!(m.contains("needs role operator in namespace b"), "{m}");
    // Admin operations need admin in every namespace.
    let m = assert_code(op_a.remove_node(3).await, codes::PERMISSION_DENIED);
    assert!(m.contains("needs role admin in namespace *"), "{m}");

    // A reader cannot cancel; an operator can, in its namespace.
    let reader_a = client(&c, Some("t-reader-a"));
    assert_eq!(reader_a.get(job_a).await.unwrap().id, job_a);
    let m = assert_code(reader_a.cancel(job_a, "no").await, codes::PERMISSION_DENIED);
    assert!(m.contains("needs role operator"), "{m}");
    let before = audit_count(&c, "CancelJob", "ok");
    op_a.cancel(job_a, "by operator").await.unwrap();
    assert_eq!(admin.get(job_a).await.unwrap().status, proto::JobStatus::Cancelled as i32);
    // Audited once (by the node that served it), and counted.
    assert!(audit_count(&c, "CancelJob", "ok") > before);
    assert!(audit_count(&c, "CancelJob", "denied") >= 1);
    assert!(c.logs().contains("baton::audit"), "audit events are logged");

    // A follower forwards the caller's credential; the leader checks it again.
    let follower = c.live().into_iter().find(|id| *id != leader).unwrap();
    let mut req = tonic::Request::new(proto::GetJobRequest { job_id: job_b, consistency: 0 });
    req.metadata_mut().insert("authorization", "Bearer t-op-a-reads-b".parse().unwrap());
    let got = c.jobs(follower).await.get_job(req).await.unwrap().into_inner();
    assert_eq!(got.id, job_b);
    let mut req = tonic::Request::new(proto::CancelJobRequest { job_id: job_b, reason: String::new() });
    req.metadata_mut().insert("authorization", "Bearer t-op-a".parse().unwrap());
    let s = c.jobs(follower).await.cancel_job(req).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
    // Health and Status stay open.
    assert!(c.status(follower).await.is_some());
}

fn worker(c: &Cluster, name: &str, token: &str) -> Worker {
    let label = name.to_string();
    Worker::builder()
        .endpoints(c.endpoints())
        .name(name)
        .capacity(2)
        .token(token)
        .handler(move |_ctx: baton_client::TaskContext| {
            let label = label.clone();
            async move { Ok(label.into_bytes()) }
        })
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_gets_only_its_namespaces_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let c = Cluster::start(3, Opts { args: vec!["--config".into(), cfg.display().to_string()], ..Opts::default() });
    c.wait_leader(SECS(20)).await;
    let admin = client(&c, Some("t-admin"));
    let job_b = admin.submit(spec("b", 2)).await.unwrap().job_id;
    let job_a = admin.submit(spec("a", 2)).await.unwrap().job_id;

    // A worker whose token allows only a.
    let (stop_a, stopped_a) = tokio::sync::oneshot::channel::<()>();
    let wa = tokio::spawn(worker(&c, "wa", "t-worker-a").run(async move {
        let _ = stopped_a.await;
    }));
    let done_a = wait_done(&admin, job_a).await;
    assert_eq!(done_a.status, proto::JobStatus::Succeeded as i32, "{done_a:?}");
    assert!(admin.results(job_a).await.unwrap().iter().all(|r| r.result == b"wa"));
    // b's job was submitted first and a worker with free slots was there all
    // along, yet its tasks stay pending: the worker may not have them.
    let b = admin.get(job_b).await.unwrap();
    assert_eq!(b.status, proto::JobStatus::Queued as i32, "{b:?}");
    // The a-worker's token cannot read b's results either.
    let wa_client = client(&c, Some("t-worker-a"));
    assert_code(wa_client.results(job_b).await, codes::NOT_FOUND);

    // A worker for b takes them.
    let (stop_b, stopped_b) = tokio::sync::oneshot::channel::<()>();
    let wb = tokio::spawn(worker(&c, "wb", "t-worker-b").run(async move {
        let _ = stopped_b.await;
    }));
    let done_b = wait_done(&admin, job_b).await;
    assert_eq!(done_b.status, proto::JobStatus::Succeeded as i32, "{done_b:?}");
    assert!(admin.results(job_b).await.unwrap().iter().all(|r| r.result == b"wb"));

    // A credential without a worker grant cannot open a session at all.
    let leader = c.wait_leader(SECS(20)).await;
    let register = proto::WorkerMessage {
        msg: Some(proto::worker_message::Msg::Register(proto::Register {
            name: "nobody".into(),
            capacity: 1,
            ..Default::default()
        })),
    };
    let mut req = tonic::Request::new(tokio_stream::iter(vec![register]));
    req.metadata_mut().insert("authorization", "Bearer t-reader-a".parse().unwrap());
    let refused = proto::worker_service_client::WorkerServiceClient::new(c.channel(leader).await)
        .session(req)
        .await
        .map(drop)
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("needs role worker"), "{refused:?}");

    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    wa.await.unwrap().unwrap();
    wb.await.unwrap().unwrap();
}

async fn wait_done(cl: &Client, job: u64) -> proto::Job {
    let deadline = std::time::Instant::now() + SECS(60);
    loop {
        let j = cl.get(job).await.unwrap();
        if j.finished_ms != 0 {
            return j;
        }
        assert!(std::time::Instant::now() < deadline, "job {job} did not finish: {j:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
