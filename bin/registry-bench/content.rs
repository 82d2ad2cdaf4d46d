//! What the load sends: blobs whose digests cost nothing to compute, and
//! images (config, layers, manifest) built from them.
//!
//! A blob is a fixed random prefix shared by every blob of its size,
//! followed by a 64-byte tail naming the run and the blob. The hash state
//! after the prefix is computed once and cloned, so each new blob's digest
//! costs one SHA-256 block and the client spends its CPU on the wire, not on
//! hashing what it sends.

use bytes::Bytes;
use rand::RngCore;
use registry::oci::{media, Algorithm, Digest, Hasher};

/// Frames a body is sent in.
const FRAME: usize = 1 << 20;
const TAIL: usize = 64;

/// Makes distinct blobs of one size.
pub struct BlobMaker {
    size: usize,
    prefix: Bytes,
    state: Hasher,
}

/// One blob, ready to send or to check.
#[derive(Clone)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    pub frames: Vec<Bytes>,
}

impl BlobMaker {
    pub fn new(size: usize) -> BlobMaker {
        assert!(size >= TAIL, "blobs are at least {TAIL} bytes");
        let mut prefix = vec![0u8; size - TAIL];
        rand::thread_rng().fill_bytes(&mut prefix);
        let mut state = Algorithm::Sha256.hasher();
        state.update(&prefix);
        BlobMaker {
            size,
            prefix: Bytes::from(prefix),
            state,
        }
    }

    /// Blob number `n` of run `run`: the same pair gives the same bytes.
    pub fn make(&self, run: u64, n: u64) -> Blob {
        let mut tail = [b'.'; TAIL];
        let label = format!("registry-bench run {run:016x} blob {n:016x}");
        tail[..label.len()].copy_from_slice(label.as_bytes());
        let mut h = self.state.clone();
        h.update(&tail);
        let mut frames: Vec<Bytes> = (0..self.prefix.len())
            .step_by(FRAME)
            .map(|at| self.prefix.slice(at..(at + FRAME).min(self.prefix.len())))
            .collect();
        frames.push(Bytes::copy_from_slice(&tail));
        Blob {
            digest: h.finish(),
            size: self.size as u64,
            frames,
        }
    }
}

impl Blob {
    /// A small blob held in one frame (configs).
    pub fn of(bytes: Vec<u8>) -> Blob {
        Blob {
            digest: Digest::sha256(&bytes),
            size: bytes.len() as u64,
            frames: vec![Bytes::from(bytes)],
        }
    }

    /// Bytes `from..to` of the blob as frames (chunked uploads).
    pub fn range(&self, from: u64, to: u64) -> Vec<Bytes> {
        let mut out = vec![];
        let mut at = 0u64;
        for f in &self.frames {
            let end = at + f.len() as u64;
            let (a, b) = (from.max(at), to.min(end));
            if a < b {
                out.push(f.slice((a - at) as usize..(b - at) as usize));
            }
            at = end;
        }
        out
    }
}

/// An image: a config and layers, and the manifest naming them.
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Bytes,
    pub digest: Digest,
}

impl Image {
    pub fn new(layers: Vec<Blob>, label: &str) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Labels": { "registry-bench": label } },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let config = Blob::of(serde_json::to_vec(&config).expect("JSON"));
        let descriptor = |media_type: &str, b: &Blob| serde_json::json!({ "mediaType": media_type, "digest": b.digest.to_string(), "size": b.size });
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec_pretty(&manifest).expect("JSON");
        let digest = Digest::sha256(&manifest);
        Image {
            config,
            layers,
            manifest: Bytes::from(manifest),
            digest,
        }
    }

    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(&self.layers)
    }
}

/// A random number naming this run, so blobs pushed now are new to the
/// registry even if an earlier run used the same blob numbers.
pub fn run_id() -> u64 {
    rand::thread_rng().next_u64() | 1
}
