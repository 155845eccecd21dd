//! TLS for a service's listener: the `[tls]` settings (a PEM certificate chain and key by path)
//! and the rustls acceptor built from them, checked at startup so a bad file stops the service
//! with a message naming it rather than failing every handshake later.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The `[tls]` table: both paths, or neither (plain HTTP).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsSettings {
    /// PEM file with the server certificate first, then any intermediates.
    pub cert_path: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: Option<PathBuf>,
}

impl TlsSettings {
    /// True when the listener speaks HTTPS.
    pub fn enabled(&self) -> bool {
        self.cert_path.is_some() || self.key_path.is_some()
    }

    /// Consistency rules, as `(dotted key, problem)` for [`crate::settings::Layered::problems`].
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        // Named by the key that is set, so the message points at the file or variable that
        // set it.
        match (&self.cert_path, &self.key_path) {
            (Some(_), None) => vec![(
                "tls.cert_path",
                "needs tls.key_path too (set both, or neither for plain HTTP)".into(),
            )],
            (None, Some(_)) => vec![(
                "tls.key_path",
                "needs tls.cert_path too (set both, or neither for plain HTTP)".into(),
            )],
            _ => Vec::new(),
        }
    }

    /// Reads and checks the certificate and key: `None` when TLS is off. The error names the
    /// file and what is wrong with it.
    pub fn acceptor(&self) -> Result<Option<TlsAcceptor>, TlsError> {
        match (&self.cert_path, &self.key_path) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => acceptor(cert, key).map(Some),
            (Some(_), None) => Err(TlsError::Incomplete("tls.key_path")),
            (None, Some(_)) => Err(TlsError::Incomplete("tls.cert_path")),
        }
    }
}

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS is half configured: {0} is not set")]
    Incomplete(&'static str),
    #[error("cannot read TLS {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS certificate file {0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("TLS certificate file {path} is not valid PEM: {problem}")]
    BadCertificate { path: PathBuf, problem: String },
    #[error(
        "TLS key file {path} holds no usable private key (PEM PKCS#8, PKCS#1 or SEC1): {problem}"
    )]
    BadKey { path: PathBuf, problem: String },
    #[error("TLS key {key} does not go with certificate {cert}: {problem}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        problem: String,
    },
}

/// The acceptor for `cert` and `key`, offering HTTP/1.1 only (what the server speaks).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let cert_pem = read(cert, "certificate file")?;
    let key_pem = read(key, "key file")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::BadCertificate {
            path: cert.to_path_buf(),
            problem: err.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| TlsError::BadKey {
        path: key.to_path_buf(),
        problem: err.to_string(),
    })?;
    let mismatch = |problem: String| TlsError::Mismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        problem,
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|err| mismatch(err.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|err| mismatch(err.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}
