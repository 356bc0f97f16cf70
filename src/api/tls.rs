//! TLS with rustls (ring provider) for the agent's listener and its peer client (`[tls]`):
//! server certificate and key, optional mutual TLS (client certificates chaining to
//! `client_ca_file`), and the CA peers' certificates must chain to (`ca_file`). A plain-HTTP
//! client of a TLS listener, or a certificate from another CA, fails the handshake: the
//! connection is closed and nothing is served.

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: cannot read {what} {path}: {why}")]
    Read {
        what: &'static str,
        path: String,
        why: String,
    },
    #[error("tls: {path} holds no PEM certificate")]
    NoCert { path: String },
    #[error("tls: the key file {path} is readable by group or others (mode {mode:04o}): `chmod 600 {path}`")]
    KeyPermissions { path: String, mode: u32 },
    #[error("tls: {0}")]
    Config(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |why: String| TlsError::Read {
        what,
        path: path.to_string(),
        why,
    };
    let v: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(e.to_string()))?;
    if v.is_empty() {
        return Err(TlsError::NoCert {
            path: path.to_string(),
        });
    }
    Ok(v)
}

fn roots(path: &str) -> Result<RootCertStore, TlsError> {
    let mut r = RootCertStore::empty();
    for c in certs(path, "the CA file")? {
        r.add(c)
            .map_err(|e| TlsError::Config(format!("{path}: not a usable CA certificate: {e}")))?;
    }
    Ok(r)
}

fn key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let meta = std::fs::metadata(path).map_err(|e| TlsError::Read {
        what: "the key file",
        path: path.to_string(),
        why: e.to_string(),
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyPermissions {
            path: path.to_string(),
            mode,
        });
    }
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        what: "the key file",
        path: path.to_string(),
        why: e.to_string(),
    })
}

/// The listener's TLS, when `cert_file` and `key_file` are set.
pub fn acceptor(t: &TlsConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, TlsError> {
    if t.cert_file.is_empty() {
        return Ok(None);
    }
    let chain = certs(&t.cert_file, "the certificate file")?;
    let key = key(&t.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if t.client_ca_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(&t.client_ca_file)?),
            provider(),
        )
        .build()
        .map_err(|e| TlsError::Config(format!("client_ca_file: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("cert_file/key_file: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))))
}

/// The peer client's TLS (https:// urls): trusts `ca_file`, shows `cert_file` when set.
pub fn client(t: &TlsConfig) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    if t.ca_file.is_empty() {
        return Ok(None);
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(&t.ca_file)?);
    let mut cfg = if t.cert_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder
            .with_client_auth_cert(
                certs(&t.cert_file, "the certificate file")?,
                key(&t.key_file)?,
            )
            .map_err(|e| TlsError::Config(format!("cert_file/key_file as client: {e}")))?
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(cfg)))
}

/// The process's peer client TLS, and the name this node's own certificate is checked under
/// when `ctl` reaches its agent on a loopback address.
struct ClientTls {
    config: Option<Arc<ClientConfig>>,
    local_name: Option<String>,
}

static CLIENT: OnceLock<ClientTls> = OnceLock::new();

/// Set the peer client's TLS once per process (the agent: `local_name` None; `ctl`: its node's
/// name). Later calls are ignored.
pub fn init_client(t: &TlsConfig, local_name: Option<String>) -> Result<(), TlsError> {
    let config = client(t)?;
    let _ = CLIENT.set(ClientTls { config, local_name });
    Ok(())
}

/// The TLS client config and the server name to verify for `host` (no port), or why not.
pub(crate) fn for_host(host: &str) -> Result<(Arc<ClientConfig>, ServerName<'static>), String> {
    let c = CLIENT.get().and_then(|c| c.config.clone().map(|k| (k, c)));
    let Some((config, c)) = c else {
        return Err(
            "https:// needs [tls] ca_file (the CA the agent's certificate chains to)".into(),
        );
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = match &c.local_name {
        Some(n) if crate::config::is_loopback_host(bare) => n.clone(),
        _ => bare.to_string(),
    };
    let sn = ServerName::try_from(name.clone())
        .map_err(|e| format!("{name:?} is not a host name or address for TLS: {e}"))?;
    Ok((config, sn))
}
