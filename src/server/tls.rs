//! HTTPS with rustls: the server certificate (reloaded when its files
//! change), optional client certificates (`http.tls.clientcas`), and the
//! minimum protocol version.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use crate::auth::token::read_certs;
use crate::config::{TlsConfig, TlsVersion};

/// How often a handshake may look at the certificate files' times.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// The rustls configuration for `http.tls`.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match cfg.minimum {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("http.tls: {e}"))?;
    let builder = if cfg.clientcas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for file in &cfg.clientcas {
            for cert in read_certs(file)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("http.tls.clientcas {}: {e}", file.display()))?;
            }
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("http.tls.clientcas: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    };
    let resolver = ReloadingCert::new(&cfg.certificate, &cfg.key, provider)?;
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = read_certs(cert).map_err(|e| format!("http.tls.certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("http.tls.key {}: {e}", key.display()))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("http.tls.key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("http.tls: the key does not belong to the certificate: {e}"))?;
    Ok(certified)
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The server certificate, re-read when the files' modification times
/// change (checked at most every two seconds, on a handshake). A pair that
/// does not load keeps the previous one in service.
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    state: RwLock<CertState>,
}

#[derive(Debug)]
struct CertState {
    current: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl ReloadingCert {
    fn new(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCert, String> {
        let current = Arc::new(load(cert, key, &provider)?);
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            state: RwLock::new(CertState {
                current,
                stamps: (mtime(cert), mtime(key)),
                checked: Instant::now(),
            }),
        })
    }

    fn refresh(&self) {
        if self.state.read().unwrap().checked.elapsed() < RELOAD_CHECK {
            return;
        }
        let mut state = self.state.write().unwrap();
        state.checked = Instant::now();
        let stamps = (mtime(&self.cert), mtime(&self.key));
        if stamps == state.stamps {
            return;
        }
        match load(&self.cert, &self.key, &self.provider) {
            Ok(k) => {
                state.current = Arc::new(k);
                state.stamps = stamps;
                tracing::info!(certificate = %self.cert.display(), "TLS certificate reloaded");
            }
            // Often the certificate is written before its key: try again
            // at the next check, and keep serving the old pair meanwhile.
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate not reloaded; keeping the previous one")
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        Some(self.state.read().unwrap().current.clone())
    }
}

/// The answer to a plain-HTTP request on the TLS port.
pub const PLAIN_HTTP_REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 47\r\n\r\nThis port speaks HTTPS: use https:// instead.\r\n";
