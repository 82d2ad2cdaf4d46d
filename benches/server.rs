//! The server's paths, in process: the real `server::serve` on a loopback
//! port over a store in /var/tmp, driven by registry-bench's own client
//! (one kept-alive connection): uploads (stream, hash, write) of 1 MiB and
//! 64 MiB, downloads of 1 MiB, 64 MiB and a 1 MiB Range, and `_catalog` and
//! `tags/list` answered from the index over 10,000 repositories (the index
//! alone, and through HTTP), and the web page's list and search and `docker
//! search` over 100,000 repositories, and the pull-through cache's
//! warm and cold pulls beside pulls from its upstream.

#[allow(dead_code)]
#[path = "../bin/registry-bench/content.rs"]
mod content;
#[allow(dead_code)]
#[path = "../bin/registry-bench/scenario.rs"]
mod scenario;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{Method, StatusCode};
use registry::config::Config;
use registry::oci::{RepoName, Tag};
use registry::server::{self, App};
use registry::storage::backend::fs::Filesystem;
use registry::storage::{Index, Layout};

use crate::content::BlobMaker;
use crate::scenario::push_blob;
use registry::client::{drain, expect, Conn, Frames, Target};

const MIB: usize = 1 << 20;
const REPOS: usize = 10_000;

/// A server on 127.0.0.1:0 over a fresh root, and a runtime to drive it.
struct Harness {
    rt: tokio::runtime::Runtime,
    target: Arc<Target>,
    dir: tempfile::TempDir,
}

impl Harness {
    /// `fill` may write a store under the root before the server reads it.
    fn start(fill: impl FnOnce(&Path)) -> Harness {
        Harness::start_with(fill, "")
    }

    /// The same, with `extra` appended to the config (top-level sections).
    fn start_with(fill: impl FnOnce(&Path), extra: &str) -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("registry-bench-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(&root).unwrap();
        fill(&root);
        let config_path = dir.path().join("config.yml");
        std::fs::write(
            &config_path,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n{extra}",
                root.display()
            ),
        )
        .unwrap();
        let config = Config::load(&config_path).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let addr = rt.block_on(async {
            let listener = server::bind(&config).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let app = App::new(config).unwrap();
            tokio::spawn(server::serve(app, listener, std::future::pending()));
            addr
        });
        let target = Arc::new(Target::new(&format!("http://{addr}"), None, None).unwrap());
        Harness { rt, target, dir }
    }

    fn conn(&self) -> Conn {
        Conn::new(self.target.clone())
    }

    /// GET `path` on `conn` with `headers`, expecting `want`; the body's length.
    fn get(&self, conn: &mut Conn, path: &str, headers: &[(&str, &str)], want: StatusCode) -> u64 {
        self.rt.block_on(async {
            let resp = conn
                .send(Method::GET, path, headers, Frames::empty())
                .await
                .unwrap();
            drain(expect(resp, want, "GET").await.unwrap())
                .await
                .unwrap()
        })
    }
}

fn uploads(c: &mut Criterion) {
    let h = Harness::start(|_| {});
    let mut conn = h.conn();
    let mut g = c.benchmark_group("upload");
    for (label, size, samples) in [("1 MiB", MIB, 50), ("64 MiB", 64 * MIB, 10)] {
        let maker = BlobMaker::new(size);
        let mut n = 0u64;
        g.throughput(Throughput::Bytes(size as u64));
        g.sample_size(samples);
        g.bench_function(format!("monolithic {label}"), |b| {
            b.iter(|| {
                n += 1;
                let blob = maker.make(1, n);
                h.rt.block_on(push_blob(&mut conn, "bench/upload", &blob))
                    .unwrap();
            })
        });
    }
    g.finish();
}

fn downloads(c: &mut Criterion) {
    let h = Harness::start(|_| {});
    let mut conn = h.conn();
    let small = BlobMaker::new(MIB).make(2, 0);
    let big = BlobMaker::new(64 * MIB).make(2, 1);
    for b in [&small, &big] {
        h.rt.block_on(push_blob(&mut conn, "bench/download", b))
            .unwrap();
    }
    let mut get = |path: &str, range: Option<&str>, want: StatusCode| -> u64 {
        let headers: Vec<(&str, &str)> = range.map(|r| ("range", r)).into_iter().collect();
        h.get(&mut conn, path, &headers, want)
    };
    let mut g = c.benchmark_group("download");
    let small_path = format!("/v2/bench/download/blobs/{}", small.digest);
    let big_path = format!("/v2/bench/download/blobs/{}", big.digest);
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("1 MiB", |b| {
        b.iter(|| assert_eq!(get(&small_path, None, StatusCode::OK), MIB as u64))
    });
    g.bench_function("1 MiB Range of a 64 MiB blob", |b| {
        b.iter(|| {
            assert_eq!(
                get(
                    &big_path,
                    Some("bytes=16777216-17825791"),
                    StatusCode::PARTIAL_CONTENT
                ),
                MIB as u64
            )
        })
    });
    g.throughput(Throughput::Bytes(64 * MIB as u64));
    g.sample_size(20);
    g.bench_function("64 MiB", |b| {
        b.iter(|| assert_eq!(get(&big_path, None, StatusCode::OK), 64 * MIB as u64))
    });
    g.finish();
}

/// A store of `REPOS` repositories with one tag each, and one repository
/// with 1,000 tags, written straight in Distribution's layout.
fn write_store(root: &Path) {
    let layout = Layout::new(root);
    let link = format!("sha256:{}", "ab".repeat(32));
    let tag_link = |repo: &RepoName, tag: &str| {
        let path = layout.tag_current_link(repo, &tag.parse::<Tag>().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &link).unwrap();
    };
    for i in 0..REPOS {
        tag_link(&format!("bench/r{i:05}").parse().unwrap(), "latest");
    }
    let many: RepoName = "bench/many-tags".parse().unwrap();
    for t in 0..1000 {
        tag_link(&many, &format!("v{t:04}"));
    }
}

fn listings(c: &mut Criterion) {
    let h = Harness::start(write_store);
    let layout = Layout::new(&h.dir.path().join("data"));
    let files = Filesystem::new(layout.tmp_dir());
    let index = Index::build(&files, &layout).unwrap();
    assert_eq!(index.repo_count(), REPOS + 1);
    let many: RepoName = "bench/many-tags".parse().unwrap();
    let mut g = c.benchmark_group("listings");
    g.bench_function(
        "index: catalog page of 1,000 of 10,001, from the middle",
        |b| {
            b.iter(|| {
                index
                    .catalog(1000, Some("bench/r05000"), |_| true)
                    .items
                    .len()
            })
        },
    );
    g.bench_function("index: 1,000 tags", |b| {
        b.iter(|| index.tags(&many, 1000, None).unwrap().items.len())
    });
    let mut conn = h.conn();
    let mut get = |path: &str| h.get(&mut conn, path, &[], StatusCode::OK);
    g.bench_function("HTTP: GET _catalog?n=1000 from the middle of 10,001", |b| {
        b.iter(|| get("/v2/_catalog?n=1000&last=bench/r05000"))
    });
    g.bench_function("HTTP: GET tags/list of 1,000 tags", |b| {
        b.iter(|| get("/v2/bench/many-tags/tags/list"))
    });
    g.finish();
}

/// Repositories behind the page's list and search benchmarks.
const PAGE_REPOS: usize = 100_000;

/// `PAGE_REPOS` repositories of one tag each: `team-N/pNNNNNN`, N from 0 to 9.
fn write_many_repos(root: &Path) {
    let layout = Layout::new(root);
    let link = format!("sha256:{}", "cd".repeat(32));
    let latest: Tag = "latest".parse().unwrap();
    for i in 0..PAGE_REPOS {
        let repo: RepoName = format!("team-{}/p{i:06}", i % 10).parse().unwrap();
        let path = layout.tag_current_link(&repo, &latest);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &link).unwrap();
    }
}

/// The web page's list and search and `docker search` at 100,000
/// repositories, through HTTP: open to all, and with access rules that
/// anonymous callers are checked against for every repository.
fn pages(c: &mut Criterion) {
    let rules = "access:\n  rules:\n    - repositories: [\"team-1/*\", \"team-2/*\"]\n      users: [anonymous]\n      actions: [pull]\n";
    for (label, extra) in [("open", ""), ("rules", rules)] {
        let h = Harness::start_with(write_many_repos, extra);
        let mut conn = h.conn();
        let mut get = |path: &str| h.get(&mut conn, path, &[], StatusCode::OK);
        let mut g = c.benchmark_group(format!("pages, 100,000 repositories, {label}"));
        for (name, path) in [
            ("list: first page", "/"),
            ("list: a page from the middle", "/?last=team-5%2Fp050005"),
            ("search: 100 of 1,000 matches", "/?q=p012"),
            ("search: no match", "/?q=nothing-like-it"),
            ("docker search: 25 of 1,000", "/v1/search?q=p012&n=25"),
        ] {
            g.bench_function(name, |b| b.iter(|| get(path)));
        }
        g.finish();
    }
}

/// The pull-through cache against the registry it caches, both in this
/// process on loopback: a blob pulled warm (from the cache's store) and
/// cold (fetched from the upstream while streamed), each beside the same
/// pull straight from the upstream.
fn pull_through(c: &mut Criterion) {
    let up = Harness::start(|_| {});
    let cache = Harness::start_with(
        |_| {},
        &format!("proxy:\n  remoteurl: http://{}\n", up.target.authority),
    );
    let (mut to_up, mut to_cache) = (up.conn(), cache.conn());
    let get = |conn: &mut Conn, h: &Harness, path: &str| h.get(conn, path, &[], StatusCode::OK);
    let maker = BlobMaker::new(64 * MIB);
    let mut g = c.benchmark_group("pull-through, 64 MiB blob");
    g.throughput(Throughput::Bytes(64 * MIB as u64));
    g.sample_size(10);
    let warm = maker.make(3, 0);
    up.rt
        .block_on(push_blob(&mut to_up, "bench/cached", &warm))
        .unwrap();
    let warm_path = format!("/v2/bench/cached/blobs/{}", warm.digest);
    get(&mut to_cache, &cache, &warm_path);
    g.bench_function("warm, through the cache", |b| {
        b.iter(|| get(&mut to_cache, &cache, &warm_path))
    });
    g.bench_function("straight from the upstream", |b| {
        b.iter(|| get(&mut to_up, &up, &warm_path))
    });
    g.finish();
    // Cold pulls store every blob twice (upstream and cache): smaller ones.
    let small = BlobMaker::new(16 * MIB);
    let mut g = c.benchmark_group("pull-through, 16 MiB blob, cold");
    g.throughput(Throughput::Bytes(16 * MIB as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    let mut n = 0;
    let fresh = |n: u64| {
        let blob = small.make(4, n);
        up.rt
            .block_on(push_blob(&mut up.conn(), "bench/cold", &blob))
            .unwrap();
        format!("/v2/bench/cold/blobs/{}", blob.digest)
    };
    g.bench_function("through the cache (fetched, stored, streamed)", |b| {
        b.iter_batched(
            || {
                n += 1;
                fresh(n)
            },
            |path| get(&mut to_cache, &cache, &path),
            criterion::BatchSize::PerIteration,
        )
    });
    g.bench_function("straight from the upstream (a blob just pushed)", |b| {
        b.iter_batched(
            || {
                n += 1;
                fresh(n)
            },
            |path| get(&mut to_up, &up, &path),
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = uploads, downloads, listings, pages, pull_through
}
criterion_main!(benches);
