//! The uplink's TLS client configuration: rustls with the ring provider
//! (chosen explicitly, so no process-wide default is needed and aws-lc is
//! never linked), the fleet CA as the only trust anchor, and the node's
//! client certificate. Read from the PEM files in `[uplink]` at every
//! connection attempt, so a renewed certificate is used at the next
//! reconnect without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::UplinkConfig;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("{key} {}: cannot read it: {source} (check the path and that the agent may read it)", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key} {}: not a PEM file with {what}: {reason}", path.display())]
    Pem {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("uplink.ca_file {}: no usable CA certificate in it ({reason})", path.display())]
    NoTrustAnchor { path: PathBuf, reason: String },
    #[error(
        "uplink.cert_file / uplink.key_file: the certificate and key cannot be used together: {0}"
    )]
    ClientAuth(rustls::Error),
    #[error("rustls refused the protocol versions: {0}")]
    Protocol(rustls::Error),
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            key,
            path: path.to_path_buf(),
            what: "certificates",
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            key,
            path: path.to_path_buf(),
            what: "certificates",
            reason: "no CERTIFICATE section found".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let key = "uplink.key_file";
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        key,
        path: path.to_path_buf(),
        what: "a private key (PKCS#8, SEC1 or PKCS#1)",
        reason: e.to_string(),
    })
}

/// The client configuration for `config` (an `mqtts://` uplink).
pub(crate) fn client_config(config: &UplinkConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, ignored) =
        roots.add_parsable_certificates(read_certs("uplink.ca_file", &config.ca_file)?);
    if added == 0 {
        return Err(TlsError::NoTrustAnchor {
            path: config.ca_file.clone(),
            reason: format!("{ignored} certificates could not be parsed"),
        });
    }
    let chain = read_certs("uplink.cert_file", &config.cert_file)?;
    let key = read_key(&config.key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(TlsError::ClientAuth)?;
    Ok(Arc::new(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> UplinkConfig {
        UplinkConfig {
            url: "mqtts://127.0.0.1:8883".into(),
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("node.pem"),
            key_file: dir.join("node.key"),
            ..UplinkConfig::default()
        }
    }

    #[test]
    fn a_missing_file_names_its_key_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = client_config(&config(dir.path())).unwrap_err().to_string();
        assert!(e.starts_with("uplink.ca_file "), "{e}");
        assert!(e.contains("ca.pem"), "{e}");
    }

    #[test]
    fn a_file_without_certificates_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "hello\n").unwrap();
        let e = client_config(&config(dir.path())).unwrap_err().to_string();
        assert!(
            e.contains("uplink.ca_file") && e.contains("no CERTIFICATE"),
            "{e}"
        );
    }
}
