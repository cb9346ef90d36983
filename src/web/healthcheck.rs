//! `gatehouse healthcheck`: GET /healthz on this box's own server, for a container's HEALTHCHECK
//! (an image with no shell or curl). Plain HTTP, or HTTPS when `[tls]` is on: then the server must
//! present exactly the certificate of `tls.cert_file` (pinned: it is our own server, whatever name
//! the certificate carries).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::Config;

/// Ok when the server at `addr` answers /healthz with 200 within `timeout`.
pub fn probe(config: &Config, addr: &str, timeout: Duration) -> Result<(), String> {
    let mut to: SocketAddr = addr.parse().map_err(|_| format!("{addr:?} is not an address like 127.0.0.1:8080"))?;
    // A server listening on every address is asked on loopback.
    if to.ip().is_unspecified() {
        to.set_ip(if to.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let mut tcp = TcpStream::connect_timeout(&to, timeout).map_err(|e| format!("{to}: {e}"))?;
    tcp.set_read_timeout(Some(timeout))
        .and_then(|_| tcp.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut answer = Vec::new();
    if config.tls.enabled() {
        let pinned = CertificateDer::pem_file_iter(&config.tls.cert_file)
            .map_err(|e| format!("tls.cert_file: {e}"))?
            .next()
            .ok_or("tls.cert_file holds no certificate")?
            .map_err(|e| format!("tls.cert_file: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(Pinned { cert: pinned, provider: Arc::clone(&provider) });
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let mut conn = rustls::ClientConnection::new(Arc::new(tls), name).map_err(|e| e.to_string())?;
        let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
        stream.write_all(request).map_err(|e| format!("{to}: {e}"))?;
        read_answer(&mut stream, &mut answer)?;
    } else {
        tcp.write_all(request).map_err(|e| format!("{to}: {e}"))?;
        read_answer(&mut tcp, &mut answer)?;
    }
    let status = String::from_utf8_lossy(answer.split(|b| *b == b'\n').next().unwrap_or_default()).trim().to_string();
    if status.starts_with("HTTP/1.1 200") {
        Ok(())
    } else if status.is_empty() {
        Err(format!("{to}: no answer"))
    } else {
        Err(format!("{to}: /healthz answered {status}"))
    }
}

/// Reads the answer until the server closes (Connection: close), at most 64 KiB.
fn read_answer(r: &mut impl Read, out: &mut Vec<u8>) -> Result<(), String> {
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > 64 * 1024 {
                    return Ok(());
                }
            }
            // A TLS peer that closes without close_notify: what was read is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Trusts exactly one certificate: the server's own.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the certificate of tls.cert_file".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
