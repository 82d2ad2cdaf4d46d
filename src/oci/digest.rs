//! Content digests (`algorithm:hex`) and the streaming hasher that produces them.
//!
//! Only the algorithms the spec registers for content are accepted: `sha256`
//! (the default) and `sha512`. The encoded part must be lowercase hex of the
//! algorithm's exact length, which also makes a digest safe to use in a path.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// A hash algorithm we can verify content with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex encoding of this algorithm's output.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }
}

/// A validated content digest such as `sha256:e3b0c442...`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest must have the form algorithm:hex")]
    Malformed,
    #[error("unsupported digest algorithm {0:?} (sha256 and sha512 are supported)")]
    UnsupportedAlgorithm(String),
    #[error("digest hex must be {expected} lowercase hex characters")]
    BadEncoding { expected: usize },
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded (hex) part, without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Digest of a complete byte slice.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut h = algorithm.hasher();
        h.update(data);
        h.finish()
    }

    /// The digest the layout stores under the directory names `<alg>` and
    /// `<hex>` (`blobs/<alg>/../<hex>`, `_layers/<alg>/<hex>`); `None` if
    /// they name none.
    pub fn from_layout(alg: &str, hex: &str) -> Option<Digest> {
        format!("{alg}:{hex}").parse().ok()
    }

    /// The sha256 digest of `data`, the default algorithm for new content.
    pub fn sha256(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s.split_once(':').ok_or(DigestError::Malformed)?;
        if alg.is_empty() || hex.is_empty() {
            return Err(DigestError::Malformed);
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                // The grammar allows other algorithms; we can't verify them.
                let grammar_ok = other
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
                return Err(if grammar_ok {
                    DigestError::UnsupportedAlgorithm(other.to_string())
                } else {
                    DigestError::Malformed
                });
            }
        };
        let expected = algorithm.hex_len();
        let valid = hex.len() == expected
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(DigestError::BadEncoding { expected });
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for one of the supported algorithms.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The state after the bytes so far, to continue elsewhere
    /// (`resume`); `None` for other algorithms than SHA-256.
    pub fn save(&self) -> Option<Vec<u8>> {
        use sha2::digest::common::hazmat::SerializableState;
        match self {
            Hasher::Sha256(h) => Some(h.serialize().to_vec()),
            Hasher::Sha512(_) => None,
        }
    }

    /// A hasher continuing from a saved state; `None` if it is not one.
    pub fn resume(algorithm: Algorithm, state: &[u8]) -> Option<Hasher> {
        use sha2::digest::common::hazmat::SerializableState;
        match algorithm {
            Algorithm::Sha256 => {
                let state = state.try_into().ok()?;
                Sha256::deserialize(state).ok().map(Hasher::Sha256)
            }
            Algorithm::Sha512 => None,
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_displays() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(Digest::sha256(b""), d);
    }

    #[test]
    fn rejects_malformed() {
        let cases: &[(&str, DigestError)] = &[
            ("", DigestError::Malformed),
            ("sha256", DigestError::Malformed),
            (":abc", DigestError::Malformed),
            ("sha256:", DigestError::Malformed),
            ("sha256:abc", DigestError::BadEncoding { expected: 64 }),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                DigestError::BadEncoding { expected: 64 },
            ),
            (
                "sha256:../../../../etc/passwd000000000000000000000000000000000000000",
                DigestError::BadEncoding { expected: 64 },
            ),
            ("md5:abcd", DigestError::UnsupportedAlgorithm("md5".into())),
            ("SHA256:abcd", DigestError::Malformed),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Digest>().unwrap_err(), *want, "{input}");
        }
    }

    #[test]
    fn sha512_round_trip() {
        let d = Digest::of(Algorithm::Sha512, b"abc");
        assert_eq!(d.hex().len(), 128);
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn saved_state_resumes() {
        let mut h = Algorithm::Sha256.hasher();
        h.update(&[7u8; 100]);
        let saved = h.save().unwrap();
        let mut resumed = Hasher::resume(Algorithm::Sha256, &saved).unwrap();
        h.update(b"tail");
        resumed.update(b"tail");
        assert_eq!(resumed.finish(), h.finish());
        assert!(Hasher::resume(Algorithm::Sha256, b"short").is_none());
    }

    #[test]
    fn incremental_equals_whole() {
        let mut h = Algorithm::Sha256.hasher();
        h.update(b"hello ");
        assert_eq!(h.clone().finish(), Digest::sha256(b"hello "));
        h.update(b"world");
        assert_eq!(h.finish(), Digest::sha256(b"hello world"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused(s in "\\PC{0,140}") {
            let _ = s.parse::<Digest>();
        }

        #[test]
        fn valid_digests_print_as_they_were_read(
            hex in "[0-9a-f]{64}", long in "[0-9a-f]{128}", sha512 in any::<bool>()
        ) {
            let text = if sha512 { format!("sha512:{long}") } else { format!("sha256:{hex}") };
            let d: Digest = text.parse().unwrap();
            prop_assert_eq!(d.to_string(), text);
        }

        #[test]
        fn the_digest_of_bytes_reads_back(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let d = Digest::sha256(&data);
            prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        }
    }
}
