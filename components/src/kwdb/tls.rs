//! rustls client configurations for the four sslmodes (no system OpenSSL).
//! Below [`super::conn`]: it takes only the TLS part of a connection's settings.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use serde::Deserialize;

use super::error::KwdbError;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    #[default]
    Disable,
    /// Encrypted, the server's certificate not checked.
    Require,
    /// Encrypted, the certificate checked against `sslrootcert`, not the host name.
    VerifyCa,
    /// Encrypted, certificate and host name checked.
    VerifyFull,
}

impl std::str::FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(format!(
                "unknown sslmode \"{other}\"; expected disable, require, verify-ca or verify-full"
            )),
        }
    }
}

/// The TLS part of a connection's settings, resolved (options over the URL).
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// The CA the server's certificate must lead to (`sslrootcert`).
    pub rootcert: Option<PathBuf>,
    /// The client's certificate and key (`sslcert`, `sslkey`): both or neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

pub fn client_config(p: &TlsSettings) -> Result<ClientConfig, KwdbError> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| KwdbError::Tls(e.to_string()))?;
    let roots = match &p.rootcert {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| KwdbError::Tls(format!("cannot read {}: {e}", path.display())))?
            {
                let cert = cert.map_err(|e| {
                    KwdbError::Tls(format!("bad certificate in {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    KwdbError::Tls(format!("bad certificate in {}: {e}", path.display()))
                })?;
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (p.mode, roots) {
        // libpq also checks the chain in `require` when a root certificate is given.
        (SslMode::Require, None) => Arc::new(NoVerification(provider.clone())),
        (SslMode::Require | SslMode::VerifyCa, Some(roots)) => Arc::new(ChainOnly(
            WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| KwdbError::Tls(e.to_string()))?,
        )),
        (SslMode::VerifyFull, Some(roots)) => {
            WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| KwdbError::Tls(e.to_string()))?
        }
        (SslMode::VerifyFull, None) => {
            return Err(KwdbError::Tls(
                "sslmode verify-full needs sslrootcert".into(),
            ))
        }
        (SslMode::VerifyCa, None) => {
            return Err(KwdbError::Tls("sslmode verify-ca needs sslrootcert".into()))
        }
        (SslMode::Disable, _) => return Err(KwdbError::Tls("TLS is disabled".into())),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&p.cert, &p.key) {
        (Some(cert), Some(key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| KwdbError::Tls(format!("cannot read {}: {e}", cert.display())))?;
            // The key's contents never reach a message: only its path does.
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| KwdbError::Tls(format!("cannot read key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| KwdbError::Tls(e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// `require`: encryption against eavesdroppers, no protection against an impostor.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the configured CA; the host name may differ
/// (clusters addressed by IP, certificates issued to node names).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
