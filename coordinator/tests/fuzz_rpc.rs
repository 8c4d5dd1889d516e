//! Structure-aware fuzzing of every public RPC on a real cluster.
//!
//! Every method of the API's descriptor set (so a method added later is
//! fuzzed without touching this file) gets random messages of its input
//! type, built from the descriptors with prost-reflect: edge values in
//! every field kind, unknown enum numbers, long and odd strings, nested
//! messages. A quarter are then mutated byte by byte. Calls alternate
//! between the leader and a follower (which forwards), and streams are
//! opened, fed and dropped. No node may crash, answer with a panic
//! (`UNKNOWN`) or an internal error of its own, or stop serving.
//!
//! `BATON_FUZZ_CASES` sets the messages per method; `BATON_FUZZ_SEED`
//! replays a run (its seed is printed first).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use baton_client::{Client, ClientConfig, proto};
use common::raw::Raw;
use common::*;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, MethodDescriptor, Value};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// Messages per method in `make test`: about 1,500 calls in all.
const CASES_PER_METHOD_DEFAULT: usize = 30;
/// Longest wait for one call or one stream's first messages. A call that
/// takes longer is counted as slow, not failed: the node must still pass
/// the liveness checks after every method.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Deepest nesting of generated messages.
const MAX_DEPTH: u32 = 3;

/// Methods whose valid use takes the cluster apart: a random message may
/// name a real member. Their decoding is fuzzed by `bad_input.rs` and their
/// checks by the membership tests.
const SKIPPED: [&str; 2] = ["baton.v1.ClusterService.RemoveNode", "baton.v1.ClusterService.ChangeMembership"];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const STRINGS: [&str; 12] = [
    "",
    "ns",
    "fuzz",
    "a/b",
    "bad\u{0}ns",
    "é☃\u{202e}",
    "* * * * * *",
    "*/0 * * * *",
    "Europe/Berlin",
    "Mars/Olympus",
    "1h",
    "${{}}",
];

fn random_string(rng: &mut StdRng) -> String {
    match rng.random_range(0..10) {
        0 => "x".repeat(rng.random_range(200..5_000)),
        1 => (0..rng.random_range(0..12)).map(|_| char::from(rng.random_range(0x20u8..0x7f))).collect(),
        _ => STRINGS[rng.random_range(0..STRINGS.len())].to_string(),
    }
}

fn pick<T: Copy>(rng: &mut StdRng, edges: &[T], small: impl FnOnce(&mut StdRng) -> T) -> T {
    if rng.random_bool(0.5) { small(rng) } else { edges[rng.random_range(0..edges.len())] }
}

fn random_value(rng: &mut StdRng, kind: &Kind, depth: u32) -> Value {
    match kind {
        Kind::Double => Value::F64(pick(rng, &[0.0, -1.0, f64::NAN, f64::INFINITY, 1e300], |r| r.random())),
        Kind::Float => Value::F32(pick(rng, &[0.0, -1.0, f32::NAN, f32::MAX], |r| r.random())),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(pick(rng, &[0, -1, i32::MIN, i32::MAX], |r| r.random_range(0..5)))
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(pick(rng, &[0, -1, i64::MIN, i64::MAX], |r| r.random_range(0..5)))
        }
        Kind::Uint32 | Kind::Fixed32 => {
            Value::U32(pick(rng, &[0, u32::MAX, 100_001, 1 << 31], |r| r.random_range(0..5)))
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Value::U64(pick(rng, &[0, u64::MAX, 1 << 53, i64::MAX as u64, 86_400_000], |r| r.random_range(0..5)))
        }
        Kind::Bool => Value::Bool(rng.random()),
        Kind::String => Value::String(random_string(rng)),
        Kind::Bytes => {
            let n = if rng.random_bool(0.05) { rng.random_range(60_000..300_000) } else { rng.random_range(0..64) };
            let mut b = vec![0u8; n];
            rng.fill_bytes(&mut b);
            Value::Bytes(b.into())
        }
        Kind::Enum(e) => {
            let known: Vec<i32> = e.values().map(|v| v.number()).collect();
            Value::EnumNumber(pick(rng, &known, |r| r.random_range(-3..40)))
        }
        Kind::Message(m) => Value::Message(random_message(rng, m, depth + 1)),
    }
}

fn map_key(rng: &mut StdRng, kind: &Kind) -> MapKey {
    match random_value(rng, kind, MAX_DEPTH) {
        Value::Bool(b) => MapKey::Bool(b),
        Value::I32(v) => MapKey::I32(v),
        Value::I64(v) => MapKey::I64(v),
        Value::U32(v) => MapKey::U32(v),
        Value::U64(v) => MapKey::U64(v),
        Value::String(s) => MapKey::String(s),
        v => unreachable!("{v:?} is not a map key type"),
    }
}

fn random_message(rng: &mut StdRng, desc: &MessageDescriptor, depth: u32) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    if depth > MAX_DEPTH {
        return m;
    }
    for f in desc.fields() {
        if !rng.random_bool(0.6) {
            continue;
        }
        let n = if rng.random_bool(0.05) { rng.random_range(100..400) } else { rng.random_range(0..4) };
        let v = if f.is_map() {
            let Kind::Message(entry) = f.kind() else { unreachable!("a map field's kind is its entry") };
            let (k, v) = (entry.map_entry_key_field().kind(), entry.map_entry_value_field().kind());
            Value::Map(
                (0..n.min(8)).map(|_| (map_key(rng, &k), random_value(rng, &v, depth))).collect::<HashMap<_, _>>(),
            )
        } else if f.is_list() {
            Value::List((0..n).map(|_| random_value(rng, &f.kind(), depth)).collect())
        } else {
            random_value(rng, &f.kind(), depth)
        };
        m.set_field(&f, v);
    }
    m
}

/// Byte-level damage to an encoded message: flips, cuts, inserts.
fn mutate(rng: &mut StdRng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..=3) {
        let at = if b.is_empty() { 0 } else { rng.random_range(0..b.len()) };
        match rng.random_range(0..3) {
            0 if !b.is_empty() => b[at] ^= 1 << rng.random_range(0..8),
            1 => b.truncate(at),
            _ => {
                let mut extra = vec![0u8; rng.random_range(1..8)];
                rng.fill_bytes(&mut extra);
                b.splice(at..at, extra);
            }
        }
    }
    b
}

fn body(rng: &mut StdRng, m: &MethodDescriptor) -> Vec<u8> {
    let bytes = random_message(rng, &m.input(), 0).encode_to_vec();
    if rng.random_bool(0.25) { mutate(rng, bytes) } else { bytes }
}

#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    /// Refused by the API with a `baton-error-code`.
    refused: usize,
    /// Refused by tonic before any handler ran (undecodable protobuf).
    undecodable: usize,
    /// Refused by authentication or a role check.
    denied: usize,
    slow: usize,
}

/// One call of `m` with fuzzed messages (several if it streams them in),
/// with `auth` as its `authorization` header. `None` if it was slow.
async fn call(
    c: &Cluster,
    node: u64,
    m: &MethodDescriptor,
    auth: Option<String>,
    rng: &mut StdRng,
) -> Option<Result<(), tonic::Status>> {
    let request = |body| {
        let mut r = tonic::Request::new(body);
        if let Some(v) = auth.as_deref().and_then(|a| a.parse().ok()) {
            r.metadata_mut().insert("authorization", v);
        }
        r
    };
    let path: tonic::codegen::http::uri::PathAndQuery =
        format!("/{}/{}", m.parent_service().full_name(), m.name()).parse().unwrap();
    let mut grpc = tonic::client::Grpc::new(c.channel(node).await);
    let work = async {
        grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        match (m.is_client_streaming(), m.is_server_streaming()) {
            (false, false) => grpc.unary(request(body(rng, m)), path, Raw).await.map(|_| ()),
            (false, true) => {
                let mut s = grpc.server_streaming(request(body(rng, m)), path, Raw).await?.into_inner();
                for _ in 0..3 {
                    if s.message().await?.is_none() {
                        break;
                    }
                }
                Ok(())
            }
            (true, _) => {
                let msgs: Vec<Vec<u8>> = (0..rng.random_range(1..4)).map(|_| body(rng, m)).collect();
                let mut s =
                    grpc.streaming(tonic::Request::new(futures::stream::iter(msgs)), path, Raw).await?.into_inner();
                for _ in 0..3 {
                    if s.message().await?.is_none() {
                        break;
                    }
                }
                Ok(())
            }
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, work).await.ok()
}

async fn still_serving(c: &Cluster, after: &str) {
    let t = Instant::now();
    let r = submit(c, spec("alive", 1, &format!("alive-{after}")), Duration::from_secs(15)).await;
    assert!(r.job_id > 0, "no submit after fuzzing {after}");
    if t.elapsed() > Duration::from_secs(2) {
        println!("after {after}: a submit took {:?}", t.elapsed());
    }
}

/// Send every method `cases` fuzzed messages, alternating between the
/// leader and a follower; `auth` picks each call's `authorization` header.
/// Panics on a crash, a handler failure or an internal error.
async fn fuzz_every_method(
    c: &mut Cluster,
    methods: &[MethodDescriptor],
    cases: usize,
    rng: &mut StdRng,
    auth: &dyn Fn(&mut StdRng) -> Option<String>,
) -> Tally {
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let follower = c.live().into_iter().find(|id| *id != leader).unwrap();
    let mut tally = Tally::default();
    for m in methods {
        for i in 0..cases {
            let node = if i % 2 == 0 { leader } else { follower };
            let header = auth(rng);
            match call(c, node, m, header, rng).await {
                None => tally.slow += 1,
                Some(Ok(())) => tally.ok += 1,
                Some(Err(s)) => {
                    let code = baton_client::error::status_code(&s);
                    assert_ne!(s.code(), tonic::Code::Unknown, "{}: a handler failed: {s:?}", m.full_name());
                    assert_ne!(
                        code,
                        Some("INTERNAL"),
                        "{}: fuzzed input is not an internal error: {s:?}",
                        m.full_name()
                    );
                    match code {
                        Some("UNAUTHENTICATED" | "PERMISSION_DENIED") => tally.denied += 1,
                        Some(_) => tally.refused += 1,
                        None => tally.undecodable += 1,
                    }
                }
            }
        }
        for id in c.live() {
            let exited = c.procs.get_mut(&id).unwrap().try_wait().unwrap();
            assert!(exited.is_none(), "node {id} exited after fuzzing {}:\n{}", m.full_name(), c.logs());
        }
    }
    tally
}

/// The run's seed and cases, printed with the command that replays it.
fn setup(test: &str) -> (StdRng, usize, Vec<MethodDescriptor>) {
    let seed: u64 = env_or("BATON_FUZZ_SEED", rand::random());
    let cases: usize = env_or("BATON_FUZZ_CASES", CASES_PER_METHOD_DEFAULT);
    println!("{test}: {cases} messages per method, seed {seed}");
    println!("replay: BATON_FUZZ_SEED={seed} BATON_FUZZ_CASES={cases} cargo test --workspace --test fuzz_rpc {test}");
    let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
    let methods: Vec<MethodDescriptor> = pool
        .services()
        .filter(|s| s.package_name() == "baton.v1")
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .filter(|m| !SKIPPED.contains(&m.full_name()))
        .collect();
    assert!(methods.len() > 40, "the descriptor set lists {} methods", methods.len());
    (StdRng::seed_from_u64(seed), cases, methods)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_survives_fuzzed_messages() {
    let (mut rng, cases, methods) = setup("every_rpc_survives_fuzzed_messages");
    let mut c = Cluster::start(3, Opts::default());
    c.wait_leader(Duration::from_secs(15)).await;
    // Something real for fuzzed ids to hit now and then: small job ids exist.
    for i in 0..3 {
        submit(&c, spec("ns", 2, &format!("seed-{i}")), Duration::from_secs(10)).await;
    }
    let tally = fuzz_every_method(&mut c, &methods, cases, &mut rng, &|_| None).await;
    println!("{} methods: {tally:?}", methods.len());
    still_serving(&c, "every method").await;
    assert!(tally.ok > 0 && tally.refused > 0, "{tally:?}");
}

/// Tokens the secured cluster knows: (token, grants).
const TOKENS: [(&str, &str); 3] = [("fuzz-admin", "admin:*"), ("fuzz-reader", "reader:ns"), ("fuzz-op", "operator:ns")];

/// An `authorization` header: a known token, or a malformed or unknown
/// credential of many shapes, or none.
fn random_credential(rng: &mut StdRng) -> Option<String> {
    let junk = |rng: &mut StdRng, n| -> String { (0..n).map(|_| char::from(rng.random_range(0x21u8..0x7f))).collect() };
    // Known tokens half of the time, so handlers run too.
    match rng.random_range(0..16) {
        0 => None,
        1 => Some(String::new()),
        2 => Some("Bearer".into()),
        3 => Some(format!("Basic {}", junk(rng, 12))),
        4 => {
            let n = rng.random_range(0..64);
            Some(format!("Bearer {}", junk(rng, n)))
        }
        5 => Some(format!("Bearer {}.{}.{}", junk(rng, 20), junk(rng, 40), junk(rng, 30))),
        6 => Some(format!("Bearer eyJhbGciOiJub25lIn0.{}.", junk(rng, 30))),
        // Around and past the longest credential read (16 KiB), within the
        // largest header block the API takes (64 KiB).
        7 => Some(format!("Bearer {}", "x".repeat(rng.random_range(1_000..40_000)))),
        _ => Some(format!("Bearer {}", TOKENS[rng.random_range(0..TOKENS.len())].0)),
    }
}

/// The same with `[auth]` on: fuzzed credentials beside fuzzed messages,
/// through the auth layer and every handler's namespace check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_survives_fuzzed_messages_and_credentials_with_auth_on() {
    let (mut rng, cases, methods) = setup("every_rpc_survives_fuzzed_messages_and_credentials_with_auth_on");
    let dir = tempfile::tempdir().unwrap();
    let mut toml = String::new();
    for (i, (token, grant)) in TOKENS.iter().enumerate() {
        let hash = baton_coordinator::auth::hash_token(token);
        toml += &format!("[[auth.tokens]]\nname = \"fuzz-{i}\"\nsha256 = {hash:?}\ngrants = [{grant:?}]\n");
    }
    let cfg = dir.path().join("auth.toml");
    std::fs::write(&cfg, toml).unwrap();
    let mut c = Cluster::start(3, Opts { args: vec!["--config".into(), cfg.display().to_string()], ..Opts::default() });
    c.wait_leader(Duration::from_secs(15)).await;
    let tally = fuzz_every_method(&mut c, &methods, cases, &mut rng, &random_credential).await;
    println!("{} methods: {tally:?}", methods.len());
    assert!(tally.denied > 0 && tally.ok > 0, "{tally:?}");
    let mut admin = ClientConfig::new(c.endpoints());
    admin.token = Some(TOKENS[0].0.into());
    let r = Client::new(admin).unwrap().submit(spec("alive", 1, "alive")).await;
    assert!(r.is_ok(), "no submit after fuzzing: {r:?}");
}
