//! Certificates for `baton dev --secure` and tests, made with rcgen: a CA,
//! and certificates it signs for nodes and clients. Not for production: a
//! real deployment's CA key does not live next to the nodes.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// How long generated certificates are valid (dev clusters are short-lived).
pub const DEV_VALIDITY: Duration = Duration::days(365);

/// A certificate and its key, in PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// DER of the certificate (tests compare it with what a handshake shows).
    pub der: Vec<u8>,
}

/// A CA that can sign certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Result<Ca, rcgen::Error> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::days(1);
        p.not_after = now + DEV_VALIDITY;
        let key = KeyPair::generate()?;
        let cert_pem = p.self_signed(&key)?.pem();
        Ok(Ca { issuer: Issuer::new(p, key), cert_pem })
    }

    /// A certificate for `names` (DNS names or IP addresses), usable as
    /// both server and client certificate, valid from `not_before` to
    /// `not_after` (default: from yesterday for [`DEV_VALIDITY`]).
    pub fn issue(
        &self,
        names: &[&str],
        validity: Option<(OffsetDateTime, OffsetDateTime)>,
    ) -> Result<Issued, rcgen::Error> {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        p.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("baton"));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let now = OffsetDateTime::now_utc();
        let (from, to) = validity.unwrap_or((now - Duration::days(1), now + DEV_VALIDITY));
        p.not_before = from;
        p.not_after = to;
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() })
    }
}

/// Where `write_dev_certs` put its files.
#[derive(Debug, Clone)]
pub struct DevCerts {
    pub ca: PathBuf,
    /// Per node: (certificate, key).
    pub nodes: Vec<(PathBuf, PathBuf)>,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Write a CA, one certificate per node (SANs `localhost`, `127.0.0.1`
/// and `node<i>`), and a client certificate (SAN `baton-client`) into `dir`.
pub fn write_dev_certs(dir: &Path, nodes: u64) -> anyhow::Result<DevCerts> {
    write_certs(dir, nodes, &[])
}

/// Like [`write_dev_certs`], with `extra_hosts` (DNS names or IP addresses)
/// added to every node certificate: the addresses nodes are reached at when
/// that is not loopback (`baton certs generate --hosts`).
pub fn write_certs(dir: &Path, nodes: u64, extra_hosts: &[String]) -> anyhow::Result<DevCerts> {
    std::fs::create_dir_all(dir)?;
    let ca = Ca::new("baton dev CA")?;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem)?;
    let mut out = Vec::new();
    for i in 1..=nodes {
        let name = format!("node{i}");
        let mut names = vec!["localhost", "127.0.0.1", name.as_str()];
        names.extend(extra_hosts.iter().map(String::as_str).filter(|h| !h.is_empty()));
        let c = ca.issue(&names, None)?;
        let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
        std::fs::write(&cert, &c.cert_pem)?;
        write_private(&key, &c.key_pem)?;
        out.push((cert, key));
    }
    let c = ca.issue(&["baton-client"], None)?;
    let (client_cert, client_key) = (dir.join("client.pem"), dir.join("client-key.pem"));
    std::fs::write(&client_cert, &c.cert_pem)?;
    write_private(&client_key, &c.key_pem)?;
    Ok(DevCerts { ca: ca_path, nodes: out, client_cert, client_key })
}

/// Write a key readable by its owner only.
pub fn write_private(path: &Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(pem.as_bytes())
}
