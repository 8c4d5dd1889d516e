//! `baton certs generate`: a CA, node certificates and a client certificate
//! in a directory, for test clusters (the chaos harness, local TLS setups).
//! The certificates come from [`crate::tls::certgen`], as `baton dev --secure`'s do.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::tls::certgen::{DevCerts, write_certs};

/// Most node certificates one call writes (a cluster's voters and spares).
pub const MAX_NODES: u64 = 64;

#[derive(Subcommand)]
pub enum CertsCmd {
    /// Write ca.pem, node<i>.pem / node<i>-key.pem (SANs localhost,
    /// 127.0.0.1, node<i> and every --hosts entry) and client.pem /
    /// client-key.pem (SAN baton-client) into --out. Not for production:
    /// the CA's key is not kept, and every node shares the --hosts names.
    Generate {
        /// Directory to write into (created if missing; files are replaced).
        #[arg(long)]
        out: PathBuf,
        /// Node certificates to write: node1 .. node<N>.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// More SANs for every node certificate: DNS names or IP
        /// addresses, comma-separated (the addresses nodes are reached at).
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
    },
}

pub fn run(cmd: CertsCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        CertsCmd::Generate { out, nodes, hosts } => {
            let certs = generate(&out, nodes, &hosts)?;
            print(&certs, json);
            Ok(())
        }
    }
}

/// Check the arguments and write the files.
pub fn generate(out: &Path, nodes: u64, hosts: &[String]) -> anyhow::Result<DevCerts> {
    anyhow::ensure!((1..=MAX_NODES).contains(&nodes), "--nodes must be from 1 to {MAX_NODES}, not {nodes}");
    let hosts: Vec<String> = hosts.iter().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
    for h in &hosts {
        anyhow::ensure!(
            h.parse::<std::net::IpAddr>().is_ok() || rustls::pki_types::DnsName::try_from(h.as_str()).is_ok(),
            "--hosts entry {h:?} is neither an IP address nor a DNS name"
        );
    }
    write_certs(out, nodes, &hosts)
}

fn print(c: &DevCerts, json: bool) {
    if json {
        let nodes: Vec<_> = c.nodes.iter().map(|(cert, key)| serde_json::json!({ "cert": cert, "key": key })).collect();
        let v = serde_json::json!({
            "ca": c.ca, "nodes": nodes, "client_cert": c.client_cert, "client_key": c.client_key,
        });
        println!("{v}");
        return;
    }
    println!("ca:     {}", c.ca.display());
    for (i, (cert, key)) in c.nodes.iter().enumerate() {
        println!("node{}:  {} {}", i + 1, cert.display(), key.display());
    }
    println!("client: {} {}", c.client_cert.display(), c.client_key.display());
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    use super::*;

    fn valid_for(cert: &Path, name: &str) -> bool {
        let der = CertificateDer::from_pem_file(cert).unwrap();
        let ee = webpki::EndEntityCert::try_from(&der).unwrap();
        ee.verify_is_valid_for_subject_name(&ServerName::try_from(name).unwrap()).is_ok()
    }

    #[test]
    fn node_certificates_name_loopback_their_node_and_every_extra_host() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = ["10.7.0.11".to_string(), " 10.7.0.12".into(), "baton.internal".into()];
        let c = generate(dir.path(), 2, &hosts).unwrap();
        assert_eq!(c.nodes.len(), 2);
        for (i, (cert, key)) in c.nodes.iter().enumerate() {
            assert!(key.is_file());
            for name in ["localhost", "127.0.0.1", "10.7.0.11", "10.7.0.12", "baton.internal"] {
                assert!(valid_for(cert, name), "node{} misses {name}", i + 1);
            }
            assert!(valid_for(cert, &format!("node{}", i + 1)));
            assert!(!valid_for(cert, "10.7.0.13"));
        }
        assert!(!valid_for(&c.nodes[0].0, "node2"));
        assert!(valid_for(&c.client_cert, "baton-client") && !valid_for(&c.client_cert, "127.0.0.1"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&c.client_key).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn bad_arguments_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        assert!(generate(&out, 0, &[]).unwrap_err().to_string().contains("--nodes"));
        let e = generate(&out, 3, &["not a name!".into()]).unwrap_err();
        assert!(e.to_string().contains("not a name!"), "{e}");
        assert!(!out.exists());
    }
}
