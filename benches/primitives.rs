//! The pure pieces: hashing upload frames, parsing what every request
//! carries (digests, names, references), parsing and checking manifests.
//!
//! `cargo bench --bench primitives` measures sha2 as built (it picks
//! SHA-NI at run time where the CPU has it).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use registry::oci::{Algorithm, Digest, Manifest, Reference, RepoName};

const MIB: usize = 1 << 20;

fn hashing(c: &mut Criterion) {
    let frame: Vec<u8> = (0..MIB).map(|i| (i * 31 % 251) as u8).collect();
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("one 1 MiB frame", |b| {
        b.iter(|| {
            let mut h = Algorithm::Sha256.hasher();
            h.update(black_box(&frame));
            h.finish()
        })
    });
    g.throughput(Throughput::Bytes(64 * MIB as u64));
    g.bench_function("64 MiB streamed in 1 MiB frames", |b| {
        b.iter(|| {
            let mut h = Algorithm::Sha256.hasher();
            for _ in 0..64 {
                h.update(black_box(&frame));
            }
            h.finish()
        })
    });
    g.finish();
}

fn parsing(c: &mut Criterion) {
    let digest = format!("sha256:{}", "3f".repeat(32));
    let mut g = c.benchmark_group("parse");
    g.bench_function("digest", |b| {
        b.iter(|| black_box(&digest).parse::<Digest>().unwrap())
    });
    g.bench_function("repository name (3 components)", |b| {
        b.iter(|| {
            black_box("team-a/services/api.gateway_v2")
                .parse::<RepoName>()
                .unwrap()
        })
    });
    g.bench_function("reference: tag", |b| {
        b.iter(|| {
            black_box("v1.24.3-alpine3.20")
                .parse::<Reference>()
                .unwrap()
        })
    });
    g.bench_function("reference: digest", |b| {
        b.iter(|| black_box(digest.as_str()).parse::<Reference>().unwrap())
    });
    g.finish();

    let descriptor = |media_type: &str, n: usize| {
        serde_json::json!({
            "mediaType": media_type,
            "digest": format!("sha256:{:064x}", n),
            "size": 1000 + n,
        })
    };
    let image = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", 0),
        "layers": (1..=10).map(|n| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", n)).collect::<Vec<_>>(),
        "annotations": { "org.opencontainers.image.created": "2026-11-23T00:00:00Z" },
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": (1..=6).map(|n| {
            let mut d = descriptor("application/vnd.oci.image.manifest.v1+json", n);
            d["platform"] = serde_json::json!({ "architecture": "amd64", "os": "linux" });
            d
        }).collect::<Vec<_>>(),
    }))
    .unwrap();
    let mut g = c.benchmark_group("manifest");
    g.bench_function("OCI image, 10 layers: parse and list references", |b| {
        b.iter(|| {
            let m = Manifest::parse(
                black_box(&image),
                Some("application/vnd.oci.image.manifest.v1+json"),
            )
            .unwrap();
            m.required_blobs().count()
        })
    });
    g.bench_function("OCI index, 6 children: parse", |b| {
        b.iter(|| Manifest::parse(black_box(&index), None).unwrap())
    });
    g.bench_function("digest of the image manifest", |b| {
        b.iter(|| Digest::sha256(black_box(&image)))
    });
    g.finish();
}

criterion_group!(benches, hashing, parsing);
criterion_main!(benches);
