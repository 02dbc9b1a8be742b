//! TLS and SASL for the `kafka` source and sink, in the shape Vector's users know:
//!
//! ```toml
//! tls = { ca_file = "/etc/kafka/ca.pem", crt_file = "...", key_file = "...", key_pass = "..." }
//! sasl = { mechanism = "SCRAM-SHA-512", username = "app", password = "${KAFKA_PASSWORD}" }
//! ```
//!
//! Each maps to librdkafka properties (`security.protocol`, `ssl.*`, `sasl.*`). The same
//! properties set through `librdkafka_options` keep working when neither table is
//! given; given both ways they would disagree silently, so that is an error.
//!
//! The files are checked when the configuration is checked (`kwpipe validate`, even
//! with `--no-environment`): each must exist and hold what its option says, so a
//! wrong path is one clear error before any connection is tried. Passwords are
//! [`Secret`]s: no Debug, log line or error shows them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::Secret;

/// `tls = { ... }`: encrypt the connection, verify the broker's certificate.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// `false` turns TLS off while keeping the table (Vector's `tls.enabled`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// PEM file of the certificate authorities that signed the brokers' certificates.
    /// Without it, the system's store (probed at the usual places) is used.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate kwpipe shows the broker (mutual TLS); needs `key_file`.
    pub crt_file: Option<PathBuf>,
    /// PEM private key of `crt_file`, encrypted (then `key_pass`) or not.
    pub key_file: Option<PathBuf>,
    /// Passphrase of an encrypted `key_file`.
    pub key_pass: Option<Secret>,
    /// `false` accepts any certificate: the connection is encrypted, but not to a
    /// broker known to be the right one. For tests only.
    #[serde(default = "yes")]
    pub verify_certificate: bool,
    /// `false` accepts a certificate issued for another host name.
    #[serde(default = "yes")]
    pub verify_hostname: bool,
}

/// `sasl = { ... }`: authenticate with a user name and password (or Kerberos).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SaslOptions {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, or `GSSAPI` (Kerberos, when kwpipe
    /// is built with the `gssapi` feature).
    pub mechanism: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// GSSAPI: the broker's Kerberos service name (librdkafka's default `kafka`).
    pub kerberos_service_name: Option<String>,
    /// GSSAPI: this client's principal.
    pub kerberos_principal: Option<String>,
    /// GSSAPI: the keytab holding the principal's key.
    pub kerberos_keytab: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

/// The mechanisms this build of kwpipe speaks.
pub fn mechanisms() -> &'static [&'static str] {
    if cfg!(feature = "gssapi") {
        &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"]
    } else {
        &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecurityError {
    #[error("`sasl.mechanism` \"{given}\" is not one kwpipe speaks; use one of {known}")]
    UnknownMechanism { given: String, known: String },
    #[error(
        "`sasl.mechanism` GSSAPI (Kerberos) needs kwpipe built with the `gssapi` feature \
         (cargo build --release --features gssapi); see docs/kafka-security.md"
    )]
    NoKerberos,
    #[error("`sasl.{0}` is required with mechanism {1}")]
    Missing(&'static str, String),
    #[error("`{option}` {path}: {reason}")]
    File {
        option: &'static str,
        path: String,
        reason: String,
    },
    #[error("`tls.{0}` needs `tls.{1}` too")]
    Pair(&'static str, &'static str),
    #[error("librdkafka option \"{key}\" is set by the `{table}` table too; set it in one place")]
    Twice { key: String, table: &'static str },
}

/// The `tls` and `sasl` tables of one Kafka component.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security<'a> {
    pub tls: Option<&'a TlsOptions>,
    pub sasl: Option<&'a SaslOptions>,
}

impl Security<'_> {
    pub(crate) fn tls(&self) -> Option<&TlsOptions> {
        self.tls.filter(|t| t.enabled)
    }

    fn sasl(&self) -> Option<&SaslOptions> {
        self.sasl.filter(|s| s.enabled)
    }

    /// Everything that can be told without a broker: the mechanism is known, what
    /// it needs is given, every file exists and holds what it should.
    pub fn check(&self) -> Result<(), SecurityError> {
        if let Some(tls) = self.tls() {
            if let Some(ca) = &tls.ca_file {
                check_pem(ca, "tls.ca_file", &["CERTIFICATE"])?;
            }
            match (&tls.crt_file, &tls.key_file) {
                (Some(crt), Some(key)) => {
                    check_pem(crt, "tls.crt_file", &["CERTIFICATE"])?;
                    check_pem(
                        key,
                        "tls.key_file",
                        &[
                            "PRIVATE KEY",
                            "ENCRYPTED PRIVATE KEY",
                            "RSA PRIVATE KEY",
                            "EC PRIVATE KEY",
                        ],
                    )?;
                }
                (Some(_), None) => return Err(SecurityError::Pair("crt_file", "key_file")),
                (None, Some(_)) => return Err(SecurityError::Pair("key_file", "crt_file")),
                (None, None) => {}
            }
            if tls.key_pass.is_some() && tls.key_file.is_none() {
                return Err(SecurityError::Pair("key_pass", "key_file"));
            }
        }
        if let Some(sasl) = self.sasl() {
            let mechanism = sasl.mechanism.to_ascii_uppercase();
            if mechanism == "GSSAPI" && !cfg!(feature = "gssapi") {
                return Err(SecurityError::NoKerberos);
            }
            if !mechanisms().contains(&mechanism.as_str()) {
                return Err(SecurityError::UnknownMechanism {
                    given: sasl.mechanism.clone(),
                    known: mechanisms().join(", "),
                });
            }
            if mechanism == "GSSAPI" {
                if let Some(keytab) = &sasl.kerberos_keytab {
                    std::fs::metadata(keytab).map_err(|e| SecurityError::File {
                        option: "sasl.kerberos_keytab",
                        path: keytab.display().to_string(),
                        reason: e.to_string(),
                    })?;
                }
            } else {
                if sasl.username.as_deref().unwrap_or("").is_empty() {
                    return Err(SecurityError::Missing("username", mechanism));
                }
                if sasl.password.is_none() {
                    return Err(SecurityError::Missing("password", mechanism));
                }
            }
        }
        Ok(())
    }

    /// The librdkafka properties for these tables, after checking that none of them
    /// is also in `librdkafka_options`. Empty when neither table is given (or both
    /// are disabled): then whatever `librdkafka_options` says applies.
    pub fn properties(
        &self,
        user: &super::LibrdkafkaOptions,
    ) -> Result<Vec<(&'static str, String)>, SecurityError> {
        let mut props: Vec<(&'static str, String)> = Vec::new();
        let (tls, sasl) = (self.tls(), self.sasl());
        let protocol = match (tls.is_some(), sasl.is_some()) {
            (false, false) => return Ok(props),
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        props.push(("security.protocol", protocol.into()));
        if let Some(tls) = tls {
            // librdkafka's default store is the one OpenSSL was built with, which a
            // statically linked OpenSSL does not have: probe the system's usual places.
            let ca = match &tls.ca_file {
                Some(p) => p.display().to_string(),
                None => "probe".into(),
            };
            props.push(("ssl.ca.location", ca));
            if let Some(crt) = &tls.crt_file {
                props.push(("ssl.certificate.location", crt.display().to_string()));
            }
            if let Some(key) = &tls.key_file {
                props.push(("ssl.key.location", key.display().to_string()));
            }
            if let Some(pass) = &tls.key_pass {
                props.push(("ssl.key.password", pass.expose().to_string()));
            }
            props.push((
                "enable.ssl.certificate.verification",
                tls.verify_certificate.to_string(),
            ));
            let algorithm = if tls.verify_hostname && tls.verify_certificate {
                "https"
            } else {
                "none"
            };
            props.push(("ssl.endpoint.identification.algorithm", algorithm.into()));
        }
        if let Some(sasl) = sasl {
            props.push(("sasl.mechanisms", sasl.mechanism.to_ascii_uppercase()));
            if let Some(u) = &sasl.username {
                props.push(("sasl.username", u.clone()));
            }
            if let Some(p) = &sasl.password {
                props.push(("sasl.password", p.expose().to_string()));
            }
            if let Some(s) = &sasl.kerberos_service_name {
                props.push(("sasl.kerberos.service.name", s.clone()));
            }
            if let Some(p) = &sasl.kerberos_principal {
                props.push(("sasl.kerberos.principal", p.clone()));
            }
            if let Some(k) = &sasl.kerberos_keytab {
                props.push(("sasl.kerberos.keytab", k.display().to_string()));
            }
        }
        for (key, _) in &props {
            if user.get(key).is_some() {
                let table = if key.starts_with("sasl.") {
                    "sasl"
                } else {
                    "tls"
                };
                return Err(SecurityError::Twice {
                    key: key.to_string(),
                    table,
                });
            }
        }
        Ok(props)
    }
}

/// The file exists, is PEM, and holds at least one block of one of `labels`.
fn check_pem(path: &Path, option: &'static str, labels: &[&str]) -> Result<(), SecurityError> {
    let err = |reason: String| SecurityError::File {
        option,
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&text);
    let found: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN "))
        .filter_map(|l| l.strip_suffix("-----"))
        .collect();
    if found.is_empty() {
        return Err(err(
            "is not a PEM file (no -----BEGIN ...----- line); JKS and PKCS#12 stores must be \
             converted to PEM first (see docs/kafka-security.md)"
                .into(),
        ));
    }
    if !found.iter().any(|f| labels.contains(f)) {
        return Err(err(format!(
            "holds {} where {} was expected",
            found.join(", "),
            labels[0]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::LibrdkafkaOptions;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tls(toml_text: &str) -> TlsOptions {
        toml::from_str(toml_text).unwrap()
    }

    fn sasl(toml_text: &str) -> SaslOptions {
        toml::from_str(toml_text).unwrap()
    }

    fn tls_only(t: &TlsOptions) -> Security<'_> {
        Security {
            tls: Some(t),
            sasl: None,
        }
    }

    fn sasl_only(s: &SaslOptions) -> Security<'_> {
        Security {
            tls: None,
            sasl: Some(s),
        }
    }

    fn props(s: &Security) -> Vec<(&'static str, String)> {
        s.properties(&LibrdkafkaOptions::default()).unwrap()
    }

    fn get<'a>(props: &'a [(&str, String)], key: &str) -> Option<&'a str> {
        props
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn tls_and_sasl_together_are_sasl_ssl() {
        let dir = tempfile::tempdir().unwrap();
        let ca = file(&dir, "ca.pem", CERT);
        let t = tls(&format!("ca_file = {:?}", ca.display().to_string()));
        let s = sasl(
            r#"mechanism = "scram-sha-512"
username = "app"
password = "hunter2""#,
        );
        let sec = Security {
            tls: Some(&t),
            sasl: Some(&s),
        };
        sec.check().unwrap();
        let p = props(&sec);
        assert_eq!(get(&p, "security.protocol"), Some("sasl_ssl"));
        assert_eq!(get(&p, "sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(get(&p, "sasl.password"), Some("hunter2"));
        assert_eq!(get(&p, "ssl.ca.location"), Some(ca.to_str().unwrap()));
        assert_eq!(
            get(&p, "ssl.endpoint.identification.algorithm"),
            Some("https")
        );
        assert!(!format!("{sec:?}").contains("hunter2"));
    }

    #[test]
    fn each_table_alone_picks_its_protocol() {
        let t = tls("");
        let p = props(&tls_only(&t));
        assert_eq!(get(&p, "security.protocol"), Some("ssl"));
        assert_eq!(get(&p, "ssl.ca.location"), Some("probe"));
        let s = sasl("mechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"p\"");
        let p = props(&sasl_only(&s));
        assert_eq!(get(&p, "security.protocol"), Some("sasl_plaintext"));
        let off = tls("enabled = false");
        assert!(props(&tls_only(&off)).is_empty());
    }

    #[test]
    fn verification_can_be_loosened_step_by_step() {
        let t = tls("verify_hostname = false");
        let p = props(&tls_only(&t));
        assert_eq!(get(&p, "enable.ssl.certificate.verification"), Some("true"));
        assert_eq!(
            get(&p, "ssl.endpoint.identification.algorithm"),
            Some("none")
        );
        let t = tls("verify_certificate = false");
        let p = props(&tls_only(&t));
        assert_eq!(
            get(&p, "enable.ssl.certificate.verification"),
            Some("false")
        );
    }

    #[test]
    fn files_are_checked_with_the_option_named() {
        let dir = tempfile::tempdir().unwrap();
        let key = file(&dir, "key.pem", KEY);
        let t = tls(&format!(
            "ca_file = {:?}",
            dir.path().join("missing.pem").display().to_string()
        ));
        let e = tls_only(&t).check().unwrap_err().to_string();
        assert!(
            e.starts_with("`tls.ca_file`") && e.contains("missing.pem"),
            "{e}"
        );
        // A key where a certificate belongs.
        let t = tls(&format!("ca_file = {:?}", key.display().to_string()));
        let e = tls_only(&t).check().unwrap_err().to_string();
        assert!(e.contains("PRIVATE KEY where CERTIFICATE"), "{e}");
        // A binary keystore.
        let jks = file(&dir, "store.jks", "\u{feed}\u{feed}binary");
        let t = tls(&format!("ca_file = {:?}", jks.display().to_string()));
        let e = tls_only(&t).check().unwrap_err().to_string();
        assert!(e.contains("not a PEM file"), "{e}");
        let t = tls(&format!("key_file = {:?}", key.display().to_string()));
        assert_eq!(
            tls_only(&t).check(),
            Err(SecurityError::Pair("key_file", "crt_file"))
        );
    }

    #[test]
    fn unknown_mechanisms_and_missing_credentials_are_refused() {
        let s = sasl("mechanism = \"OAUTH\"\nusername = \"u\"\npassword = \"p\"");
        let e = sasl_only(&s).check().unwrap_err().to_string();
        assert!(
            e.contains("\"OAUTH\"") && e.contains("SCRAM-SHA-512"),
            "{e}"
        );
        let s = sasl("mechanism = \"PLAIN\"\nusername = \"u\"");
        assert_eq!(
            sasl_only(&s).check(),
            Err(SecurityError::Missing("password", "PLAIN".into()))
        );
        if !cfg!(feature = "gssapi") {
            let s = sasl("mechanism = \"GSSAPI\"");
            assert_eq!(sasl_only(&s).check(), Err(SecurityError::NoKerberos));
        }
    }

    #[test]
    fn the_same_property_set_twice_is_an_error() {
        let s = sasl("mechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"p\"");
        let mut user = LibrdkafkaOptions::default();
        user.0.insert("sasl.username".into(), "other".into());
        let e = sasl_only(&s).properties(&user).unwrap_err();
        assert_eq!(
            e,
            SecurityError::Twice {
                key: "sasl.username".into(),
                table: "sasl"
            }
        );
    }
}
