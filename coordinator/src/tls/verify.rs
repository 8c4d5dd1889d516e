//! The Raft port's client verifier with peer name pinning: a certificate
//! must chain to the cluster CA (the inner verifier) and name one of the
//! configured members in a SAN DNS entry.

use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};

#[derive(Debug)]
pub struct Pinned {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl Pinned {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, names: Vec<String>) -> Pinned {
        Pinned { inner, names }
    }
}

/// Whether `cert` carries one of `names` as a SAN DNS name.
pub fn names_one_of(cert: &CertificateDer<'_>, names: &[String]) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else { return false };
    names.iter().any(|n| {
        ServerName::try_from(n.as_str())
            .is_ok_and(|sn| matches!(sn, ServerName::DnsName(_)) && ee.verify_is_valid_for_subject_name(&sn).is_ok())
    })
}

impl ClientCertVerifier for Pinned {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        if !names_one_of(end_entity, &self.names) {
            tracing::warn!(allowed = ?self.names, "refused a peer certificate: no SAN DNS name in tls.peer_names");
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure));
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
