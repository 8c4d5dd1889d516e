use std::collections::BTreeSet;
use std::io::Write;

use super::methods::{self, Object, Scope};
use super::*;
use crate::config::{AuthSettings, JwtSettings, StaticToken};
use crate::error::ApiError;

fn principal(grants: &[&str]) -> Principal {
    Principal { name: "p".into(), grants: grants.iter().map(|g| Grant::parse(g).unwrap()).collect() }
}

#[test]
fn role_table() {
    use Role::*;
    let expect = [
        (Admin, vec![Admin, Operator, Submitter, Worker, Reader]),
        (Operator, vec![Operator, Submitter, Reader]),
        (Submitter, vec![Submitter, Reader]),
        (Worker, vec![Worker, Reader]),
        (Reader, vec![Reader]),
    ];
    for (held, includes) in expect {
        for need in Role::ALL {
            assert_eq!(held.includes(need), includes.contains(&need), "{held} includes {need}?");
        }
    }
}

#[test]
fn grants_parse_and_scope_to_namespaces() {
    assert_eq!(
        Grant::parse("operator:ns1").unwrap(),
        Grant { role: Role::Operator, namespaces: Namespaces::One("ns1".into()) }
    );
    assert_eq!(Grant::parse("admin:*").unwrap().namespaces, Namespaces::All);
    for bad in ["operator", "boss:ns", "reader:", ":ns", "reader:a\u{7}b"] {
        assert!(Grant::parse(bad).is_err(), "{bad}");
    }
    let p = principal(&["operator:a", "reader:b", "submitter:*"]);
    assert!(p.allows(Role::Operator, "a") && !p.allows(Role::Operator, "b"));
    assert!(p.allows(Role::Reader, "b") && p.allows(Role::Submitter, "zzz") && p.allows(Role::Reader, "zzz"));
    assert!(!p.allows_all(Role::Operator) && p.allows_all(Role::Submitter));
    assert!(p.sees("b") && p.sees("zzz"));
    assert!(!principal(&["reader:a"]).sees("b"));
}

#[test]
fn worker_namespaces_follow_the_worker_grants() {
    assert_eq!(principal(&["worker:*"]).worker_namespaces(), None);
    assert_eq!(principal(&["admin:*"]).worker_namespaces(), None);
    let want: BTreeSet<String> = ["a".to_string(), "c".to_string()].into();
    assert_eq!(principal(&["worker:a", "admin:c", "operator:b", "reader:*"]).worker_namespaces(), Some(want));
    assert_eq!(principal(&["reader:*"]).worker_namespaces(), Some(BTreeSet::new()));
}

#[test]
fn token_hashing_matches_sha256() {
    // sha256("abc"), the FIPS 180-2 example.
    assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert!(parse_digest(&hash_token("x")).is_some());
    assert!(parse_digest("abc").is_none() && parse_digest(&"g".repeat(64)).is_none());
    let t = new_token();
    assert!(t.starts_with("bt_") && t.len() == 3 + 2 * NEW_TOKEN_BYTES);
    assert_ne!(new_token(), t);
}

fn static_auth() -> Authenticator {
    Authenticator::load(&AuthSettings {
        certs: vec![],
        tokens: vec![
            StaticToken { name: "ci".into(), sha256: hash_token("secret-1"), grants: vec!["operator:a".into()] },
            StaticToken {
                name: "ro".into(),
                sha256: hash_token("secret-2").to_uppercase(),
                grants: vec!["reader:*".into()],
            },
        ],
        jwt: None,
    })
    .unwrap()
}

#[test]
fn static_tokens_are_found_by_their_hash() {
    let a = static_auth();
    let p = a.authenticate(Some(b"Bearer secret-1")).unwrap();
    assert_eq!(p.name, "ci");
    assert!(p.allows(Role::Operator, "a"));
    assert_eq!(a.authenticate(Some(b"bearer  secret-2 ")).unwrap().name, "ro");
    assert_eq!(a.authenticate(None), Err(AuthError::Missing));
    assert_eq!(a.authenticate(Some(b"Bearer nope")), Err(AuthError::UnknownToken));
    assert!(matches!(a.authenticate(Some(b"Basic c2VjcmV0")), Err(AuthError::Malformed(_))));
    assert!(matches!(a.authenticate(Some(b"Bearer ")), Err(AuthError::Malformed(_))));
    let long = format!("Bearer {}", "x".repeat(MAX_CREDENTIAL_BYTES));
    assert!(matches!(a.authenticate(Some(long.as_bytes())), Err(AuthError::Malformed(_))));
}

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hs256";

fn jwt_auth(dir: &tempfile::TempDir) -> Authenticator {
    let path = dir.path().join("secret");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(SECRET).unwrap();
    f.write_all(b"\n").unwrap();
    Authenticator::load(&AuthSettings {
        certs: vec![],
        tokens: vec![],
        jwt: Some(JwtSettings {
            hs256_secret_file: Some(path),
            issuer: "https://issuer.test".into(),
            audience: "baton".into(),
            ..JwtSettings::default()
        }),
    })
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn sign(claims: serde_json::Value, secret: &[u8]) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).unwrap()
}

fn claims(exp: u64) -> serde_json::Value {
    serde_json::json!({
        "sub": "alice", "iss": "https://issuer.test", "aud": "baton", "exp": exp,
        "baton_grants": ["worker:ns1", "reader:*"],
    })
}

fn bearer(t: &str) -> Vec<u8> {
    format!("Bearer {t}").into_bytes()
}

#[test]
fn jwt_verification() {
    let dir = tempfile::tempdir().unwrap();
    let a = jwt_auth(&dir);
    let p = a.authenticate(Some(&bearer(&sign(claims(now() + 600), SECRET)))).unwrap();
    assert_eq!(p.name, "alice");
    assert_eq!(p.worker_namespaces(), Some(["ns1".to_string()].into()));
    // Wrong key, expired (beyond the leeway), wrong issuer or audience, no grants claim.
    let wrong = a.authenticate(Some(&bearer(&sign(claims(now() + 600), b"another-secret-another-secret-xx"))));
    assert!(matches!(wrong, Err(AuthError::InvalidJwt(_))), "{wrong:?}");
    let expired = a.authenticate(Some(&bearer(&sign(claims(now() - 3600), SECRET))));
    assert_eq!(expired, Err(AuthError::Expired));
    // Within the leeway an expired token still passes (clock skew).
    assert!(a.authenticate(Some(&bearer(&sign(claims(now() - 5), SECRET)))).is_ok());
    for (k, v) in [("iss", "https://evil.test"), ("aud", "other")] {
        let mut c = claims(now() + 600);
        c[k] = serde_json::json!(v);
        assert!(matches!(a.authenticate(Some(&bearer(&sign(c, SECRET)))), Err(AuthError::InvalidJwt(_))), "{k}");
    }
    let mut c = claims(now() + 600);
    c.as_object_mut().unwrap().remove("baton_grants");
    assert!(matches!(a.authenticate(Some(&bearer(&sign(c, SECRET)))), Err(AuthError::InvalidJwt(_))));
    let mut c = claims(now() + 600);
    c["baton_grants"] = serde_json::json!(["root:*"]);
    assert!(matches!(a.authenticate(Some(&bearer(&sign(c, SECRET)))), Err(AuthError::InvalidJwt(_))));
    // An algorithm that is not configured is refused, whatever the token says.
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
    let hs512 =
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512), &claims(now() + 600), &key)
            .unwrap();
    assert!(matches!(a.authenticate(Some(&bearer(&hs512))), Err(AuthError::InvalidJwt(_))));
}

/// An ES256 key pair: the PKCS#8 document to sign with and the public key as PEM.
fn es256_pair() -> (Vec<u8>, String) {
    use base64::Engine;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    // SubjectPublicKeyInfo of a P-256 key: fixed algorithm header, then the point.
    let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    spki.extend_from_slice(pair.public_key().as_ref());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&spki);
    (pkcs8.as_ref().to_vec(), format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n"))
}

#[test]
fn es256_jwts_are_verified_with_the_configured_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let (signing, pem) = es256_pair();
    let (other_signing, _) = es256_pair();
    let path = dir.path().join("issuer.pem");
    std::fs::write(&path, pem).unwrap();
    let a = Authenticator::load(&AuthSettings {
        certs: vec![],
        tokens: vec![],
        jwt: Some(JwtSettings {
            es256_public_key_file: Some(path),
            issuer: "https://issuer.test".into(),
            audience: "baton".into(),
            ..JwtSettings::default()
        }),
    })
    .unwrap();
    let es = |key: &[u8], c: serde_json::Value| {
        let k = jsonwebtoken::EncodingKey::from_ec_der(key);
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), &c, &k).unwrap()
    };
    assert_eq!(a.authenticate(Some(&bearer(&es(&signing, claims(now() + 600))))).unwrap().name, "alice");
    let forged = a.authenticate(Some(&bearer(&es(&other_signing, claims(now() + 600)))));
    assert!(matches!(forged, Err(AuthError::InvalidJwt(_))), "{forged:?}");
    assert_eq!(a.authenticate(Some(&bearer(&es(&signing, claims(now() - 3600))))), Err(AuthError::Expired));
    // An HS256 token cannot pass as ES256 (no HS256 key is configured).
    let hs = a.authenticate(Some(&bearer(&sign(claims(now() + 600), SECRET))));
    assert!(matches!(hs, Err(AuthError::InvalidJwt(_))), "{hs:?}");
}

#[test]
fn a_short_hs256_secret_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    std::fs::write(&path, "short").unwrap();
    let settings = AuthSettings {
        certs: vec![],
        tokens: vec![],
        jwt: Some(JwtSettings {
            hs256_secret_file: Some(path),
            issuer: "i".into(),
            audience: "a".into(),
            ..Default::default()
        }),
    };
    assert!(Authenticator::load(&settings).is_err());
}

/// Every method of every `baton.v1` service in the descriptor set, as a gRPC path.
fn proto_methods() -> Vec<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(baton_client::proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for f in set.file {
        let package = f.package().to_string();
        for s in &f.service {
            for m in &s.method {
                out.push(format!("/{package}.{}/{}", s.name(), m.name()));
            }
        }
    }
    out
}

#[test]
fn every_api_method_is_mapped_or_open() {
    let methods_in_proto = proto_methods();
    assert!(methods_in_proto.len() >= 48, "{methods_in_proto:?}");
    for path in &methods_in_proto {
        assert!(
            methods::rule(path).is_some() || methods::is_open(path),
            "{path} is in the .proto but not in auth/methods.rs: decide its role and scope"
        );
    }
    // And nothing mapped is stale.
    for (path, rule) in methods::METHODS {
        assert!(methods_in_proto.contains(&path.to_string()), "{path} is mapped but not in the .proto");
        assert!(path.ends_with(&format!("/{}", rule.action)));
    }
    assert!(methods::rule("/baton.v1.JobService/NoSuchMethod").is_none());
    // Health and reflection stay open.
    assert!(methods::is_open("/grpc.health.v1.Health/Check"));
    assert!(methods::is_open("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"));
}

#[test]
fn the_method_map_says_what_the_brief_says() {
    let rule = |m: &str| methods::METHODS.iter().find(|(p, _)| p.ends_with(&format!("/{m}"))).unwrap().1;
    for m in ["AddLearner", "ChangeMembership", "RemoveNode", "TriggerSnapshot", "Backup"] {
        assert_eq!((rule(m).role, rule(m).scope), (Role::Admin, Scope::Cluster), "{m}");
    }
    for m in ["CancelJob", "RetryJob", "PauseJob", "ResumeJob", "DeleteJob", "SetPriority", "SetNamespaceRetention"] {
        assert_eq!(rule(m).role, Role::Operator, "{m}");
        assert!(rule(m).audited());
    }
    for m in ["SubmitJob", "SubmitWorkflow", "PublishEvent", "CreateSchedule", "RunScheduleNow"] {
        assert_eq!(rule(m).role, Role::Submitter, "{m}");
        assert!(!rule(m).audited());
    }
    for m in ["GetJob", "ListJobs", "WatchJob", "GetResults", "GetTaskLogs", "GetWorkflow"] {
        assert_eq!(rule(m).role, Role::Reader, "{m}");
    }
    assert_eq!(rule("Session").role, Role::Worker);
}

#[test]
fn request_objects_fit_their_scopes() {
    use baton_client::proto;
    use methods::Target;
    fn check(m: &str, object: Object<'_>) {
        let rule = methods::METHODS.iter().find(|(p, _)| p.ends_with(&format!("/{m}"))).unwrap().1;
        assert!(object.fits(rule.scope), "{m}: {object:?} vs {:?}", rule.scope);
    }
    check("CancelJob", proto::CancelJobRequest { job_id: 7, reason: String::new() }.object());
    check("ListJobs", proto::ListJobsRequest::default().object());
    check("SubmitJobs", proto::SubmitJobsRequest::default().object());
    check("SubmitJob", proto::SubmitJobRequest::default().object());
    check("GetSchedule", proto::GetScheduleRequest::default().object());
    check("GetSchedule", proto::GetScheduleRequest { schedule_id: 3, ..Default::default() }.object());
    check("Backup", proto::BackupRequest::default().object());
    check("DeleteTrigger", proto::DeleteTriggerRequest { trigger_id: 1 }.object());
    check("ApproveStep", proto::ResolveStepRequest::default().object());
    check("PublishEvent", proto::PublishEventRequest::default().object());
}

#[test]
fn decisions_name_the_missing_role_and_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, sm) = baton_raft_store::open_store(dir.path()).unwrap();
    let reader = sm.reader();
    let p = principal(&["operator:a", "reader:b"]);
    let denied = |r: Result<(), ApiError>| match r {
        Err(ApiError::PermissionDenied(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(check::decide(&p, Role::Operator, &Object::Namespace("a"), &reader).is_ok());
    assert_eq!(
        denied(check::decide(&p, Role::Operator, &Object::Namespace("b"), &reader)),
        "needs role operator in namespace b"
    );
    assert_eq!(denied(check::decide(&p, Role::Admin, &Object::Cluster, &reader)), "needs role admin in namespace *");
    assert!(denied(check::decide(&p, Role::Reader, &Object::Filter(""), &reader)).contains("namespace *"));
    assert!(check::decide(&p, Role::Reader, &Object::Filter("b"), &reader).is_ok());
    assert_eq!(
        denied(check::decide(&p, Role::Submitter, &Object::Namespaces(vec!["a", "c"]), &reader)),
        "needs role submitter in namespace c"
    );
    // A missing object is NOT_FOUND, as an object in a namespace the caller cannot see is.
    assert!(matches!(check::decide(&p, Role::Reader, &Object::Job(42), &reader), Err(ApiError::NotFound(_))));
    assert!(matches!(check::decide(&p, Role::Reader, &Object::Schedule(42), &reader), Err(ApiError::NotFound(_))));
}
