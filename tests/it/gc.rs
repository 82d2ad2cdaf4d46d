//! registry-gc against stores written by the real server: what it keeps,
//! what it frees, dry runs, bad input, and a stress run beside pushes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// Push an image whose layers are `layers` (contents); returns manifest bytes and digest.
fn push_with(
    c: &Client,
    repo: &str,
    reference: &str,
    config: &str,
    layers: &[&[u8]],
    subject: Option<(&str, usize)>,
) -> (Vec<u8>, String) {
    let cd = c.push_blob(repo, config.as_bytes());
    let mut descs = vec![];
    for l in layers {
        descs.push((c.push_blob(repo, l), l.len()));
    }
    let refs: Vec<(&str, usize)> = descs.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    let m = image_manifest(&cd, config.len(), &refs, subject);
    c.put_manifest(repo, reference, OCI_MANIFEST, m.as_bytes())
        .expect(201, None);
    let d = sha256(m.as_bytes());
    (m.into_bytes(), d)
}

fn blob_count(s: &Server) -> usize {
    s.stored_containing("/blobs/sha256/")
        .iter()
        .filter(|p| p.ends_with("/data"))
        .count()
}

#[test]
fn frees_what_deleted_manifests_used_and_keeps_the_rest() {
    let s = Server::start();
    let c = Client::new(&s);
    let shared: &[u8] = b"shared base layer";
    let (a, _) = push_with(&c, "app", "a", r#"{"n":"a"}"#, &[shared, b"only a"], None);
    let (_, bd) = push_with(&c, "app", "b", r#"{"n":"b"}"#, &[shared, b"only b"], None);
    c.call("DELETE", &format!("/v2/app/manifests/{bd}"), &[], None)
        .expect(202, None);
    let before = blob_count(&s);

    let (code, dry, err) = run_gc(&s.config, &["--grace", "0", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(blob_count(&s), before, "a dry run deletes nothing");
    let (code, real, err) = run_gc(&s.config, &["--grace", "0"]);
    assert_eq!(code, 0, "{err}");
    // b's manifest, config and own layer go; the shared layer stays.
    assert_eq!(real["blobs_deleted"], 3, "{real}");
    for key in [
        "blobs_deleted",
        "bytes_freed",
        "links_deleted",
        "blobs_kept",
    ] {
        assert_eq!(dry[key], real[key], "dry run and real run agree on {key}");
    }
    assert_eq!(blob_count(&s), before - 3);
    assert!(!s.has_blob(&sha256(b"only b")));
    c.get(&format!("/v2/app/blobs/{}", sha256(b"only b")))
        .expect(404, Some("BLOB_UNKNOWN"));
    // a is whole.
    let r = c.get("/v2/app/manifests/a");
    assert_eq!(r.body, a);
    for l in [shared, b"only a"] {
        assert_eq!(c.get(&format!("/v2/app/blobs/{}", sha256(l))).body, l);
    }
    // A second pass finds nothing more.
    let (_, again, _) = run_gc(&s.config, &["--grace", "0"]);
    assert_eq!(again["blobs_deleted"], 0);
}

#[test]
fn untagged_manifests_indexes_and_referrers() {
    let s = Server::start();
    let c = Client::new(&s);
    // A multi-platform index: children untagged, reached through the tag.
    let (x, xd) = push_with(
        &c,
        "multi",
        "x",
        r#"{"p":"amd64"}"#,
        &[b"amd64 layer"],
        None,
    );
    c.call("DELETE", "/v2/multi/manifests/x", &[], None)
        .expect(202, None);
    let idx = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{xd}","size":{}}}]}}"#,
        x.len()
    );
    c.put_manifest("multi", "latest", OCI_INDEX, idx.as_bytes())
        .expect(201, None);
    // An untagged image, and a signature (untagged) of the tagged index.
    let (_, orphan) = push_with(
        &c,
        "multi",
        "tmp",
        r#"{"p":"orphan"}"#,
        &[b"orphan layer"],
        None,
    );
    c.call("DELETE", "/v2/multi/manifests/tmp", &[], None)
        .expect(202, None);
    let sig_ref = push_with(
        &c,
        "multi",
        "sigtmp",
        r#"{"sig":1}"#,
        &[b"signature"],
        Some((&sha256(idx.as_bytes()), idx.len())),
    );
    c.call("DELETE", "/v2/multi/manifests/sigtmp", &[], None)
        .expect(202, None);

    // Without --delete-untagged every revision is kept.
    let (code, r, err) = run_gc(&s.config, &["--grace", "0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["blobs_deleted"], 0, "{r}");
    c.get(&format!("/v2/multi/manifests/{orphan}"))
        .expect(200, None);

    let (code, r, err) = run_gc(&s.config, &["--grace", "0", "--delete-untagged"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["manifests_deleted"], 1, "only the orphan: {r}");
    c.get(&format!("/v2/multi/manifests/{orphan}"))
        .expect(404, Some("MANIFEST_UNKNOWN"));
    assert!(!s.has_blob(&sha256(b"orphan layer")));
    // The index, its child and the signature are whole.
    assert_eq!(c.get("/v2/multi/manifests/latest").body, idx.as_bytes());
    assert_eq!(c.get(&format!("/v2/multi/manifests/{xd}")).body, x);
    c.get(&format!("/v2/multi/blobs/{}", sha256(b"amd64 layer")))
        .expect(200, None);
    c.get(&format!("/v2/multi/manifests/{}", sig_ref.1))
        .expect(200, None);
    c.get(&format!("/v2/multi/blobs/{}", sha256(b"signature")))
        .expect(200, None);
}

#[test]
fn grace_keeps_recent_uploads_and_old_sessions_go() {
    let s = Server::start();
    let c = Client::new(&s);
    // A layer waiting for its manifest.
    let waiting = c.push_blob("r", b"layer pushed, manifest to come");
    let (code, r, _) = run_gc(&s.config, &[]);
    assert_eq!(code, 0);
    assert_eq!(r["blobs_deleted"], 0, "default grace keeps it: {r}");
    assert!(s.blob_path(&waiting).exists());
    // An abandoned upload session, older than the purge age.
    let loc = c
        .call("POST", "/v2/r/blobs/uploads/", &[], Some(b""))
        .header("location")
        .unwrap()
        .to_string();
    c.call("PATCH", &loc, &[], Some(b"abandoned"))
        .expect(202, None);
    // The session is one file.
    let sessions = s.files_containing("/_uploads/");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let data = &sessions[0];
    let old = std::time::SystemTime::now() - Duration::from_secs(200 * 3600);
    std::fs::File::options()
        .write(true)
        .open(data)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let (_, r, _) = run_gc(&s.config, &[]);
    assert_eq!(r["uploads_deleted"], 1, "{r}");
    assert!(s.files_containing("/_uploads/").is_empty());
}

#[test]
fn unreadable_input_deletes_nothing() {
    let s = Server::start();
    let c = Client::new(&s);
    let (_, d) = push_with(&c, "r", "t", "{}", &[b"l"], None);
    c.call("DELETE", &format!("/v2/r/manifests/{d}"), &[], None)
        .expect(202, None);
    c.push_image("other", "t", "o");
    let before = blob_count(&s);
    // A corrupt link in another repository.
    let link = s
        .root
        .join("docker/registry/v2/repositories/other/_manifests/tags/t/current/link");
    std::fs::write(&link, "garbage").unwrap();
    let (code, _, err) = run_gc(&s.config, &["--grace", "0"]);
    assert_ne!(code, 0);
    assert!(err.contains("link"), "{err}");
    assert_eq!(blob_count(&s), before, "nothing deleted");
    std::fs::remove_dir_all(link.parent().unwrap().parent().unwrap()).unwrap();
    // A manifest whose content does not parse.
    let (_, md) = c.push_image("third", "t", "x");
    std::fs::write(s.blob_path(&md), "{not json").unwrap();
    let (code, _, err) = run_gc(&s.config, &["--grace", "0"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot be parsed"), "{err}");
    assert_eq!(blob_count(&s), before + 3);
    // A root that does not exist.
    let cfg = s.config.with_file_name("missing-root.yml");
    std::fs::write(
        &cfg,
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /nonexistent/registry\n",
    )
    .unwrap();
    let (code, _, err) = run_gc(&cfg, &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("/nonexistent/registry does not exist"),
        "{err}"
    );
}

/// An image as pushed: repository, tag, manifest bytes, blob contents.
type Pushed = (String, String, Vec<u8>, Vec<Vec<u8>>);

/// Check an image: its manifest by tag and every blob, byte for byte.
fn verify(
    c: &Client,
    repo: &str,
    tag: &str,
    manifest: &[u8],
    blobs: &[Vec<u8>],
) -> Result<(), String> {
    let r = c.get(&format!("/v2/{repo}/manifests/{tag}"));
    if r.body != manifest {
        return Err(format!("{repo}:{tag}: manifest {} ", r.status));
    }
    for b in blobs {
        let got = c.get(&format!("/v2/{repo}/blobs/{}", sha256(b)));
        if got.body != *b {
            return Err(format!(
                "{repo}:{tag}: blob {} lost ({})",
                sha256(b),
                got.status
            ));
        }
    }
    Ok(())
}

/// Clients push and delete images in a loop through two nodes on one store
/// (each step sends its blobs through one node and its manifest through
/// the other) while registry-gc runs pass after pass with a grace of one
/// second. Layers come from a small pool that goes unreferenced and stale
/// between uses, and clients skip uploading what the registry says it has
/// (as docker does), so a layer is often a sweep candidate at the moment a
/// manifest starts using it: only the claim (a touch on a file system, the
/// protocol of `storage::in_use` in a bucket) keeps it. A push may be
/// refused (the client uploads again); no stored image may lose a byte.
/// Every live image is checked at every step, through both nodes, and all
/// survivors at the end.
#[test]
fn stress_gc_beside_pushes() {
    let s = Server::start();
    let second = Server::start_at(&s.root, Opts::default());
    let nodes = [s.addr.clone(), second.addr.clone()];
    let done = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new((0usize, 0usize, 0usize, 0usize))); // pushed, refused, deleted, verified
    let survivors: Arc<Mutex<Vec<Pushed>>> = Arc::default();
    let mut workers = vec![];
    for w in 0..3 {
        let (nodes, stats, survivors) = (nodes.clone(), stats.clone(), survivors.clone());
        workers.push(std::thread::spawn(move || {
            let clients = [Client::for_addr(&nodes[0]), Client::for_addr(&nodes[1])];
            let repo = format!("stress/w{w}");
            let mut window: Vec<Pushed> = vec![];
            for i in 0..20 {
                // Blobs and deletes through one node, the manifest through the other.
                let (c, other) = (&clients[i % 2], &clients[(i + 1) % 2]);
                let config = format!(r#"{{"w":{w},"i":{i}}}"#).into_bytes();
                // The pool layer was last used two steps ago, by the image
                // deleted just below: it turns stale (older than the grace)
                // about when this push checks for it.
                let pool = format!("pool layer {}", i % 2).into_bytes();
                let own = format!("own layer {w}-{i}").into_bytes();
                let blobs = vec![config.clone(), pool.clone(), own.clone()];
                let tag = format!("t{i}");
                // Keep the last image; delete the one before it.
                if window.len() == 2 {
                    let (r, _, m, _) = window.remove(0);
                    c.call(
                        "DELETE",
                        &format!("/v2/{r}/manifests/{}", sha256(&m)),
                        &[],
                        None,
                    )
                    .expect(202, None);
                    stats.lock().unwrap().2 += 1;
                }
                let manifest = loop {
                    for b in &blobs {
                        if c.head(&format!("/v2/{repo}/blobs/{}", sha256(b))).status != 200 {
                            c.push_blob(&repo, b);
                        }
                    }
                    // Think time: GC passes run between the check and the manifest.
                    std::thread::sleep(Duration::from_millis(30));
                    let m = image_manifest(
                        &sha256(&config),
                        config.len(),
                        &[(&sha256(&pool), pool.len()), (&sha256(&own), own.len())],
                        None,
                    );
                    let r = other.put_manifest(&repo, &tag, OCI_MANIFEST, m.as_bytes());
                    if r.status == 201 {
                        break m.into_bytes();
                    }
                    r.expect(400, Some("MANIFEST_BLOB_UNKNOWN"));
                    stats.lock().unwrap().1 += 1;
                };
                stats.lock().unwrap().0 += 1;
                window.push((repo.clone(), tag, manifest, blobs));
                for (r, t, m, b) in &window {
                    for node in &clients {
                        verify(node, r, t, m, b).unwrap();
                        stats.lock().unwrap().3 += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            survivors.lock().unwrap().extend(window);
        }));
    }
    let gc = {
        let (config, done) = (s.config.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut passes, mut freed, mut in_use) = (0, 0u64, 0u64);
            let deadline = Instant::now() + Duration::from_secs(120);
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                let (code, r, err) = run_gc(&config, &["--grace", "1s", "--delete-untagged"]);
                assert_eq!(code, 0, "{err}");
                passes += 1;
                freed += r["blobs_deleted"].as_u64().unwrap_or(0);
                in_use += r["kept_in_use"].as_u64().unwrap_or(0);
            }
            (passes, freed, in_use)
        })
    };
    let results: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
    done.store(true, Ordering::Relaxed);
    let (passes, freed, in_use) = gc.join().unwrap();
    for r in results {
        r.unwrap();
    }
    for node in [&s, &second] {
        let c = Client::new(node);
        for (r, t, m, b) in survivors.lock().unwrap().iter() {
            verify(&c, r, t, m, b).unwrap();
        }
    }
    let (pushed, refused, deleted, verified) = *stats.lock().unwrap();
    assert!(passes >= 10, "only {passes} GC passes ran");
    assert!(
        freed > 0,
        "GC freed nothing while {deleted} images were deleted"
    );
    eprintln!(
        "stress: {pushed} images pushed ({refused} refused and redone), {deleted} deleted, {passes} GC passes, {freed} blobs freed, {in_use} candidates kept in use, {verified} image checks passed"
    );
}

#[test]
fn interval_mode_runs_until_sigterm() {
    use std::io::BufRead;
    let s = Server::start();
    Client::new(&s).push_image("r", "t", "x");
    let mut child = std::process::Command::new(GC_BIN)
        .arg(&s.config)
        .args(["--interval", "300ms", "--json"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        let line = lines.next().unwrap().unwrap();
        let report: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(report["manifests_kept"], 1);
    }
    let t = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        t.elapsed()
    );
}

#[test]
fn referrers_deleted_by_a_collection_are_no_longer_listed() {
    let s = Server::start();
    let c = Client::new(&s);
    let (app, ad) = push_with(&c, "r", "app", r#"{"app":1}"#, &[b"app layer"], None);
    let (_, sig) = push_with(
        &c,
        "r",
        "sig",
        r#"{"sig":1}"#,
        &[b"sig layer"],
        Some((&ad, app.len())),
    );
    c.call("DELETE", "/v2/r/manifests/sig", &[], None)
        .expect(202, None);
    // Listed once: the server now holds the repository's referrers in memory.
    let list = c.get(&format!("/v2/r/referrers/{ad}")).json();
    assert_eq!(
        list["manifests"][0]["digest"].as_str(),
        Some(sig.as_str()),
        "{list}"
    );
    // The subject loses its tag; a collection beside the running server
    // deletes it and its signature.
    c.call("DELETE", "/v2/r/manifests/app", &[], None)
        .expect(202, None);
    let (code, r, err) = run_gc(&s.config, &["--grace", "0", "--delete-untagged"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["manifests_deleted"], 2, "{r}");
    let list = c.get(&format!("/v2/r/referrers/{ad}")).json();
    assert_eq!(
        list["manifests"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );
}
