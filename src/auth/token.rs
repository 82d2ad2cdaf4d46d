//! `auth.token`: Docker's bearer-token flow. The registry never issues
//! tokens; it sends clients to `realm` with a challenge naming the scope it
//! needs, and verifies the JWTs they bring back: signature (by a
//! certificate of `rootcertbundle`), issuer, audience (`service`), expiry,
//! and the `access` claim, which lists the only actions the token grants.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use super::access::Action;
use crate::config::TokenConfig;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm {0:?}")]
    Algorithm(String),
    #[error("token signature does not verify against auth.token.rootcertbundle")]
    Signature,
    #[error("token issuer {0:?} is not auth.token.issuer")]
    Issuer(String),
    #[error("token audience does not include auth.token.service")]
    Audience,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
}

/// What a verified token grants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    pub subject: String,
    repositories: HashMap<String, HashSet<String>>,
    catalog: bool,
}

impl Grant {
    pub fn allows(&self, repo: &str, action: Action) -> bool {
        self.repositories
            .get(repo)
            .is_some_and(|a| a.contains("*") || a.contains(action.as_str()))
    }

    pub fn catalog(&self) -> bool {
        self.catalog
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    x5c: Vec<String>,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    #[serde(default)]
    sub: String,
    aud: Option<Audience>,
    exp: Option<u64>,
    nbf: Option<u64>,
    #[serde(default)]
    access: Vec<AccessEntry>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct AccessEntry {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(default)]
    actions: Vec<String>,
}

pub struct TokenVerifier {
    pub realm: String,
    pub service: String,
    issuer: String,
    roots: Vec<CertificateDer<'static>>,
}

impl TokenVerifier {
    pub fn new(config: &TokenConfig) -> Result<TokenVerifier, String> {
        let roots = read_certs(&config.rootcertbundle)?;
        Ok(TokenVerifier {
            realm: config.realm.clone(),
            service: config.service.clone(),
            issuer: config.issuer.clone(),
            roots,
        })
    }

    pub fn verify(&self, token: &str) -> Result<Grant, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |s: &str| {
            URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .map_err(|_| TokenError::Malformed)
        };
        let header: Header =
            serde_json::from_slice(&decode(h)?).map_err(|_| TokenError::Malformed)?;
        let signature = decode(sig)?;
        let signed = &token[..h.len() + 1 + p.len()];
        self.check_signature(&header, signed.as_bytes(), &signature)?;
        let claims: Claims =
            serde_json::from_slice(&decode(p)?).map_err(|_| TokenError::Malformed)?;
        let iss = claims.iss.unwrap_or_default();
        if iss != self.issuer {
            return Err(TokenError::Issuer(iss));
        }
        let aud_ok = match &claims.aud {
            Some(Audience::One(a)) => *a == self.service,
            Some(Audience::Many(list)) => list.contains(&self.service),
            None => false,
        };
        if !aud_ok {
            return Err(TokenError::Audience);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        match claims.exp {
            Some(exp) if exp + LEEWAY_SECS >= now => {}
            _ => return Err(TokenError::Expired),
        }
        if claims.nbf.is_some_and(|nbf| nbf > now + LEEWAY_SECS) {
            return Err(TokenError::NotYetValid);
        }
        let mut grant = Grant {
            subject: claims.sub,
            ..Grant::default()
        };
        for entry in claims.access {
            match entry.kind.as_str() {
                "repository" => {
                    grant
                        .repositories
                        .entry(entry.name)
                        .or_default()
                        .extend(entry.actions);
                }
                "registry" if entry.name == "catalog" => {
                    grant.catalog |= entry.actions.iter().any(|a| a == "*");
                }
                _ => {}
            }
        }
        Ok(grant)
    }

    /// The signature must verify with the key of a root certificate: the
    /// one named by `x5c` (which must itself be in the bundle), or any.
    fn check_signature(
        &self,
        header: &Header,
        signed: &[u8],
        signature: &[u8],
    ) -> Result<(), TokenError> {
        let (alg, sig) = algorithm(&header.alg, signature)?;
        let candidates: Vec<&CertificateDer> = match header.x5c.first() {
            Some(leaf) => {
                let leaf = STANDARD.decode(leaf).map_err(|_| TokenError::Malformed)?;
                self.roots
                    .iter()
                    .filter(|r| r.as_ref() == leaf.as_slice())
                    .collect()
            }
            None => self.roots.iter().collect(),
        };
        for cert in candidates {
            let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
                continue;
            };
            if ee.verify_signature(alg, signed, &sig).is_ok() {
                return Ok(());
            }
        }
        Err(TokenError::Signature)
    }
}

/// The verification algorithm for a JWT `alg`, and the signature in the
/// form it expects (JWT's ECDSA signatures are raw r||s; webpki takes DER).
fn algorithm(
    alg: &str,
    sig: &[u8],
) -> Result<
    (
        &'static dyn rustls_pki_types::SignatureVerificationAlgorithm,
        Vec<u8>,
    ),
    TokenError,
> {
    use webpki::ring as algs;
    Ok(match alg {
        "RS256" => (algs::RSA_PKCS1_2048_8192_SHA256, sig.to_vec()),
        "RS384" => (algs::RSA_PKCS1_2048_8192_SHA384, sig.to_vec()),
        "RS512" => (algs::RSA_PKCS1_2048_8192_SHA512, sig.to_vec()),
        "PS256" => (algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY, sig.to_vec()),
        "PS384" => (algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY, sig.to_vec()),
        "PS512" => (algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY, sig.to_vec()),
        "ES256" => (algs::ECDSA_P256_SHA256, ecdsa_der(sig, 32)?),
        "ES384" => (algs::ECDSA_P384_SHA384, ecdsa_der(sig, 48)?),
        "EdDSA" => (algs::ED25519, sig.to_vec()),
        other => return Err(TokenError::Algorithm(other.to_string())),
    })
}

/// Raw `r || s` (each `n` bytes) to a DER `SEQUENCE { INTEGER r, INTEGER s }`.
fn ecdsa_der(sig: &[u8], n: usize) -> Result<Vec<u8>, TokenError> {
    if sig.len() != 2 * n {
        return Err(TokenError::Signature);
    }
    let int = |x: &[u8]| {
        let x = &x[x.iter().position(|&b| b != 0).unwrap_or(x.len() - 1)..];
        let mut out = vec![0x02];
        if x[0] & 0x80 != 0 {
            out.push((x.len() + 1) as u8);
            out.push(0);
        } else {
            out.push(x.len() as u8);
        }
        out.extend_from_slice(x);
        out
    };
    let (r, s) = (int(&sig[..n]), int(&sig[n..]));
    let mut der = vec![0x30, (r.len() + s.len()) as u8];
    der.extend(r);
    der.extend(s);
    Ok(der)
}

/// Every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: bad certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn verifier() -> TokenVerifier {
        TokenVerifier {
            realm: "https://auth.example/token".into(),
            service: "registry".into(),
            issuer: "issuer".into(),
            roots: vec![],
        }
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    proptest! {
        #[test]
        fn any_text_is_refused_as_a_token(token in "\\PC{0,200}") {
            prop_assert!(verifier().verify(&token).is_err());
        }

        #[test]
        fn tokens_of_the_right_shape_are_refused_without_a_valid_signature(
            alg in prop_oneof![
                Just("ES256".to_string()),
                Just("RS256".to_string()),
                Just("none".to_string()),
                "[A-Z0-9]{0,6}",
            ],
            x5c in proptest::collection::vec("[A-Za-z0-9+/]{0,40}={0,2}", 0..3),
            claims in "\\PC{0,80}",
            sig in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let header = serde_json::json!({"alg": alg, "x5c": x5c}).to_string();
            let token = format!(
                "{}.{}.{}",
                b64(&header),
                b64(&claims),
                URL_SAFE_NO_PAD.encode(&sig)
            );
            prop_assert!(verifier().verify(&token).is_err());
        }
    }
}
