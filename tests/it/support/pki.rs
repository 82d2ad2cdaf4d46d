//! Certificates and tokens made by the tests: a CA, server and client
//! certificates for TLS, and a key that signs bearer tokens.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA that signs server and client certificates into a directory.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub dir: PathBuf,
    pub cert: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let cert = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&cert, issuer.pem()).unwrap();
        Ca {
            issuer,
            dir: dir.to_path_buf(),
            cert,
        }
    }

    /// A leaf certificate for `names` (DNS names or IP addresses); returns
    /// the paths of its certificate and key.
    pub fn issue(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.dir.join(format!("{file}.crt")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// An ECDSA P-256 key with a self-signed certificate, signing ES256 JWTs.
pub struct TokenSigner {
    key: ring::signature::EcdsaKeyPair,
    pub cert_der: Vec<u8>,
    pub bundle: PathBuf,
}

impl TokenSigner {
    pub fn new(dir: &Path, name: &str) -> TokenSigner {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let rc_key = KeyPair::try_from(pkcs8.as_ref()).unwrap();
        let params = CertificateParams::new(vec![format!("{name}.token-signer")]).unwrap();
        let cert = params.self_signed(&rc_key).unwrap();
        let bundle = dir.join(format!("{name}-bundle.pem"));
        std::fs::write(&bundle, cert.pem()).unwrap();
        TokenSigner {
            key,
            cert_der: cert.der().to_vec(),
            bundle,
        }
    }

    /// A signed JWT with these claims (and the certificate in `x5c` if asked).
    pub fn sign(&self, claims: &serde_json::Value, with_x5c: bool) -> String {
        let mut header = serde_json::json!({"typ": "JWT", "alg": "ES256"});
        if with_x5c {
            header["x5c"] = serde_json::json!([STANDARD.encode(&self.cert_der)]);
        }
        let enc = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let signed = format!("{}.{}", enc(&header), enc(claims));
        let rng = ring::rand::SystemRandom::new();
        let sig = self.key.sign(&rng, signed.as_bytes()).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
