//! Why a TLS connection to a broker failed, in words that name the cause.
//!
//! librdkafka reports every refused broker certificate the same way ("broker
//! certificate could not be verified"), whether the certificate is signed by an
//! unknown CA, issued for another host, or expired. When the cluster check sees
//! that, it repeats the handshake here with rustls against the same `tls.ca_file`
//! and reports what rustls found. Only the handshake is made: no Kafka request.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore};

/// A sentence naming why the broker's certificate is refused, or `None` when the
/// handshake cannot tell (no `ca_file`, the broker unreachable, or it succeeds).
pub fn certificate_problem(server: &str, ca_file: &Path, timeout: Duration) -> Option<String> {
    let (host, port) = server.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok()?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).ok()? {
        roots.add(cert.ok()?).ok()?;
    }
    let provider = Arc::new(ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .ok()?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).ok()?;
    let mut conn = ClientConnection::new(Arc::new(config), name).ok()?;
    let addr = (host, port).to_socket_addrs().ok()?.next()?;
    let mut sock = TcpStream::connect_timeout(&addr, timeout).ok()?;
    sock.set_read_timeout(Some(timeout)).ok()?;
    sock.set_write_timeout(Some(timeout)).ok()?;
    while conn.is_handshaking() {
        if conn.wants_write() {
            conn.write_tls(&mut sock).ok()?;
            continue;
        }
        if conn.wants_read() {
            match conn.read_tls(&mut sock) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            if let Err(e) = conn.process_new_packets() {
                return explain(&e, host, ca_file);
            }
        }
    }
    // The handshake went through; say nothing rather than guess.
    None
}

fn explain(e: &rustls::Error, host: &str, ca_file: &Path) -> Option<String> {
    let rustls::Error::InvalidCertificate(cert) = e else {
        return None;
    };
    let ca = ca_file.display();
    Some(match cert {
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "the broker's certificate is not issued for \"{host}\" (the address in \
                 bootstrap_servers or the broker's advertised listener); connect by a name the \
                 certificate holds, or set `tls.verify_hostname = false`"
            )
        }
        CertificateError::UnknownIssuer => format!(
            "the broker's certificate is not signed by a certificate authority in \
             `tls.ca_file` ({ca})"
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the broker's certificate has expired".to_string()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "the broker's certificate is not valid yet (check this machine's clock)".to_string()
        }
        other => format!("the broker's certificate is refused: {other:?}"),
    })
}
