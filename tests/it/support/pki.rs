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

/// A token service of the test's own on 127.0.0.1: it checks Basic
/// `robot:secret` and signs a JWT granting whatever each scope asks.
pub fn token_service(signer: TokenSigner) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut authorized = false;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                // base64("robot:secret")
                authorized |= h.to_ascii_lowercase().starts_with("authorization:")
                    && h.contains("cm9ib3Q6c2VjcmV0");
            }
            let mut out = stream;
            if !authorized {
                let _ = out.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let query = target.split_once('?').map(|x| x.1).unwrap_or("");
            let access: Vec<serde_json::Value> = form_urlencoded::parse(query.as_bytes())
                .filter(|(k, _)| k == "scope")
                .filter_map(|(_, scope)| {
                    let (kind, rest) = scope.split_once(':')?;
                    let (name, actions) = rest.rsplit_once(':')?;
                    Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                })
                .collect();
            let now = now() as i64;
            let jwt = signer.sign(
                &serde_json::json!({"iss": "test-issuer", "sub": "robot", "aud": "registry.test", "exp": now + 300, "nbf": now - 10, "iat": now - 10, "access": access}),
                false,
            );
            let body = serde_json::json!({ "token": jwt }).to_string();
            let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    addr
}
