//! HTTPS with rustls (ring provider): the certificate chain and key from `[tls]`.

use std::io;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config;

fn invalid(key: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("configuration: key `{key}`: {e}"))
}

/// The certificate chain and key of `[tls]`, read from their PEM files and checked to match.
fn certified_key(tls: &config::Tls) -> io::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .map_err(|e| invalid("tls.cert_file", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("tls.cert_file", e))?;
    if certs.is_empty() {
        return Err(invalid("tls.cert_file", "holds no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| invalid("tls.key_file", e))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key).map_err(|e| invalid("tls.key_file", e))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| invalid("tls.key_file", e))?;
    Ok(ck)
}

/// The certificate the server presents, replaced whole when the files are read again (SIGHUP):
/// a renewed certificate is served from the next handshake on, without a restart.
#[derive(Debug)]
pub struct Reloadable {
    tls: config::Tls,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Reloadable {
    /// Reads the files again; on any error the certificate in use stays.
    pub fn reload(&self) -> io::Result<()> {
        let fresh = Arc::new(certified_key(&self.tls)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner())))
    }
}

/// A rustls server configuration from the PEM files of `[tls]`, and the handle that reloads them.
pub fn server_config(tls: &config::Tls) -> io::Result<(rustls::ServerConfig, Arc<Reloadable>)> {
    let reloadable = Arc::new(Reloadable { tls: tls.clone(), current: RwLock::new(Arc::new(certified_key(tls)?)) });
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls", e))?
        .with_no_client_auth()
        .with_cert_resolver(reloadable.clone());
    Ok((config, reloadable))
}
