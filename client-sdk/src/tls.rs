//! TLS for the SDK: the settings a `Client` and a `Worker` connect with, and
//! the explanation of a failed handshake.
//!
//! An `https://` endpoint, or any TLS setting, makes every connection TLS;
//! endpoints given as bare `host:port` (and leader hints) then get
//! `https://`. The server's certificate is verified against `ca_pem`.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::error::Error;

/// How to reach a TLS cluster.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// PEM bundle of the CA that signed the nodes' certificates.
    pub ca_pem: Option<Vec<u8>>,
    /// This client's certificate chain and key (PEM), for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to verify the server certificate against instead of the
    /// endpoint's host.
    pub domain: Option<String>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TlsOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .field("identity", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

impl TlsOptions {
    /// Read the CA and, when both are given, the client certificate and key.
    pub fn from_files(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> Result<TlsOptions, Error> {
        let read = |what: &str, p: &Path| {
            std::fs::read(p).map_err(|e| Error::Config(format!("cannot read {what} {}: {e}", p.display())))
        };
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((read("client certificate", c)?, read("client key", k)?)),
            (None, None) => None,
            _ => return Err(Error::Config("--cert and --key go together".into())),
        };
        Ok(TlsOptions { ca_pem: ca.map(|p| read("CA", p)).transpose()?, identity, domain: None })
    }

    fn tonic(&self) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new();
        if let Some(ca) = &self.ca_pem {
            c = c.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &self.identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        if let Some(d) = &self.domain {
            c = c.domain_name(d.clone());
        }
        c
    }
}

/// `host:port` → `http://host:port`, or `https://` when `tls`; a URL keeps
/// its scheme.
pub fn normalize_url(endpoint: &str, tls: bool) -> Result<String, Error> {
    let e = endpoint.trim();
    let url = if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else if tls {
        format!("https://{e}")
    } else {
        format!("http://{e}")
    };
    Endpoint::from_shared(url.clone()).map_err(|err| Error::Config(format!("bad endpoint {endpoint:?}: {err}")))?;
    Ok(url)
}

/// An endpoint for `url`, with TLS when it is `https://`.
pub fn endpoint(url: &str, tls: Option<&TlsOptions>) -> Result<Endpoint, Error> {
    let e = Endpoint::from_shared(url.to_string()).map_err(|e| Error::Config(format!("bad endpoint {url:?}: {e}")))?;
    if !url.starts_with("https://") {
        return Ok(e);
    }
    let opts = tls.cloned().unwrap_or_default();
    if opts.ca_pem.is_none() {
        return Err(Error::Config(format!("{url} is https: give the cluster CA (--ca or BATON_CA)")));
    }
    e.tls_config(opts.tonic()).map_err(|e| Error::Config(format!("tls settings for {url}: {e}")))
}

/// If a failed call's cause is a TLS problem, what it most likely means.
pub fn tls_hint(s: &tonic::Status) -> Option<&'static str> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as R};
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = cause {
        let tls = e.downcast_ref::<R>().or_else(|| {
            e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).and_then(|i| i.downcast_ref::<R>())
        });
        if let Some(r) = tls {
            return Some(match r {
                R::InvalidMessage(_) => {
                    "TLS handshake failed: the server does not speak TLS on this port (use http:// and no --ca)"
                }
                R::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                    "TLS handshake failed: the server's certificate has expired"
                }
                R::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                    "TLS handshake failed: the server's certificate does not name this host"
                }
                R::InvalidCertificate(_) => {
                    "TLS handshake failed: the server's certificate is not signed by the CA given with --ca"
                }
                R::AlertReceived(A::CertificateRequired) => {
                    "TLS handshake failed: the server requires a client certificate (--cert and --key)"
                }
                R::AlertReceived(
                    A::BadCertificate | A::UnknownCA | A::CertificateExpired | A::CertificateUnknown | A::AccessDenied,
                ) => "TLS handshake failed: the server refused this client's certificate (--cert and --key)",
                _ => "TLS handshake failed",
            });
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_endpoints_take_the_scheme_of_the_settings() {
        assert_eq!(normalize_url("127.0.0.1:7201", false).unwrap(), "http://127.0.0.1:7201");
        assert_eq!(normalize_url("127.0.0.1:7201", true).unwrap(), "https://127.0.0.1:7201");
        // An explicit scheme wins.
        assert_eq!(normalize_url("http://a:1", true).unwrap(), "http://a:1");
        assert_eq!(normalize_url("https://a:1", false).unwrap(), "https://a:1");
        assert!(crate::client::uses_tls(&["https://a:1".into()], None));
        assert!(crate::client::uses_tls(&["a:1".into()], Some(&TlsOptions::default())));
        assert!(!crate::client::uses_tls(&["a:1".into()], None));
    }

    #[test]
    fn https_needs_a_ca_and_cert_needs_key() {
        assert!(matches!(endpoint("https://a:1", None), Err(Error::Config(_))));
        assert!(endpoint("http://a:1", None).is_ok());
        let e = TlsOptions::from_files(None, Some(Path::new("/nonexistent")), None).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
    }

    #[test]
    fn a_handshake_failure_is_explained() {
        let rustls_err = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_err);
        let s = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(io))));
        assert!(tls_hint(&s).is_some_and(|h| h.contains("--ca")), "{:?}", tls_hint(&s));
        let e = Error::from_status(&s, false);
        assert!(e.to_string().contains("TLS handshake failed"), "{e}");
        assert_eq!(tls_hint(&tonic::Status::unavailable("x")), None);
    }
}
