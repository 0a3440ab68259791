//! TLS settings shared by receivers (server side) and exporters (client side), on rustls with
//! the ring provider.
//!
//! Certificate and key files are read and checked while the configuration is parsed, so
//! `tollgate validate` reports a missing or malformed file with its YAML path.

pub mod connector;

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{Diagnostics, Map};

/// The crypto provider every TLS context uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCert { path: String },
    #[error("{path} is not a PEM private key: {detail}")]
    BadKey { path: String, detail: String },
    #[error("{path}: {detail}")]
    BadCert { path: String, detail: String },
    #[error("{0}")]
    Rustls(String),
}

/// The PEM text of a certificate chain and its key (for tonic's own TLS types).
#[derive(Clone)]
pub struct PemIdentity {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for PemIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PemIdentity(..)")
    }
}

/// Server-side TLS of a receiver protocol: `tls: { cert_file, key_file, client_ca_file }`.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub identity: PemIdentity,
    /// PEM CA bundle: when set, clients must present a certificate it signed (mTLS).
    pub client_ca: Option<Vec<u8>>,
    /// The checked rustls configuration (ALPN h2 and http/1.1).
    pub config: Arc<rustls::ServerConfig>,
}

/// Client-side TLS of an exporter: `tls: { insecure, insecure_skip_verify, ca_file, cert_file,
/// key_file }`.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// Plaintext (no TLS at all).
    pub insecure: bool,
    /// Accept any server certificate (warned about at start).
    pub insecure_skip_verify: bool,
    /// PEM CA bundle to trust instead of the system's roots.
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key, for backends that require mTLS.
    pub identity: Option<PemIdentity>,
}

fn read(path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(Path::new(path)).map_err(|source| TlsError::Read {
        path: path.to_string(),
        source,
    })
}

fn certs(path: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCert {
            path: path.to_string(),
            detail: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: path.to_string(),
        });
    }
    Ok(certs)
}

fn key(path: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::BadKey {
        path: path.to_string(),
        detail: e.to_string(),
    })
}

fn roots(path: &str, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path, pem)? {
        store.add(c).map_err(|e| TlsError::BadCert {
            path: path.to_string(),
            detail: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(store)
}

impl ServerTls {
    /// Reads the files and builds the rustls configuration.
    pub fn load(
        cert_file: &str,
        key_file: &str,
        client_ca_file: Option<&str>,
    ) -> Result<ServerTls, TlsError> {
        let cert_pem = read(cert_file)?;
        let key_pem = read(key_file)?;
        let chain = certs(cert_file, &cert_pem)?;
        let private = key(key_file, &key_pem)?;
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let (builder, client_ca) = match client_ca_file {
            Some(ca_file) => {
                let ca_pem = read(ca_file)?;
                let store = roots(ca_file, &ca_pem)?;
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(store),
                    provider,
                )
                .build()
                .map_err(|e| TlsError::BadCert {
                    path: ca_file.to_string(),
                    detail: e.to_string(),
                })?;
                (builder.with_client_cert_verifier(verifier), Some(ca_pem))
            }
            None => (builder.with_no_client_auth(), None),
        };
        let mut config =
            builder
                .with_single_cert(chain, private)
                .map_err(|e| TlsError::BadKey {
                    path: key_file.to_string(),
                    detail: format!("does not match {cert_file}: {e}"),
                })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            identity: PemIdentity {
                cert: cert_pem,
                key: key_pem,
            },
            client_ca,
            config: Arc::new(config),
        })
    }

    /// The same settings as tonic's server TLS configuration.
    pub fn tonic(&self) -> tonic::transport::ServerTlsConfig {
        let mut c = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&self.identity.cert, &self.identity.key),
        );
        if let Some(ca) = &self.client_ca {
            c = c.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        c
    }
}

/// A file an option names, as read (phase 1): recorded, not opened. Problems found when it is
/// loaded go to `at` (its YAML path) and `slot` (its place in the report).
#[derive(Debug, Clone)]
pub struct NamedFile {
    /// The file's path as configured.
    pub file: String,
    /// The YAML path its problems are reported at.
    pub at: String,
    /// Where in the report those problems go.
    pub slot: crate::config::node::Slot,
}

/// A receiver protocol's `tls` block as read: the files it names, not yet loaded.
#[derive(Debug, Clone)]
pub struct ServerTlsConfig {
    /// `cert_file`: the PEM certificate chain.
    pub cert_file: String,
    /// `key_file`: the PEM private key.
    pub key_file: String,
    /// `client_ca_file`: the CA bundle clients' certificates must chain to (mTLS).
    pub client_ca_file: Option<String>,
    /// The `tls` block's path, where the files' problems are reported.
    pub at: String,
    /// The place of those problems in the report.
    pub slot: crate::config::node::Slot,
}

/// Reads a receiver protocol's `tls` block (absent: plaintext). `None` also when it has
/// problems (reported).
pub fn read_server(m: &Map<'_>, d: &mut Diagnostics) -> Option<ServerTlsConfig> {
    let t = m.map("tls", d)?;
    let cert = t.str("cert_file", d);
    let key = t.str("key_file", d);
    let ca = t.str("client_ca_file", d);
    t.finish(d);
    let (Some(cert), Some(key)) = (cert, key) else {
        d.error(
            t.path().to_string(),
            "a TLS listener needs both cert_file and key_file",
        );
        return None;
    };
    Some(ServerTlsConfig {
        cert_file: cert,
        key_file: key,
        client_ca_file: ca,
        at: t.path().to_string(),
        slot: d.slot(),
    })
}

impl ServerTlsConfig {
    /// Loads the files (problems reported at the block's path and place).
    pub fn load(&self, d: &mut Diagnostics) -> Option<ServerTls> {
        match ServerTls::load(
            &self.cert_file,
            &self.key_file,
            self.client_ca_file.as_deref(),
        ) {
            Ok(s) => Some(s),
            Err(e) => {
                d.error_at(self.slot, self.at.clone(), e.to_string());
                None
            }
        }
    }
}

/// An exporter's `tls` block as read: the files it names, not yet loaded.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsConfig {
    /// `insecure`: plaintext (no TLS at all).
    pub insecure: bool,
    /// `insecure_skip_verify`: accept any server certificate.
    pub insecure_skip_verify: bool,
    /// `ca_file`: PEM CA bundle to trust instead of the system's roots.
    pub ca_file: Option<NamedFile>,
    /// `cert_file` and `key_file` (problems at the `tls` path): the client certificate.
    pub identity: Option<(NamedFile, String)>,
}

/// Reads an exporter's `tls` block (absent: TLS with the system's roots when the endpoint
/// asks for it). No I/O: [`ClientTlsConfig::load`] reads the files.
pub fn read_client(m: &Map<'_>, d: &mut Diagnostics) -> ClientTlsConfig {
    let Some(t) = m.map("tls", d) else {
        return ClientTlsConfig::default();
    };
    let mut out = ClientTlsConfig {
        insecure: t.bool("insecure", d).unwrap_or(false),
        insecure_skip_verify: t.bool("insecure_skip_verify", d).unwrap_or(false),
        ..Default::default()
    };
    if let Some(ca) = t.str("ca_file", d) {
        out.ca_file = Some(NamedFile {
            file: ca,
            at: t.key_path("ca_file"),
            slot: d.slot(),
        });
    }
    let cert = t.str("cert_file", d);
    let key_file = t.str("key_file", d);
    match (cert, key_file) {
        (Some(c), Some(k)) => {
            out.identity = Some((
                NamedFile {
                    file: c,
                    at: t.path().to_string(),
                    slot: d.slot(),
                },
                k,
            ));
        }
        (None, None) => {}
        _ => d.error(
            t.path().to_string(),
            "a client certificate needs both cert_file and key_file",
        ),
    }
    t.finish(d);
    out
}

impl ClientTlsConfig {
    /// Loads the files it names (problems reported where their keys were read).
    pub fn load(&self, d: &mut Diagnostics) -> ClientTls {
        let mut out = ClientTls {
            insecure: self.insecure,
            insecure_skip_verify: self.insecure_skip_verify,
            ..Default::default()
        };
        if let Some(ca) = &self.ca_file {
            match read(&ca.file).and_then(|pem| roots(&ca.file, &pem).map(|_| pem)) {
                Ok(pem) => out.ca = Some(pem),
                Err(e) => d.error_at(ca.slot, ca.at.clone(), e.to_string()),
            }
        }
        if let Some((c, k)) = &self.identity {
            let loaded = read(&c.file).and_then(|cp| {
                certs(&c.file, &cp)?;
                let kp = read(k)?;
                key(k, &kp)?;
                Ok(PemIdentity { cert: cp, key: kp })
            });
            match loaded {
                Ok(id) => out.identity = Some(id),
                Err(e) => d.error_at(c.slot, c.at.clone(), e.to_string()),
            }
        }
        out
    }
}

impl ClientTls {
    /// How the server's certificate is checked: the configured CA, else the system's roots;
    /// nothing at all with `insecure_skip_verify`.
    pub fn verifier(&self) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
        let provider = provider();
        if self.insecure_skip_verify {
            return Ok(Arc::new(NoVerify(provider)));
        }
        let store = match &self.ca {
            Some(pem) => roots("tls.ca_file", pem)?,
            None => {
                let found = rustls_native_certs::load_native_certs();
                let mut store = RootCertStore::empty();
                let (added, _) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(TlsError::Rustls(
                        "no system CA certificates found; set tls.ca_file".into(),
                    ));
                }
                store
            }
        };
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map(|v| v as Arc<dyn ServerCertVerifier>)
            .map_err(|e| TlsError::Rustls(e.to_string()))
    }

    /// A rustls client configuration (HTTP/1.1 ALPN) for the HTTP exporter.
    pub fn rustls_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier()?);
        let mut config = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(
                    certs("tls.cert_file", &id.cert)?,
                    key("tls.key_file", &id.key)?,
                )
                .map_err(|e| TlsError::Rustls(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Logs the warning `insecure_skip_verify` deserves (once per exporter, at start).
    pub fn warn_if_unverified(&self, exporter: &str) {
        if self.insecure_skip_verify && !self.insecure {
            tracing::warn!(
                exporter,
                "tls.insecure_skip_verify is set: the backend's certificate is NOT verified, so anyone on the path can impersonate it"
            );
        }
    }
}

/// A verifier that accepts any certificate (but still checks handshake signatures).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
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
