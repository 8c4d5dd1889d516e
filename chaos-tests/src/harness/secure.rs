//! `--secure` runs: TLS on every node (the API port with `client_auth =
//! "optional"`, mutual TLS between nodes) and `[auth]` with one token per
//! kind of client, so chaos exercises the secured paths (handshakes after
//! kills and partitions, forwarded credentials, session resumes with a
//! token) rather than only plaintext ones.
//!
//! Certificates come from `baton certs generate`, the coordinator's own
//! generator; tokens are random and the nodes' config holds their SHA-256.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use baton_client::{ClientConfig, TlsOptions};
use sha2::{Digest, Sha256};

use super::final_read::NAMESPACE;

/// Node ids that get a certificate. The membership fault adds two fresh
/// ids above 5 per injection, so a run may use more ids than voters; a
/// node beyond this cannot start in a secure run (and says so).
pub const MAX_NODE_ID: u64 = 32;

/// Grants of the harness's own client: membership, state hashes and the
/// final read need `admin` everywhere.
const ADMIN_GRANTS: &[&str] = &["admin:*"];
/// Grants of the submitters, the reader and the workflow and schedule
/// submitters: they also approve and reject gates, cancel workflows,
/// create triggers and pause schedules, which need `operator`.
fn submitter_grants() -> Vec<String> {
    vec![format!("operator:{NAMESPACE}")]
}
/// Grants of the chaos workers: sessions for the run's namespace, and the
/// reads a reduce makes.
fn worker_grants() -> Vec<String> {
    vec![format!("worker:{NAMESPACE}")]
}

/// Which credential a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The harness: control calls, the leader watcher, the final read.
    Admin,
    /// The workload's submitting tasks.
    Submitter,
    /// The chaos worker processes.
    Worker,
}

/// The run's certificates, node config and tokens.
#[derive(Debug, Clone)]
pub struct Secure {
    /// `ca.pem`: every client and node trusts it.
    pub ca: PathBuf,
    /// The `[auth]` config every node reads.
    pub auth_config: PathBuf,
    certs: PathBuf,
    admin: String,
    submitter: String,
    worker: String,
    /// The worker token's file, passed to worker processes (not their command line).
    pub worker_token_file: PathBuf,
}

fn new_token(role: &str) -> String {
    format!("chaos-{role}-{:032x}", rand::random::<u128>())
}

/// Lowercase hex SHA-256 of a token, as `[[auth.tokens]] sha256` wants it.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The `[auth]` section for these (name, token, grants).
fn auth_toml(tokens: &[(&str, &str, Vec<String>)]) -> String {
    let mut s = String::from("# Written by baton-chaos --secure.\n[auth]\n");
    for (name, token, grants) in tokens {
        let grants: Vec<String> = grants.iter().map(|g| format!("{g:?}")).collect();
        s.push_str(&format!(
            "\n[[auth.tokens]]\nname = {name:?}\nsha256 = \"{}\"\ngrants = [{}]\n",
            hash_token(token),
            grants.join(", ")
        ));
    }
    s
}

impl Secure {
    /// Generate certificates for node ids 1..=[`MAX_NODE_ID`] with `bin certs
    /// generate` (every node certificate also names `hosts`), tokens, and the
    /// nodes' `[auth]` config, under `dir`.
    pub fn create(bin: &Path, dir: &Path, hosts: &[String]) -> Result<Secure> {
        let certs = dir.join("tls");
        let mut cmd = Command::new(bin);
        cmd.args(["certs", "generate", "--nodes", &MAX_NODE_ID.to_string()]).arg("--out").arg(&certs);
        if !hosts.is_empty() {
            cmd.args(["--hosts", &hosts.join(",")]);
        }
        let out = cmd.output().with_context(|| format!("cannot run {} certs generate", bin.display()))?;
        if !out.status.success() {
            bail!("`baton certs generate` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let ca = certs.join("ca.pem");
        ensure!(ca.is_file(), "`baton certs generate` wrote no {}", ca.display());
        let (admin, submitter, worker) = (new_token("admin"), new_token("submitter"), new_token("worker"));
        let admin_grants = ADMIN_GRANTS.iter().map(|g| g.to_string()).collect();
        let toml = auth_toml(&[
            ("chaos-harness", &admin, admin_grants),
            ("chaos-submitter", &submitter, submitter_grants()),
            ("chaos-worker", &worker, worker_grants()),
        ]);
        let auth_config = dir.join("auth.toml");
        std::fs::write(&auth_config, toml)?;
        let worker_token_file = dir.join("worker.token");
        std::fs::write(&worker_token_file, &worker)?;
        Ok(Secure { ca, auth_config, certs, admin, submitter, worker, worker_token_file })
    }

    /// `baton serve` flags for node `id`: the `[auth]` config file and its TLS material.
    pub fn serve_args(&self, id: u64) -> Result<Vec<OsString>> {
        ensure!(
            (1..=MAX_NODE_ID).contains(&id),
            "secure runs have certificates for node ids 1..={MAX_NODE_ID}, not {id}"
        );
        let mut a: Vec<OsString> = vec!["--config".into(), self.auth_config.clone().into()];
        a.extend(["--tls-ca".into(), self.ca.clone().into()]);
        a.extend(["--tls-cert".into(), self.certs.join(format!("node{id}.pem")).into()]);
        a.extend(["--tls-key".into(), self.certs.join(format!("node{id}-key.pem")).into()]);
        a.extend(["--tls-client-auth".into(), "optional".into()]);
        Ok(a)
    }

    /// TLS settings of every client: trust the run's CA (no client certificate).
    pub fn tls(&self) -> Result<TlsOptions> {
        Ok(TlsOptions::from_files(Some(&self.ca), None, None)?)
    }

    /// The token of `role`.
    pub fn token(&self, role: Role) -> &str {
        match role {
            Role::Admin => &self.admin,
            Role::Submitter => &self.submitter,
            Role::Worker => &self.worker,
        }
    }

    /// `cfg` with TLS and `role`'s token.
    pub fn apply(&self, mut cfg: ClientConfig, role: Role) -> Result<ClientConfig> {
        cfg.tls = Some(self.tls()?);
        cfg.token = Some(self.token(role).to_string());
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_config_holds_hashes_and_grants_never_tokens() {
        let t = auth_toml(&[("a", "tok-1", vec!["admin:*".into()]), ("w", "tok-2", worker_grants())]);
        assert!(!t.contains("tok-1") && !t.contains("tok-2"), "{t}");
        // The digest of "abc" (FIPS 180-2), as the coordinator's hash_token gives it.
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(t.contains(&format!("sha256 = \"{}\"", hash_token("tok-1"))));
        assert!(t.contains(&format!("grants = [\"worker:{NAMESPACE}\"]")), "{t}");
        assert_eq!(t.matches("[[auth.tokens]]").count(), 2);
    }
}
