//! `kill -9`, many times over: of the server in the middle of pushes,
//! deletes and collections, and of the collector itself. After every crash
//! the server starts again on the same store, and
//! - every image whose push the client was told succeeded is there, byte
//!   for byte, by tag and by digest, with every blob;
//! - every tag whose delete the client was told succeeded stays deleted;
//! - `registry verify` finds nothing wrong: no blob at a final path is
//!   torn, no link is dangling.
//!
//! What the crash cut before its answer (a push or delete never
//! acknowledged) may have happened or not; it is not checked. Bounded:
//! `ROUNDS` crashes, each after at most a second of load (two with the
//! store in a bucket). The choices come from a seeded generator
//! (`CRASH_SEED` repeats a run).

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::support::*;

const ROUNDS: u64 = 12;
const WRITERS: usize = 3;

/// An image the registry acknowledged: where, and its exact bytes.
#[derive(Clone)]
struct Acked {
    repo: String,
    tag: String,
    manifest: Vec<u8>,
    blobs: Vec<Vec<u8>>,
}

#[derive(Default)]
struct Ledger {
    acked: Vec<Acked>,
    /// Tags whose delete was acknowledged.
    deleted: Vec<(String, String)>,
    pushes_sent: u64,
    deletes_sent: u64,
    /// Requests cut by the crash (no whole answer).
    cut: u64,
    /// Of those, pushes of a layer in PATCHes.
    cut_in_patches: u64,
}

/// One writer until the server dies: images with unique tags, a layer of
/// 1 KiB to 512 KiB pushed in one request or, one image in eight (the
/// first writer's first of each round among them), of 12 to 16 MiB pushed
/// in 4 MiB PATCHes (in a bucket: pieces, then a multipart upload), now
/// and then the delete of one of its own earlier tags. A status other
/// than the expected one fails the test: only the crash may stop a
/// request.
fn writer(addr: String, round: u64, w: usize, seed: u64, ledger: Arc<Mutex<Ledger>>) {
    let c = Client::for_addr(&addr);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let repo = format!("crash/w{w}");
    for i in 0.. {
        let mine: Vec<Acked> = {
            let l = ledger.lock().unwrap();
            l.acked.iter().filter(|a| a.repo == repo).cloned().collect()
        };
        if i % 4 == 3 && !mine.is_empty() {
            let victim = &mine[rng.gen_range(0..mine.len())];
            // Out of the checked set before it is sent: unacknowledged, its
            // fate is unknown.
            let mut l = ledger.lock().unwrap();
            l.acked
                .retain(|a| !(a.repo == victim.repo && a.tag == victim.tag));
            l.deletes_sent += 1;
            drop(l);
            let path = format!("/v2/{}/manifests/{}", victim.repo, victim.tag);
            match c.try_call("DELETE", &path, &[], None) {
                Ok(r) => {
                    r.expect(202, None);
                    let mut l = ledger.lock().unwrap();
                    l.deleted.push((victim.repo.clone(), victim.tag.clone()));
                }
                Err(_) => {
                    ledger.lock().unwrap().cut += 1;
                    return;
                }
            }
            continue;
        }
        let config = format!(r#"{{"round":{round},"w":{w},"i":{i}}}"#).into_bytes();
        // The first writer's first of each round: rounds are short, and
        // a bucket takes a second for one.
        let big = (i + w as u64).is_multiple_of(8);
        let len = match big {
            true => rng.gen_range(12 << 20..16 << 20),
            false => rng.gen_range(1 << 10..512 << 10),
        };
        let mut layer = vec![0u8; len];
        rng.fill(&mut layer[..]);
        ledger.lock().unwrap().pushes_sent += 1;
        let config_ok = c.try_push_blob(&repo, &config).is_ok();
        let ok = config_ok
            && match big {
                true => push_in_patches(&c, &repo, &layer),
                false => c.try_push_blob(&repo, &layer).is_ok(),
            };
        let tag = format!("r{round}-{i}");
        let manifest = image_manifest(
            &sha256(&config),
            config.len(),
            &[(&sha256(&layer), layer.len())],
            None,
        );
        let put = ok
            .then(|| {
                c.try_call(
                    "PUT",
                    &format!("/v2/{repo}/manifests/{tag}"),
                    &[("content-type", OCI_MANIFEST)],
                    Some(manifest.as_bytes()),
                )
            })
            .and_then(Result::ok);
        match put {
            Some(r) => {
                r.expect(201, None);
                ledger.lock().unwrap().acked.push(Acked {
                    repo: repo.clone(),
                    tag,
                    manifest: manifest.into_bytes(),
                    blobs: vec![config, layer],
                });
            }
            None => {
                let mut l = ledger.lock().unwrap();
                l.cut += 1;
                l.cut_in_patches += u64::from(big && config_ok && !ok);
                return;
            }
        }
    }
}

/// Push `blob` in 4 MiB PATCHes, then a PUT naming its digest: false if
/// the crash cut a request.
fn push_in_patches(c: &Client, repo: &str, blob: &[u8]) -> bool {
    let Ok(started) = c.try_call("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], None) else {
        return false;
    };
    started.expect(202, None);
    let mut location = started.header("location").expect("a Location").to_string();
    for (n, chunk) in blob.chunks(4 << 20).enumerate() {
        let from = n * (4 << 20);
        let range = format!("{from}-{}", from + chunk.len() - 1);
        let headers = [
            ("content-type", "application/octet-stream"),
            ("content-range", range.as_str()),
        ];
        let Ok(r) = c.try_call("PATCH", &location, &headers, Some(chunk)) else {
            return false;
        };
        r.expect(202, None);
        location = r.header("location").expect("a Location").to_string();
    }
    let sep = if location.contains('?') { '&' } else { '?' };
    let done = format!("{location}{sep}digest={}", sha256(blob));
    match c.try_call("PUT", &done, &[], None) {
        Ok(r) => {
            r.expect(201, None);
            true
        }
        Err(_) => false,
    }
}

/// Every acknowledged image whole, every acknowledged delete still done,
/// and `registry verify` clean. Returns the number of images checked.
fn check(s: &Server, ledger: &Ledger) -> usize {
    let c = Client::new(s);
    for a in &ledger.acked {
        let r = c.get(&format!("/v2/{}/manifests/{}", a.repo, a.tag));
        assert_eq!(r.status, 200, "{}:{} lost", a.repo, a.tag);
        assert!(r.body == a.manifest, "{}:{} changed", a.repo, a.tag);
        let by_digest = c.get(&format!("/v2/{}/manifests/{}", a.repo, sha256(&a.manifest)));
        assert!(by_digest.body == a.manifest, "{}@digest changed", a.repo);
        for b in &a.blobs {
            let got = c.get(&format!("/v2/{}/blobs/{}", a.repo, sha256(b)));
            assert_eq!(got.status, 200, "a blob of {}:{} lost", a.repo, a.tag);
            assert!(got.body == *b, "a blob of {}:{} changed", a.repo, a.tag);
        }
    }
    for (repo, tag) in &ledger.deleted {
        c.get(&format!("/v2/{repo}/manifests/{tag}"))
            .expect(404, Some("MANIFEST_UNKNOWN"));
    }
    assert_verifies(&s.config);
    ledger.acked.len()
}

#[test]
fn kill_9_again_and_again_loses_nothing_acknowledged() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261130);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (mut server_kills, mut gc_kills, mut gc_passes, mut checks) = (0, 0, 0, 0usize);
    let started = Instant::now();
    // How long each round's load runs before the crash (ms). A bucket
    // takes about a second for a layer pushed in PATCHes: longer rounds
    // there, so that some finish.
    let (load, store) = match S3Target::from_env() {
        Some(_) => (300..2000, "store in a bucket"),
        None => (100..1000, "store on a file system"),
    };
    for round in 0..ROUNDS {
        let mut s = Server::start_at(&root, Opts::default());
        checks += check(&s, &ledger.lock().unwrap());
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (addr, ledger) = (s.addr.clone(), ledger.clone());
                let seed = seed ^ (round << 8) ^ w as u64;
                std::thread::spawn(move || writer(addr, round, w, seed, ledger))
            })
            .collect();
        // A third of the rounds collect beside the load, a third kill the
        // collector part way.
        let mut gc = (round % 3 != 0).then(|| {
            std::thread::sleep(Duration::from_millis(rng.gen_range(50..300)));
            Command::new(GC_BIN)
                .arg(&s.config)
                .args(["--grace", "1s", "--delete-untagged", "--json"])
                .env("RUST_LOG", "error")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        });
        if round % 3 == 2 {
            std::thread::sleep(Duration::from_millis(rng.gen_range(2..30)));
            if let Some(g) = gc.as_mut() {
                if g.try_wait().unwrap().is_none() {
                    let _ = g.kill();
                    gc_kills += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(load.clone())));
        s.kill9();
        server_kills += 1;
        for w in writers {
            w.join().expect("a writer met an unexpected answer");
        }
        if let Some(mut g) = gc {
            let status = g.wait().unwrap();
            // Killed, or done: a pass that ran to its end must have succeeded.
            if status.code().is_some() {
                assert!(status.success(), "registry-gc failed: {status}");
                gc_passes += 1;
            }
        }
    }
    let s = Server::start_at(&root, Opts::default());
    let l = ledger.lock().unwrap();
    checks += check(&s, &l);
    // A collection after all of it: still nothing acknowledged lost.
    let (code, _, err) = run_gc(&s.config, &["--grace", "0", "--delete-untagged"]);
    assert_eq!(code, 0, "{err}");
    checks += check(&s, &l);
    assert!(
        l.acked.len() > 20,
        "only {} images acknowledged",
        l.acked.len()
    );
    assert!(l.cut >= ROUNDS, "the crashes cut only {} requests", l.cut);
    let big = l
        .acked
        .iter()
        .filter(|a| a.blobs[1].len() > 1 << 20)
        .count();
    eprintln!(
        "crash loop (seed {seed}, {store}): {server_kills} server kills, {gc_kills} collector kills, {gc_passes} collections finished beside the load; {} pushes and {} deletes sent, {} cut by a crash ({} in a layer's PATCHes); {} images ({big} with a layer pushed in PATCHes) and {} deletes acknowledged and intact; {checks} image checks and {} verify runs passed; {:.1} s",
        l.pushes_sent,
        l.deletes_sent,
        l.cut,
        l.cut_in_patches,
        l.acked.len(),
        l.deleted.len(),
        ROUNDS + 2,
        started.elapsed().as_secs_f64()
    );
}
