//! TLS on the API and Raft ports: the material read from `[tls]`, its
//! reload on SIGHUP and on file change, and the client settings this node
//! uses to reach its peers. Accepting connections is in [`accept`]; the
//! Raft port's client verifier (with peer name pinning) in [`verify`];
//! certificate generation for `baton dev --secure` and tests in [`certgen`].
//!
//! Reload swaps whole `ServerConfig`s: each new handshake takes the current
//! one, connections already open keep the material they started with, and a
//! file that fails to load leaves the old material in place.

pub mod accept;
pub mod certgen;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::config::{ClientAuth, TlsConfig};

/// How often the certificate files' modification times are checked. A
/// rotation by file replacement (cert-manager, a cron job) takes effect
/// within this; SIGHUP takes effect at once.
pub const RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(3);

/// ALPN for gRPC: HTTP/2 only.
const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{what} {path} holds no usable PEM {kind}: {reason}")]
    Parse { what: &'static str, path: PathBuf, kind: &'static str, reason: String },
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.into(), source })
}

fn certs(what: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let parse = |reason: String| TlsError::Parse { what, path: path.into(), kind: "certificate", reason };
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| parse(e.to_string()))?;
    if certs.is_empty() {
        return Err(parse("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

fn roots(what: &'static str, path: &Path, pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(what, path, pem)? {
        store.add(c).map_err(|e| TlsError::Parse {
            what,
            path: path.into(),
            kind: "CA certificate",
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(store))
}

/// Everything built from the files at one moment.
pub struct Material {
    /// The API port's server config.
    pub api: Arc<rustls::ServerConfig>,
    /// The Raft port's: client certificates required, chained to the cluster CA.
    pub raft: Arc<rustls::ServerConfig>,
    /// PEM of the cluster CA, this node's chain and key, for client channels.
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// The end-entity certificate served (tests and logs compare it).
    pub leaf: CertificateDer<'static>,
}

impl Material {
    /// Read and check every file `cfg` names; the error names the file.
    pub fn load(cfg: &TlsConfig) -> Result<Material, TlsError> {
        for (what, p) in [("tls.ca", &cfg.ca), ("tls.cert", &cfg.cert), ("tls.key", &cfg.key)] {
            if p.as_os_str().is_empty() {
                return Err(TlsError::Invalid { what, reason: "must be set when [tls] is present".into() });
            }
        }
        let ca_pem = read("tls.ca", &cfg.ca)?;
        let cert_pem = read("tls.cert", &cfg.cert)?;
        let key_pem = read("tls.key", &cfg.key)?;
        let cluster_roots = roots("tls.ca", &cfg.ca, &ca_pem)?;
        let chain = certs("tls.cert", &cfg.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Parse {
            what: "tls.key",
            path: cfg.key.clone(),
            kind: "private key",
            reason: e.to_string(),
        })?;
        let client_roots = match &cfg.client_ca {
            Some(p) => roots("tls.client_ca", p, &read("tls.client_ca", p)?)?,
            None => cluster_roots.clone(),
        };
        let leaf = chain[0].clone();

        let peer_verifier = WebPkiClientVerifier::builder_with_provider(cluster_roots, provider())
            .build()
            .map_err(|e| TlsError::Invalid { what: "tls.ca", reason: e.to_string() })?;
        let peer_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> = if cfg.peer_names.is_empty() {
            peer_verifier
        } else {
            Arc::new(verify::Pinned::new(peer_verifier, cfg.peer_names.clone()))
        };
        let server = || {
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Invalid { what: "tls", reason: e.to_string() })
        };
        let key_err = |e: rustls::Error| TlsError::Invalid {
            what: "tls.cert/tls.key",
            reason: format!("{e} ({} and {})", cfg.cert.display(), cfg.key.display()),
        };
        let mut raft = server()?
            .with_client_cert_verifier(peer_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(key_err)?;
        raft.alpn_protocols = vec![ALPN_H2.to_vec()];
        let api_builder = match cfg.client_auth {
            ClientAuth::None => server()?.with_no_client_auth(),
            mode => {
                let b = WebPkiClientVerifier::builder_with_provider(client_roots, provider());
                let b = if mode == ClientAuth::Optional { b.allow_unauthenticated() } else { b };
                let v = b.build().map_err(|e| TlsError::Invalid { what: "tls.client_ca", reason: e.to_string() })?;
                server()?.with_client_cert_verifier(v)
            }
        };
        let mut api = api_builder.with_single_cert(chain, key).map_err(key_err)?;
        api.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Material { api: Arc::new(api), raft: Arc::new(raft), ca_pem, cert_pem, key_pem, leaf })
    }

    /// tonic client settings for calling a peer at `host` (its Raft or API
    /// port), presenting this node's certificate.
    pub fn client(&self, host: &str, server_name: Option<&str>) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(server_name.unwrap_or(host))
    }
}

/// Which port a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Api,
    Raft,
}

/// The node's TLS state: the current material, swapped on reload.
pub struct TlsState {
    cfg: TlsConfig,
    current: RwLock<Arc<Material>>,
    /// Modification times at the last load attempt, so a file is retried
    /// only after it changes again.
    stamps: std::sync::Mutex<Vec<Option<SystemTime>>>,
    /// Bumped by each successful reload, so long-lived client channels know
    /// to rebuild with the new client certificate.
    generation: std::sync::atomic::AtomicU64,
}

impl TlsState {
    pub fn new(cfg: TlsConfig) -> Result<Arc<TlsState>, TlsError> {
        let stamps = std::sync::Mutex::new(stamps(&cfg));
        let m = Material::load(&cfg)?;
        Ok(Arc::new(TlsState { cfg, current: RwLock::new(Arc::new(m)), stamps, generation: Default::default() }))
    }

    pub fn current(&self) -> Arc<Material> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn server_config(&self, port: Port) -> Arc<rustls::ServerConfig> {
        let m = self.current();
        match port {
            Port::Api => m.api.clone(),
            Port::Raft => m.raft.clone(),
        }
    }

    /// tonic client settings for a peer address `host:port`.
    pub fn client_for(&self, addr: &str) -> tonic::transport::ClientTlsConfig {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
        self.current().client(host, self.cfg.server_name.as_deref())
    }

    /// Re-read every file; on failure keep the old material.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = stamps(&self.cfg);
        let m = Material::load(&self.cfg)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(m);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Changes with every successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether a file changed since the last load attempt.
    pub fn changed(&self) -> bool {
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) != stamps(&self.cfg)
    }

    fn reload_logged(&self, why: &'static str) {
        match self.reload() {
            Ok(()) => tracing::info!(trigger = why, "tls material reloaded"),
            Err(e) => tracing::error!(trigger = why, error = %e, "tls reload failed, keeping the previous material"),
        }
    }

    /// Reload on SIGHUP and when a file changes, until the task is aborted.
    pub async fn watch(self: Arc<Self>) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGHUP handler; tls reload by file change only");
                None
            }
        };
        let mut tick = tokio::time::interval(RELOAD_POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hup_recv = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = hup_recv => self.reload_logged("sighup"),
                _ = tick.tick() => {
                    if self.changed() {
                        self.reload_logged("file change");
                    }
                }
            }
        }
    }
}

/// An endpoint for another node's `host:port`: `https://` with this node's
/// TLS client settings when `tls` is on, else `http://`.
pub fn endpoint(addr: &str, tls: Option<&TlsState>) -> Result<tonic::transport::Endpoint, String> {
    use tonic::transport::Endpoint;
    match tls {
        None => Endpoint::from_shared(format!("http://{addr}")).map_err(|e| e.to_string()),
        Some(t) => Endpoint::from_shared(format!("https://{addr}"))
            .and_then(|e| e.tls_config(t.client_for(addr)))
            .map_err(|e| e.to_string()),
    }
}

/// The modification time of every file the config names.
fn stamps(cfg: &TlsConfig) -> Vec<Option<SystemTime>> {
    [Some(&cfg.ca), Some(&cfg.cert), Some(&cfg.key), cfg.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

#[cfg(test)]
mod tests;
