//! HTTPS for the REST API: `listeners=https://host:port` with Connect's listener
//! settings, read as Connect reads them. When any `listeners.https.ssl.*` setting
//! is given, those are used and the worker's plain `ssl.*` ones ignored; otherwise
//! the plain `ssl.*` ones serve the listener too.
//!
//! - `ssl.keystore.type=PEM` with `ssl.keystore.location` (one PEM file with the
//!   private key and the certificate chain, as Kafka's PEM keystores are), or the
//!   key and chain inline in `ssl.keystore.key` / `ssl.keystore.certificate.chain`;
//! - `ssl.client.auth=required|requested|none` with `ssl.truststore.location` (PEM
//!   CA certificates) to check clients' certificates.
//!
//! JKS and PKCS12 stores need a JVM to read: they are errors that say how to export
//! PEM. An encrypted key is an error too (rustls reads plain PKCS#8, PKCS#1 and SEC1
//! keys), with the openssl command that decrypts it. No message shows a password.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("{0}")]
    Setting(String),
}

/// The listener's settings: `listeners.https.`-prefixed ones when any is given,
/// else the worker's plain ones, keyed without the prefix.
fn listener_settings(worker: &BTreeMap<String, String>) -> BTreeMap<String, (String, String)> {
    const PREFIX: &str = "listeners.https.";
    let prefixed: BTreeMap<String, (String, String)> = worker
        .iter()
        .filter_map(|(k, v)| {
            let short = k.strip_prefix(PREFIX)?;
            Some((short.to_string(), (k.clone(), v.clone())))
        })
        .collect();
    if !prefixed.is_empty() {
        return prefixed;
    }
    worker
        .iter()
        .filter(|(k, _)| k.starts_with("ssl."))
        .map(|(k, v)| (k.clone(), (k.clone(), v.clone())))
        .collect()
}

/// The TLS configuration of an `https://` listener.
pub fn server_config(worker: &BTreeMap<String, String>) -> Result<Arc<ServerConfig>, HttpsError> {
    let s = listener_settings(worker);
    let get = |k: &str| s.get(k).map(|(full, v)| (full.as_str(), v.as_str()));
    let err = |m: String| HttpsError::Setting(m);

    let auth = get("ssl.client.auth").map(|(full, v)| (full, v.trim().to_ascii_lowercase()));
    if let Some((full, other)) = &auth {
        if !["required", "requested", "none"].contains(&other.as_str()) {
            return Err(err(format!(
                "{full}: \"{other}\" is not one of required, requested, none"
            )));
        }
    }
    let (certs, key) = keystore(&get)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(format!("TLS: {e}")))?;
    let builder = match auth.as_ref().map(|(f, v)| (*f, v.as_str())) {
        None | Some((_, "none")) => builder.with_no_client_auth(),
        Some((full, mode @ ("required" | "requested"))) => {
            let Some((trust_key, location)) = get("ssl.truststore.location") else {
                return Err(err(format!(
                    "{full}={mode} needs ssl.truststore.location: the PEM file of the CA \
                     certificates clients' certificates are checked against"
                )));
            };
            check_pem_type(&get, "ssl.truststore.type", location, TRUSTSTORE_EXPORT)?;
            let mut roots = RootCertStore::empty();
            for cert in read_certs(trust_key, location)? {
                roots
                    .add(cert)
                    .map_err(|e| err(format!("{trust_key}: {location}: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = if mode == "requested" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| err(format!("{trust_key}: {location}: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        Some(_) => unreachable!("checked above"),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        err(format!(
            "the listener's key and certificate do not go together: {e}"
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

const KEYSTORE_EXPORT: &str = "export the key and certificate to one PEM file (keytool \
     -importkeystore -srckeystore <store> -destkeystore server.p12 -deststoretype PKCS12, \
     then openssl pkcs12 -in server.p12 -nodes -out server.pem) and give \
     ssl.keystore.location=server.pem with ssl.keystore.type=PEM";
const TRUSTSTORE_EXPORT: &str = "export its CA certificates to PEM (keytool -exportcert -rfc \
     -alias <ca> -keystore <store> -file ca.pem) and give ssl.truststore.location=ca.pem with \
     ssl.truststore.type=PEM";

type Lookup<'a> = dyn Fn(&str) -> Option<(&'a str, &'a str)> + 'a;

/// Refuses a store type other than PEM; a file that is PEM is PEM whatever the
/// default (Java's, JKS) would say.
fn check_pem_type(
    get: &Lookup<'_>,
    type_key: &str,
    location: &str,
    export: &str,
) -> Result<(), HttpsError> {
    let declared = get(type_key).map(|(full, v)| (full, v.trim().to_ascii_uppercase()));
    match declared {
        Some((_, t)) if t == "PEM" => Ok(()),
        Some((full, other)) => Err(HttpsError::Setting(format!(
            "{full}: a {other} store needs a JVM to read; {export}"
        ))),
        None => {
            let head = std::fs::read(location)
                .map(|b| b.starts_with(b"-----BEGIN"))
                .unwrap_or(true);
            if head {
                Ok(())
            } else {
                Err(HttpsError::Setting(format!(
                    "{type_key}: not given, so Java's default JKS, which needs a JVM to read; {export}"
                )))
            }
        }
    }
}

fn keystore(
    get: &Lookup<'_>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), HttpsError> {
    let err = |m: String| HttpsError::Setting(m);
    let (certs, key, place) =
        match (
            get("ssl.keystore.location"),
            get("ssl.keystore.key"),
            get("ssl.keystore.certificate.chain"),
        ) {
            (Some((full, location)), _, _) => {
                check_pem_type(get, "ssl.keystore.type", location, KEYSTORE_EXPORT)?;
                let bytes = std::fs::read(location)
                    .map_err(|e| err(format!("{full}: {location}: cannot read: {e}")))?;
                (bytes.clone(), bytes, format!("{full}: {location}"))
            }
            (None, Some((key_name, key)), Some((_, chain))) => (
                chain.as_bytes().to_vec(),
                key.as_bytes().to_vec(),
                key_name.to_string(),
            ),
            _ => return Err(err(
                "an https listener needs a key and certificate: ssl.keystore.location (a PEM file \
                 with both, ssl.keystore.type=PEM), or ssl.keystore.key with \
                 ssl.keystore.certificate.chain"
                    .into(),
            )),
        };
    if String::from_utf8_lossy(&key).contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(err(format!(
            "{place}: the private key is encrypted; give it decrypted (openssl pkcs8 -in <key> \
             -out key.pem) in a file only the worker can read"
        )));
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&certs)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("{place}: {e}")))?;
    if certs.is_empty() {
        return Err(err(format!("{place}: no certificate")));
    }
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| err(format!("{place}: no private key ({e})")))?;
    Ok((certs, key))
}

fn read_certs(key: &str, location: &str) -> Result<Vec<CertificateDer<'static>>, HttpsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(location)
        .map_err(|e| HttpsError::Setting(format!("{key}: {location}: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| HttpsError::Setting(format!("{key}: {location}: {e}")))?;
    if certs.is_empty() {
        return Err(HttpsError::Setting(format!(
            "{key}: {location}: no certificate"
        )));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        server_config(&settings(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn prefixed_listener_settings_replace_the_plain_ones() {
        let s = listener_settings(&settings(&[
            ("ssl.keystore.location", "/plain.pem"),
            ("listeners.https.ssl.client.auth", "required"),
        ]));
        assert_eq!(s.len(), 1);
        assert_eq!(
            s["ssl.client.auth"],
            ("listeners.https.ssl.client.auth".into(), "required".into())
        );
        let s = listener_settings(&settings(&[
            ("ssl.keystore.location", "/plain.pem"),
            ("bootstrap.servers", "x"),
        ]));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn missing_or_java_stores_say_what_to_give() {
        let e = error(&[]);
        assert!(e.contains("needs a key and certificate"), "{e}");
        let e = error(&[
            ("listeners.https.ssl.keystore.location", "/etc/server.jks"),
            ("listeners.https.ssl.keystore.type", "JKS"),
            ("listeners.https.ssl.keystore.password", "hunter2"),
        ]);
        assert!(
            e.contains("listeners.https.ssl.keystore.type: a JKS store needs a JVM"),
            "{e}"
        );
        assert!(e.contains("keytool -importkeystore"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("server.jks");
        std::fs::write(&binary, [0xfe, 0xed, 0xfe, 0xed]).unwrap();
        let e = error(&[("ssl.keystore.location", binary.to_str().unwrap())]);
        assert!(e.contains("Java's default JKS"), "{e}");
    }

    #[test]
    fn an_encrypted_key_and_a_bad_client_auth_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("server.pem");
        std::fs::write(
            &pem,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = error(&[
            ("ssl.keystore.location", pem.to_str().unwrap()),
            ("ssl.keystore.type", "PEM"),
        ]);
        assert!(e.contains("the private key is encrypted"), "{e}");
        let e = error(&[
            ("ssl.keystore.key", "k"),
            ("ssl.keystore.certificate.chain", "c"),
            ("ssl.client.auth", "always"),
        ]);
        assert_eq!(
            e,
            "ssl.client.auth: \"always\" is not one of required, requested, none"
        );
    }
}
