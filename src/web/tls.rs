//! HTTPS with rustls (ring provider): the certificate chain and key from `[tls]`.

use std::io;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config;

fn invalid(key: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("configuration: key `{key}`: {e}"))
}

/// A rustls server configuration from the PEM files of `[tls]`.
pub fn server_config(tls: &config::Tls) -> io::Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .map_err(|e| invalid("tls.cert_file", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("tls.cert_file", e))?;
    if certs.is_empty() {
        return Err(invalid("tls.cert_file", "holds no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| invalid("tls.key_file", e))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("tls.key_file", e))
}
