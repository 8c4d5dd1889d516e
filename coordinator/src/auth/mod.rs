//! Authentication and roles on the public API (docs/security.md).
//!
//! - [`Authenticator`] turns a bearer credential into a [`Principal`]: a
//!   static token (only its SHA-256 is configured; digests are compared in
//!   constant time) or a JWT (`jsonwebtoken`: signature, issuer, audience,
//!   `exp` with a small leeway). Pure apart from reading key files at load.
//! - [`Role`] and [`Grant`]: roles granted per namespace or `*`, and the one
//!   table of which role includes which ([`Role::includes`]).
//! - `methods.rs`: every API method → (role, how its namespace is found), in
//!   one table; `layer.rs`: the tower layer in front of every service that
//!   authenticates and decides before any handler runs; `check.rs`: the
//!   per-handler namespace check.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthSettings, JwtSettings};

pub mod check;
pub mod layer;
pub mod methods;

pub use layer::AuthLayer;

/// Metadata key of the credential (`authorization: Bearer <token>`), which
/// forwarded calls carry on to the leader.
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// Longest credential read from a request (16 KiB): a JWT with a long grant
/// list fits; anything longer is refused before hashing or parsing.
pub const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;
/// Most grants one principal may hold: each call scans them.
pub const MAX_GRANTS: usize = 256;
/// Bytes of a random token made by `baton auth new-token` (256 bits).
pub const NEW_TOKEN_BYTES: usize = 32;

/// A role. The hierarchy is [`Role::includes`]; docs/security.md has the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Get, list and watch jobs, workflows, schedules, results and logs.
    Reader,
    /// Submit jobs and workflows, publish events, create and run schedules; and read.
    Submitter,
    /// Cancel, retry, pause/resume, delete, priority, namespace settings,
    /// schedule and trigger management, gate decisions; and submit and read.
    Operator,
    /// Membership, snapshots, backups; and everything below.
    Admin,
    /// Open a worker session that receives the namespace's tasks; and read
    /// (a worker reads its inputs: predecessors' results, logs).
    Worker,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Reader, Role::Submitter, Role::Operator, Role::Admin, Role::Worker];

    /// Whether holding `self` grants `need`: the one hierarchy table.
    ///
    /// | held      | includes                                   |
    /// |-----------|--------------------------------------------|
    /// | admin     | admin, operator, submitter, worker, reader |
    /// | operator  | operator, submitter, reader                |
    /// | submitter | submitter, reader                          |
    /// | worker    | worker, reader                             |
    /// | reader    | reader                                     |
    pub fn includes(self, need: Role) -> bool {
        use Role::*;
        match self {
            Admin => true,
            Operator => matches!(need, Operator | Submitter | Reader),
            Submitter => matches!(need, Submitter | Reader),
            Worker => matches!(need, Worker | Reader),
            Reader => need == Reader,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Submitter => "submitter",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Worker => "worker",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which namespaces a grant covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Namespaces {
    All,
    One(String),
}

/// `role:namespace` or `role:*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub role: Role,
    pub namespaces: Namespaces,
}

impl Grant {
    pub fn parse(s: &str) -> Result<Grant, String> {
        let (role, ns) = s.split_once(':').ok_or_else(|| format!("grant {s:?} is not role:namespace"))?;
        let role = Role::parse(role.trim()).ok_or_else(|| {
            format!("grant {s:?}: unknown role {role:?} (admin, operator, submitter, worker, reader)")
        })?;
        let ns = ns.trim();
        let namespaces = match ns {
            "*" => Namespaces::All,
            "" => return Err(format!("grant {s:?} names no namespace (use * for all)")),
            n if n.len() > baton_raft_store::limits::MAX_NAME_BYTES || n.chars().any(char::is_control) => {
                return Err(format!("grant {s:?}: not a namespace name"));
            }
            n => Namespaces::One(n.to_string()),
        };
        Ok(Grant { role, namespaces })
    }

    fn covers(&self, namespace: &str) -> bool {
        match &self.namespaces {
            Namespaces::All => true,
            Namespaces::One(n) => n == namespace,
        }
    }
}

/// Who is calling, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The static token's name or the JWT's subject.
    pub name: String,
    pub grants: Vec<Grant>,
}

impl Principal {
    /// Holds `need` in `namespace`.
    pub fn allows(&self, need: Role, namespace: &str) -> bool {
        self.grants.iter().any(|g| g.role.includes(need) && g.covers(namespace))
    }

    /// Holds `need` in every namespace (`role:*`).
    pub fn allows_all(&self, need: Role) -> bool {
        self.grants.iter().any(|g| g.role.includes(need) && g.namespaces == Namespaces::All)
    }

    /// Holds `need` in at least one namespace: the layer's check before the
    /// handler narrows it down to the request's namespace.
    pub fn allows_some(&self, need: Role) -> bool {
        self.grants.iter().any(|g| g.role.includes(need))
    }

    /// Holds any role in `namespace`, so may learn what exists there.
    pub fn sees(&self, namespace: &str) -> bool {
        self.grants.iter().any(|g| g.covers(namespace))
    }

    /// The namespaces whose tasks this principal's worker sessions may get:
    /// `None` for all (`worker:*` or `admin:*`), else the named ones.
    pub fn worker_namespaces(&self) -> Option<BTreeSet<String>> {
        if self.allows_all(Role::Worker) {
            return None;
        }
        Some(
            self.grants
                .iter()
                .filter(|g| g.role.includes(Role::Worker))
                .filter_map(|g| match &g.namespaces {
                    Namespaces::One(n) => Some(n.clone()),
                    Namespaces::All => None,
                })
                .collect(),
        )
    }
}

/// Why a credential was refused. The message goes to the client, so it
/// never says which static token names exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credential: send `authorization: Bearer <token>`")]
    Missing,
    #[error("malformed authorization header: {0}")]
    Malformed(&'static str),
    #[error("unknown token")]
    UnknownToken,
    #[error("token expired")]
    Expired,
    #[error("the client certificate names no principal in [[auth.certs]]")]
    UnknownCert,
    #[error("invalid token: {0}")]
    InvalidJwt(String),
}

/// Why the `[auth]` files could not be loaded at start.
#[derive(Debug, thiserror::Error)]
pub enum AuthLoadError {
    #[error("cannot read {what} {path}: {source}")]
    Read { what: &'static str, path: String, source: std::io::Error },
    #[error("invalid {what} {path}: {reason}")]
    Key { what: &'static str, path: String, reason: String },
}

/// A digest configured for a static token: 64 lowercase or uppercase hex characters.
pub fn parse_digest(hex_digest: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest.trim(), &mut out).ok()?;
    Some(out)
}

/// The SHA-256 of a token, as `[[auth.tokens]] sha256` holds it.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token (`bt_` and 64 hex characters), for `baton auth new-token`.
pub fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; NEW_TOKEN_BYTES] = rand::rng().random();
    format!("bt_{}", hex::encode(bytes))
}

struct TokenEntry {
    digest: [u8; 32],
    principal: Arc<Principal>,
}

/// One configured JWT verification key.
struct JwtKey {
    alg: jsonwebtoken::Algorithm,
    key: jsonwebtoken::DecodingKey,
}

struct Jwt {
    keys: Vec<JwtKey>,
    issuer: String,
    audience: String,
    grants_claim: String,
    leeway_secs: u64,
}

/// Verifies credentials against the `[auth]` settings. Built once at start.
pub struct Authenticator {
    tokens: Vec<TokenEntry>,
    jwt: Option<Jwt>,
    /// Client certificates' principals, by SAN DNS name.
    certs: Vec<(String, Arc<Principal>)>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.tokens.len())
            .field("jwt", &self.jwt.as_ref().map(|j| j.keys.iter().map(|k| k.alg).collect::<Vec<_>>()))
            .finish()
    }
}

fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, AuthLoadError> {
    std::fs::read(path).map_err(|source| AuthLoadError::Read { what, path: path.display().to_string(), source })
}

fn load_jwt(j: &JwtSettings) -> Result<Jwt, AuthLoadError> {
    use jsonwebtoken::{Algorithm, DecodingKey};
    let mut keys = Vec::new();
    if let Some(p) = &j.hs256_secret_file {
        let mut secret = read("hs256 secret", p)?;
        while secret.last().is_some_and(|b| b.is_ascii_whitespace()) {
            secret.pop();
        }
        if secret.len() < 32 {
            return Err(AuthLoadError::Key {
                what: "hs256 secret",
                path: p.display().to_string(),
                reason: "must be at least 32 bytes".into(),
            });
        }
        keys.push(JwtKey { alg: Algorithm::HS256, key: DecodingKey::from_secret(&secret) });
    }
    let pem = |what, p: &std::path::Path, f: fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>| {
        let bytes = read(what, p)?;
        f(&bytes).map_err(|e| AuthLoadError::Key { what, path: p.display().to_string(), reason: e.to_string() })
    };
    if let Some(p) = &j.rs256_public_key_file {
        keys.push(JwtKey { alg: Algorithm::RS256, key: pem("rs256 public key", p, DecodingKey::from_rsa_pem)? });
    }
    if let Some(p) = &j.es256_public_key_file {
        keys.push(JwtKey { alg: Algorithm::ES256, key: pem("es256 public key", p, DecodingKey::from_ec_pem)? });
    }
    Ok(Jwt {
        keys,
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
        grants_claim: j.grants_claim.clone(),
        leeway_secs: j.leeway_secs,
    })
}

impl Authenticator {
    /// Build from validated settings, reading the key files.
    pub fn load(a: &AuthSettings) -> Result<Authenticator, AuthLoadError> {
        let tokens = a
            .tokens
            .iter()
            .filter_map(|t| {
                // Validated by Config::validate; an entry that is not is never matched.
                let digest = parse_digest(&t.sha256)?;
                let grants = t.grants.iter().filter_map(|g| Grant::parse(g).ok()).collect();
                Some(TokenEntry { digest, principal: Arc::new(Principal { name: t.name.clone(), grants }) })
            })
            .collect();
        let jwt = a.jwt.as_ref().map(load_jwt).transpose()?;
        let certs = a
            .certs
            .iter()
            .map(|c| {
                let grants = c.grants.iter().filter_map(|g| Grant::parse(g).ok()).collect();
                (c.dns_name.clone(), Arc::new(Principal { name: c.name.clone(), grants }))
            })
            .collect();
        Ok(Authenticator { tokens, jwt, certs })
    }

    /// The caller's principal: from its `authorization` header if it sent
    /// one (a token wins over a certificate), else from the client
    /// certificate the TLS handshake verified, if any.
    pub fn authenticate_call(
        &self,
        header: Option<&[u8]>,
        cert: Option<&rustls::pki_types::CertificateDer<'_>>,
    ) -> Result<Arc<Principal>, AuthError> {
        match (header, cert) {
            (None, Some(cert)) => self.certificate(cert),
            _ => self.authenticate(header),
        }
    }

    /// The principal of a verified client certificate: the first
    /// `[[auth.certs]]` entry whose DNS name the certificate carries.
    fn certificate(&self, cert: &rustls::pki_types::CertificateDer<'_>) -> Result<Arc<Principal>, AuthError> {
        self.certs
            .iter()
            .find(|(name, _)| crate::tls::verify::names_one_of(cert, std::slice::from_ref(name)))
            .map(|(_, p)| p.clone())
            .ok_or(AuthError::UnknownCert)
    }

    /// The principal behind an `authorization` header value.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Arc<Principal>, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        if header.len() > MAX_CREDENTIAL_BYTES {
            return Err(AuthError::Malformed("credential too long"));
        }
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed("not UTF-8"))?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Malformed("expected `Bearer <token>`"))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed("expected the Bearer scheme"));
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Malformed("empty token"));
        }
        // A JWT has three dot-separated parts; a static token made by
        // `new-token` has none.
        if let Some(jwt) = &self.jwt
            && token.split('.').count() == 3
        {
            return jwt.verify(token).map(Arc::new);
        }
        self.static_token(token)
    }

    fn static_token(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, in constant time, so timing tells neither
        // how much of a digest matched nor which entry did.
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.digest.ct_eq(&digest)) {
                found = Some(t.principal.clone());
            }
        }
        found.ok_or(AuthError::UnknownToken)
    }
}

impl Jwt {
    fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::InvalidJwt(e.to_string()))?;
        // The algorithm comes from the configuration, never from the token
        // alone: a token may only pick among the keys configured.
        let key = self
            .keys
            .iter()
            .find(|k| k.alg == header.alg)
            .ok_or_else(|| AuthError::InvalidJwt(format!("algorithm {:?} is not accepted", header.alg)))?;
        let mut v = jsonwebtoken::Validation::new(key.alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = self.leeway_secs;
        v.validate_nbf = true;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &v).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::InvalidJwt(e.to_string()),
        })?;
        let claims = data.claims;
        let name = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::InvalidJwt("no subject".into()))?
            .to_string();
        let grants = match claims.get(&self.grants_claim) {
            Some(serde_json::Value::Array(a)) if a.len() <= MAX_GRANTS => a
                .iter()
                .map(|g| g.as_str().ok_or_else(|| "a grant is not a string".to_string()).and_then(Grant::parse))
                .collect::<Result<Vec<_>, _>>()
                .map_err(AuthError::InvalidJwt)?,
            Some(serde_json::Value::Array(_)) => {
                return Err(AuthError::InvalidJwt(format!("more than {MAX_GRANTS} grants")));
            }
            _ => return Err(AuthError::InvalidJwt(format!("claim {:?} is not a list of grants", self.grants_claim))),
        };
        Ok(Principal { name, grants })
    }
}

#[cfg(test)]
mod tests;
