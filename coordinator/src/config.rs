//! `baton serve` configuration: one serde struct, read from a TOML file, then
//! `BATON_*` environment variables, then command-line flags (each overriding
//! the one before), and checked by [`Config::validate`] before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use baton_raft_store::{NodeId, NodeInfo};

/// Default lease: a worker with no acknowledged heartbeat for this long is
/// declared dead and its tasks are reassigned.
pub const WORKER_TTL_MS_DEFAULT: u64 = 2_000;
/// Default worker heartbeat period; a third of the TTL survives two lost beats.
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 600;
/// Default period of the failure detector's deadline check.
pub const CHECK_INTERVAL_MS_DEFAULT: u64 = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's Raft id; unique in the cluster, never reused.
    pub node_id: NodeId,
    /// Where the internal Raft service listens.
    pub raft_listen: SocketAddr,
    /// host:port other nodes use to reach the Raft service (default: raft_listen).
    pub raft_advertise: Option<String>,
    /// Where the public gRPC API listens.
    pub api_listen: SocketAddr,
    /// host:port clients are pointed at in leader hints (default: api_listen).
    pub api_advertise: Option<String>,
    /// Where /metrics, /healthz and /readyz are served.
    pub http_listen: SocketAddr,
    /// RocksDB data and snapshots.
    pub data_dir: PathBuf,
    /// Members of a brand-new cluster, as `id=raft_host:port/api_host:port`.
    /// Only the lowest id initializes, once, and only after every other
    /// member answered that it belongs to no cluster yet; a node with Raft
    /// state ignores this. Empty for a node that will join an existing
    /// cluster as a learner.
    pub initial_members: Vec<String>,
    /// Forward client calls that need the leader; when false, followers answer
    /// UNAVAILABLE with the leader hint instead.
    pub forward_to_leader: bool,
    /// `text` or `json`.
    pub log_format: String,
    /// On SIGTERM, remove this node from the cluster membership before stopping.
    pub leave_on_shutdown: bool,
    /// `baton serve --init`: create a new cluster now, from this node and
    /// `initial_members`; refused on an initialized data dir, or when a
    /// member already belongs to a cluster. A flag only: a setting that
    /// stayed on would refuse every restart.
    #[serde(skip)]
    pub init: bool,
    pub raft: RaftTimings,
    pub workers: WorkerSettings,
    pub limits: Limits,
    /// Authentication and roles on the public API (docs/security.md). Absent:
    /// the API is open to anyone who reaches it, and the node says so at start.
    pub auth: Option<AuthSettings>,
    /// TLS on the API and Raft ports (`[tls]`). Absent: both ports are
    /// plaintext, and the node logs a warning saying so.
    pub tls: Option<TlsConfig>,
}

/// Longest clock skew tolerated on a JWT's `exp` and `nbf` by default (30 s):
/// issuers and nodes run on different machines; a token is short-lived anyway.
pub const JWT_LEEWAY_SECS_DEFAULT: u64 = 30;
/// Largest leeway accepted: beyond 5 minutes an expired token would stay good
/// long enough to matter.
pub const JWT_LEEWAY_SECS_MAX: u64 = 300;

/// `[auth]`: who may call the API. Static tokens and JWTs both give a
/// principal with grants `role:namespace` (`*` for every namespace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// `[[auth.tokens]]`: static bearer tokens, stored as their SHA-256 only
    /// (`baton auth new-token` prints a token and its hash).
    pub tokens: Vec<StaticToken>,
    /// `[auth.jwt]`: bearer JWTs signed by an issuer this node trusts.
    pub jwt: Option<JwtSettings>,
    /// `[[auth.certs]]`: client certificates that stand in for a token on
    /// the API port (`[tls] client_auth` optional or required), by a SAN
    /// DNS name the certificate carries.
    pub certs: Vec<CertPrincipal>,
}

/// A client certificate's principal: any certificate that verified against
/// the API port's client CA and carries `dns_name` as a SAN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CertPrincipal {
    /// The principal's name, as audit events show it.
    pub name: String,
    /// The SAN DNS name that identifies the certificate.
    pub dns_name: String,
    /// `role:namespace` grants, as for a token.
    pub grants: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StaticToken {
    /// The principal's name, as audit events show it.
    pub name: String,
    /// Lowercase hex SHA-256 of the token (64 characters).
    pub sha256: String,
    /// `role:namespace` grants, e.g. `operator:ns1`, `submitter:*`.
    pub grants: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSettings {
    /// File holding the HS256 shared secret (its bytes, trailing newline dropped).
    pub hs256_secret_file: Option<PathBuf>,
    /// PEM public key for RS256 tokens.
    pub rs256_public_key_file: Option<PathBuf>,
    /// PEM public key for ES256 tokens.
    pub es256_public_key_file: Option<PathBuf>,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Claim holding the grants, a list of `role:namespace` strings.
    pub grants_claim: String,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds (see [`JWT_LEEWAY_SECS_DEFAULT`]).
    pub leeway_secs: u64,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            hs256_secret_file: None,
            rs256_public_key_file: None,
            es256_public_key_file: None,
            issuer: String::new(),
            audience: String::new(),
            grants_claim: "baton_grants".into(),
            leeway_secs: JWT_LEEWAY_SECS_DEFAULT,
        }
    }
}

/// Who must present a client certificate on the API port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates are asked for.
    #[default]
    None,
    /// A client may present one; if it does, it must verify.
    Optional,
    /// Every API connection must present a verifying certificate.
    Required,
}

/// `[tls]`: certificates for both ports (see docs/deploy.md, "TLS").
/// The files are re-read on SIGHUP and when they change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM bundle of the cluster CA: peers' certificates must chain to it
    /// (the Raft port requires one), and this node trusts it when it calls
    /// a peer's Raft or API port.
    pub ca: PathBuf,
    /// This node's certificate chain (PEM): the server certificate of both
    /// ports and the client certificate shown to peers.
    pub cert: PathBuf,
    /// The private key of `cert` (PEM, PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle for client certificates on the API port (default: `ca`).
    pub client_ca: Option<PathBuf>,
    /// `none`, `optional` or `required`: client certificates on the API port.
    pub client_auth: ClientAuth,
    /// When not empty, the Raft port accepts only certificates with one of
    /// these SAN DNS names (besides chaining to the cluster CA).
    pub peer_names: Vec<String>,
    /// Name to verify peers' certificates against instead of the host of
    /// their address (for addresses whose certificates name something else).
    pub server_name: Option<String>,
}

/// Log bytes appended between snapshots, by default (256 MiB): a node's
/// log then holds about this much plus `keep_logs_after_snapshot` entries.
pub const SNAPSHOT_AFTER_LOG_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftTimings {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Deadline of one append/vote RPC.
    pub rpc_timeout_ms: u64,
    /// Build a snapshot after this many applied entries.
    pub snapshot_after_entries: u64,
    /// Build a snapshot once this many bytes of log have been appended since
    /// the last one (default [`SNAPSHOT_AFTER_LOG_BYTES_DEFAULT`]): batched
    /// entries can carry gigabytes before `snapshot_after_entries` is
    /// reached, and the log is purged only behind a snapshot.
    pub snapshot_after_log_bytes: u64,
    /// Log entries kept behind a snapshot, so a briefly lagging follower
    /// catches up by entries rather than by a whole snapshot.
    pub keep_logs_after_snapshot: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// The lease. See [`WORKER_TTL_MS_DEFAULT`].
    pub ttl_ms: u64,
    /// Told to workers at registration.
    pub heartbeat_interval_ms: u64,
    /// Failure-detector period: a dead worker's tasks are reassigned within
    /// `ttl_ms + check_interval_ms` (plus one commit) while a majority is up.
    pub check_interval_ms: u64,
    /// Most sessions expired per second. A coordinator blip that starved
    /// heartbeats must not become a reassignment storm.
    pub max_expirations_per_sec: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most commands grouped into one Raft entry.
    pub max_batch_commands: usize,
    /// Most bytes grouped into one Raft entry. At most
    /// `limits::MAX_ENTRY_BYTES`: an entry must replicate within one
    /// heartbeat interval, and one entry cannot be split.
    pub max_batch_bytes: usize,
    /// Proposals in flight at once; more wait, and grow the next batch.
    pub max_inflight_proposals: usize,
    /// Requests waiting for the batcher; beyond this callers get RESOURCE_EXHAUSTED.
    pub proposal_queue: usize,
    /// Largest gRPC message accepted by the public API (a batch submit of
    /// several jobs; each job alone is at most about 1 MiB).
    pub max_request_bytes: usize,
    /// Most jobs in one SubmitJobs call.
    pub max_jobs_per_batch_submit: usize,
    /// Assignments per scheduling round (one AssignTasks entry).
    pub max_assignments_per_round: usize,
    /// Pending tasks examined per scheduling round.
    pub max_scan_per_round: usize,
    /// Messages queued to one worker stream before it is considered stuck
    /// and disconnected (it reconnects and resyncs).
    pub session_queue: usize,
    /// Open worker session streams on this node.
    pub max_sessions: usize,
    /// Open WatchJob streams on this node.
    pub max_watches: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: 1,
            raft_listen: "127.0.0.1:7101".parse().expect("valid literal"),
            raft_advertise: None,
            api_listen: "127.0.0.1:7201".parse().expect("valid literal"),
            api_advertise: None,
            http_listen: "127.0.0.1:7301".parse().expect("valid literal"),
            data_dir: PathBuf::from("./baton-data"),
            initial_members: Vec::new(),
            forward_to_leader: true,
            log_format: "text".into(),
            leave_on_shutdown: false,
            init: false,
            raft: RaftTimings::default(),
            workers: WorkerSettings::default(),
            limits: Limits::default(),
            auth: None,
            tls: None,
        }
    }
}

impl Default for RaftTimings {
    fn default() -> Self {
        // openraft 0.9 lets a follower that saw a leader campaign only after
        // leader_lease (= election_timeout_max) + its election timeout (drawn
        // once per process from [min, max]). So a follower waits 200..240 ms
        // without heartbeats (about seven missed 30 ms beats) before it
        // campaigns, and a split vote costs one more 80..120 ms round.
        Self {
            heartbeat_interval_ms: 30,
            election_timeout_min_ms: 80,
            election_timeout_max_ms: 120,
            rpc_timeout_ms: 1_000,
            snapshot_after_entries: 100_000,
            snapshot_after_log_bytes: SNAPSHOT_AFTER_LOG_BYTES_DEFAULT,
            keep_logs_after_snapshot: 10_000,
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            ttl_ms: WORKER_TTL_MS_DEFAULT,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS_DEFAULT,
            check_interval_ms: CHECK_INTERVAL_MS_DEFAULT,
            max_expirations_per_sec: 200,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch_commands: 1024,
            max_batch_bytes: 1024 * 1024,
            max_inflight_proposals: 4,
            proposal_queue: 16_384,
            max_request_bytes: 4 * 1024 * 1024,
            max_jobs_per_batch_submit: 1000,
            max_assignments_per_round: 1000,
            max_scan_per_round: 50_000,
            session_queue: 4096,
            max_sessions: 10_000,
            max_watches: 10_000,
        }
    }
}

/// A member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub info: NodeInfo,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, reason: reason.into() }
}

impl Config {
    /// Defaults, then the TOML file (if any), then `BATON_*` env vars (nested
    /// keys with `__`, e.g. `BATON_WORKERS__TTL_MS`), then `overrides` (flags).
    pub fn load(file: Option<&std::path::Path>, overrides: impl Serialize) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(invalid("config", format!("file {} does not exist", f.display())));
            }
            fig = fig.merge(Toml::file(f));
        }
        let fig = fig
            // Only keys that are config fields: other BATON_* variables (the
            // CLI's BATON_ENDPOINTS, say) must not make the server refuse to start.
            .merge(Env::prefixed("BATON_").filter(|k| is_config_env_key(k.as_str())).split("__"))
            .merge(Serialized::defaults(overrides));
        let cfg: Config = fig.extract().map_err(Box::new)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn raft_addr(&self) -> String {
        self.raft_advertise.clone().unwrap_or_else(|| self.raft_listen.to_string())
    }

    pub fn api_addr(&self) -> String {
        self.api_advertise.clone().unwrap_or_else(|| self.api_listen.to_string())
    }

    /// What this node advertises, with its data dir's incarnation.
    pub fn node_info(&self, incarnation: baton_raft_store::Incarnation) -> NodeInfo {
        NodeInfo { raft_addr: self.raft_addr(), api_addr: self.api_addr(), incarnation }
    }

    /// Parsed `initial_members`.
    pub fn members(&self) -> Result<Vec<Member>, ConfigError> {
        let mut out: Vec<Member> = Vec::new();
        for m in &self.initial_members {
            let parsed = (|| {
                let (id, addrs) = m.split_once('=')?;
                let (raft, api) = addrs.split_once('/')?;
                let id: NodeId = id.trim().parse().ok()?;
                (id > 0 && valid_host_port(raft) && valid_host_port(api)).then(|| Member {
                    id,
                    // The incarnation is learned by asking the node (`Identify`).
                    info: NodeInfo { raft_addr: raft.trim().into(), api_addr: api.trim().into(), ..Default::default() },
                })
            })();
            let member = parsed.ok_or_else(|| {
                invalid("initial_members", format!("{m:?} is not `id=raft_host:port/api_host:port` with id > 0"))
            })?;
            if out.iter().any(|o| o.id == member.id) {
                return Err(invalid("initial_members", format!("node id {} listed twice", member.id)));
            }
            out.push(member);
        }
        Ok(out)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(invalid("node_id", "must be greater than 0"));
        }
        for (field, a) in [("raft_advertise", &self.raft_advertise), ("api_advertise", &self.api_advertise)] {
            if let Some(a) = a
                && !valid_host_port(a)
            {
                return Err(invalid(field, format!("{a:?} is not host:port")));
            }
        }
        let ports = [self.raft_listen, self.api_listen, self.http_listen];
        if ports[0] == ports[1] || ports[0] == ports[2] || ports[1] == ports[2] {
            return Err(invalid("raft_listen/api_listen/http_listen", "must be three different addresses"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(invalid("log_format", "must be `text` or `json`"));
        }
        let members = self.members()?;
        if !members.is_empty() && !members.iter().any(|m| m.id == self.node_id) {
            return Err(invalid("initial_members", format!("does not include this node ({})", self.node_id)));
        }
        let r = &self.raft;
        if r.heartbeat_interval_ms == 0 || r.heartbeat_interval_ms >= r.election_timeout_min_ms {
            return Err(invalid("raft.heartbeat_interval_ms", "must be > 0 and below election_timeout_min_ms"));
        }
        if r.election_timeout_min_ms >= r.election_timeout_max_ms {
            return Err(invalid("raft.election_timeout_min_ms", "must be below election_timeout_max_ms"));
        }
        if r.rpc_timeout_ms == 0 || r.snapshot_after_entries == 0 || r.snapshot_after_log_bytes == 0 {
            return Err(invalid(
                "raft",
                "rpc_timeout_ms, snapshot_after_entries and snapshot_after_log_bytes must be > 0",
            ));
        }
        let w = &self.workers;
        if w.heartbeat_interval_ms == 0 || w.heartbeat_interval_ms * 2 > w.ttl_ms {
            return Err(invalid("workers.heartbeat_interval_ms", "must be > 0 and at most half of workers.ttl_ms"));
        }
        if w.check_interval_ms == 0 || w.check_interval_ms > w.ttl_ms {
            return Err(invalid("workers.check_interval_ms", "must be > 0 and at most workers.ttl_ms"));
        }
        if w.ttl_ms > baton_raft_store::limits::MAX_DURATION_MS {
            return Err(invalid("workers.ttl_ms", "is longer than 7 days"));
        }
        if w.max_expirations_per_sec == 0 {
            return Err(invalid("workers.max_expirations_per_sec", "must be > 0"));
        }
        if let Some(tls) = &self.tls {
            crate::tls::Material::load(tls).map_err(|e| invalid("tls", e.to_string()))?;
        }
        let l = &self.limits;
        for (field, v) in [
            ("limits.max_batch_commands", l.max_batch_commands),
            ("limits.max_batch_bytes", l.max_batch_bytes),
            ("limits.max_inflight_proposals", l.max_inflight_proposals),
            ("limits.proposal_queue", l.proposal_queue),
            ("limits.max_request_bytes", l.max_request_bytes),
            ("limits.max_jobs_per_batch_submit", l.max_jobs_per_batch_submit),
            ("limits.max_assignments_per_round", l.max_assignments_per_round),
            ("limits.max_scan_per_round", l.max_scan_per_round),
            ("limits.session_queue", l.session_queue),
            ("limits.max_sessions", l.max_sessions),
            ("limits.max_watches", l.max_watches),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be > 0"));
            }
        }
        if l.max_batch_commands > baton_raft_store::limits::MAX_BATCH_COMMANDS {
            return Err(invalid(
                "limits.max_batch_commands",
                format!("must be at most {}", baton_raft_store::limits::MAX_BATCH_COMMANDS),
            ));
        }
        if l.max_batch_bytes > baton_raft_store::limits::MAX_ENTRY_BYTES {
            return Err(invalid(
                "limits.max_batch_bytes",
                format!(
                    "must be at most {} (one entry must replicate within a heartbeat interval)",
                    baton_raft_store::limits::MAX_ENTRY_BYTES
                ),
            ));
        }
        if l.max_assignments_per_round > baton_raft_store::limits::MAX_ITEMS_PER_COMMAND {
            return Err(invalid(
                "limits.max_assignments_per_round",
                format!("must be at most {}", baton_raft_store::limits::MAX_ITEMS_PER_COMMAND),
            ));
        }
        if let Some(a) = &self.auth {
            validate_auth(a)?;
        }
        Ok(())
    }
}

/// `[auth]` without reading its files (node start reads them, `auth::Authenticator::load`).
fn validate_auth(a: &AuthSettings) -> Result<(), ConfigError> {
    if a.tokens.is_empty() && a.jwt.is_none() && a.certs.is_empty() {
        return Err(invalid("auth", "names no tokens, no jwt and no certs: nobody could call the API"));
    }
    let mut names = std::collections::BTreeSet::new();
    let mut dns_names = std::collections::BTreeSet::new();
    for c in &a.certs {
        if c.name.is_empty() || !names.insert(c.name.as_str()) {
            return Err(invalid("auth.certs.name", format!("{:?} is empty or used twice", c.name)));
        }
        if rustls::pki_types::ServerName::try_from(c.dns_name.as_str())
            .map_or(true, |n| !matches!(n, rustls::pki_types::ServerName::DnsName(_)))
            || !dns_names.insert(c.dns_name.as_str())
        {
            return Err(invalid(
                "auth.certs.dns_name",
                format!("cert {:?}: {:?} is not a DNS name, or is used twice", c.name, c.dns_name),
            ));
        }
        if c.grants.is_empty() {
            return Err(invalid("auth.certs.grants", format!("cert {:?} grants nothing", c.name)));
        }
        for g in &c.grants {
            crate::auth::Grant::parse(g)
                .map_err(|e| invalid("auth.certs.grants", format!("cert {:?}: {e}", c.name)))?;
        }
    }
    for t in &a.tokens {
        if t.name.is_empty() || !names.insert(t.name.as_str()) {
            return Err(invalid("auth.tokens.name", format!("{:?} is empty or used twice", t.name)));
        }
        if crate::auth::parse_digest(&t.sha256).is_none() {
            return Err(invalid("auth.tokens.sha256", format!("token {:?}: must be 64 hex characters", t.name)));
        }
        if t.grants.is_empty() {
            return Err(invalid("auth.tokens.grants", format!("token {:?} grants nothing", t.name)));
        }
        for g in &t.grants {
            crate::auth::Grant::parse(g)
                .map_err(|e| invalid("auth.tokens.grants", format!("token {:?}: {e}", t.name)))?;
        }
    }
    if let Some(j) = &a.jwt {
        if j.hs256_secret_file.is_none() && j.rs256_public_key_file.is_none() && j.es256_public_key_file.is_none() {
            return Err(invalid("auth.jwt", "needs hs256_secret_file, rs256_public_key_file or es256_public_key_file"));
        }
        if j.issuer.is_empty() || j.audience.is_empty() {
            return Err(invalid("auth.jwt", "issuer and audience are required"));
        }
        if j.grants_claim.is_empty() {
            return Err(invalid("auth.jwt.grants_claim", "must not be empty"));
        }
        if j.leeway_secs > JWT_LEEWAY_SECS_MAX {
            return Err(invalid("auth.jwt.leeway_secs", format!("must be at most {JWT_LEEWAY_SECS_MAX}")));
        }
    }
    Ok(())
}

/// Whether an env key (after `BATON_`, in any case) names a config field.
/// The field names come from the struct itself, so they cannot drift.
pub fn is_config_env_key(key: &str) -> bool {
    static KEYS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(|| match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => Vec::new(),
    });
    let top = key.split("__").next().unwrap_or(key);
    keys.iter().any(|k| k.eq_ignore_ascii_case(top))
}

/// `host:port` with a non-empty host and a port in 1..=65535.
pub(crate) fn valid_host_port(s: &str) -> bool {
    match s.trim().rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        std::fs::write(
            &file,
            "node_id = 2\ndata_dir = \"/var/lib/baton\"\ninitial_members = [\"1=a:1/a:2\", \"2=b:1/b:2\"]\n[workers]\nttl_ms = 4000\n",
        )
        .unwrap();
        #[derive(Serialize)]
        struct Flags {
            #[serde(skip_serializing_if = "Option::is_none")]
            data_dir: Option<String>,
        }
        // Env is read by figment from the process; keep this test free of it.
        let cfg = Config::load(Some(&file), Flags { data_dir: Some("/tmp/override".into()) }).unwrap();
        assert_eq!(cfg.node_id, 2);
        assert_eq!(cfg.workers.ttl_ms, 4000);
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/override"));
        assert_eq!(cfg.members().unwrap().len(), 2);
    }

    #[test]
    fn validation_names_the_field() {
        let check = |f: fn(&mut Config), field: &str| {
            let mut c = Config::default();
            f(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        };
        check(|c| c.node_id = 0, "node_id");
        check(|c| c.raft.heartbeat_interval_ms = c.raft.election_timeout_min_ms, "raft.heartbeat_interval_ms");
        check(|c| c.raft.election_timeout_max_ms = c.raft.election_timeout_min_ms, "raft.election_timeout_min_ms");
        check(|c| c.workers.heartbeat_interval_ms = c.workers.ttl_ms / 2 + 1, "workers.heartbeat_interval_ms");
        check(|c| c.workers.check_interval_ms = 0, "workers.check_interval_ms");
        check(|c| c.limits.max_batch_commands = 0, "limits.max_batch_commands");
        check(|c| c.initial_members = vec!["1=x".into()], "initial_members");
        check(|c| c.initial_members = vec!["2=a:1/a:2".into()], "initial_members");
        check(|c| c.api_listen = c.raft_listen, "api_listen");
        check(|c| c.log_format = "xml".into(), "log_format");
        check(|c| c.api_advertise = Some("nohost".into()), "api_advertise");
    }

    #[test]
    fn auth_section_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        let hash = crate::auth::hash_token("t");
        std::fs::write(
            &file,
            format!(
                "[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{hash}\"\ngrants = [\"operator:ns1\", \"admin:*\"]\n\
                 [auth.jwt]\nhs256_secret_file = \"/s\"\nissuer = \"i\"\naudience = \"a\"\n"
            ),
        )
        .unwrap();
        let cfg = Config::load(Some(&file), serde_json::json!({})).unwrap();
        let auth = cfg.auth.unwrap();
        assert_eq!(auth.tokens[0].grants, ["operator:ns1", "admin:*"]);
        assert_eq!(auth.jwt.unwrap().leeway_secs, JWT_LEEWAY_SECS_DEFAULT);
        assert!(Config::default().auth.is_none(), "auth is off unless configured");

        let token = |sha256: &str, grants: &[&str]| StaticToken {
            name: "x".into(),
            sha256: sha256.into(),
            grants: grants.iter().map(|g| g.to_string()).collect(),
        };
        let check = |a: AuthSettings, field: &str| {
            let c = Config { auth: Some(a), ..Config::default() };
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        };
        check(AuthSettings::default(), "auth");
        check(
            AuthSettings { tokens: vec![token("abc", &["reader:*"])], jwt: None, certs: vec![] },
            "auth.tokens.sha256",
        );
        check(AuthSettings { tokens: vec![token(&hash, &["boss:*"])], jwt: None, certs: vec![] }, "auth.tokens.grants");
        check(AuthSettings { tokens: vec![token(&hash, &[])], jwt: None, certs: vec![] }, "auth.tokens.grants");
        check(AuthSettings { tokens: vec![], jwt: Some(JwtSettings::default()), certs: vec![] }, "auth.jwt");
        let no_issuer =
            JwtSettings { hs256_secret_file: Some("/s".into()), audience: "a".into(), ..Default::default() };
        check(AuthSettings { tokens: vec![], jwt: Some(no_issuer), certs: vec![] }, "auth.jwt");
        let cert = |name: &str, dns: &str, grants: &[&str]| CertPrincipal {
            name: name.into(),
            dns_name: dns.into(),
            grants: grants.iter().map(|g| g.to_string()).collect(),
        };
        let certs = |c: Vec<CertPrincipal>| AuthSettings { certs: c, ..AuthSettings::default() };
        check(certs(vec![cert("ci", "127.0.0.1", &["reader:*"])]), "auth.certs.dns_name");
        check(certs(vec![cert("ci", "ci.example", &[])]), "auth.certs.grants");
        check(certs(vec![cert("", "ci.example", &["reader:*"])]), "auth.certs.name");
        let twice = vec![cert("a", "ci.example", &["reader:*"]), cert("b", "ci.example", &["reader:*"])];
        check(certs(twice), "auth.certs.dns_name");
        let ok = Config { auth: Some(certs(vec![cert("ci", "ci.example", &["reader:*"])])), ..Config::default() };
        ok.validate().unwrap();
    }

    #[test]
    fn env_keys_match_fields_in_any_case() {
        assert!(is_config_env_key("NODE_ID"));
        assert!(is_config_env_key("node_id"));
        assert!(is_config_env_key("WORKERS__TTL_MS"));
        assert!(is_config_env_key("RAFT__SNAPSHOT_AFTER_ENTRIES"));
        assert!(!is_config_env_key("ENDPOINTS"));
        assert!(!is_config_env_key("LOG"));
        assert!(!is_config_env_key("NODE_ID_EXTRA"));
        for field in ["raft_listen", "api_advertise", "initial_members", "leave_on_shutdown", "limits"] {
            assert!(is_config_env_key(&field.to_uppercase()), "{field}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        std::fs::write(&file, "node_idd = 2\n").unwrap();
        #[derive(Serialize)]
        struct NoFlags {}
        let err = Config::load(Some(&file), NoFlags {}).unwrap_err().to_string();
        assert!(err.contains("node_idd"), "{err}");
    }
}
