//! What only a store in a bucket does: the backend suite on a real bucket,
//! blob downloads through presigned URLs, clear errors at start, and an
//! object store that goes away and comes back. These run in the S3 pass of
//! scripts/test.sh (TEST_S3_STORE names the bucket) and fail without it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use registry::storage::backend::s3::{S3Config, S3};
use registry::storage::backend::suite;

use crate::support::*;

fn config(s3: &S3Target, root: &str) -> S3Config {
    S3Config::local(&s3.endpoint, &s3.bucket, (&s3.access, &s3.secret), root)
}

#[test]
fn the_backend_suite_passes_on_a_real_bucket() {
    let s3 = S3Target::required();
    let root = format!("/it/suite-{}", rand_suffix());
    let backend = S3::connect(&config(&s3, &root)).unwrap();
    suite::run(&backend, std::path::Path::new(root.trim_start_matches('/')));
}

/// A server on the bucket that answers blob reads with a redirect to a
/// signed URL, as a real config does.
fn redirecting_server() -> Server {
    S3Target::required();
    Server::start_with(Opts {
        s3_redirects: true,
        ..Opts::default()
    })
}

#[test]
fn blob_downloads_go_to_presigned_urls_with_ranges() {
    let s = redirecting_server();
    let c = Client::new(&s);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let d = c.push_blob("r/x", &data);
    let r = c.get(&format!("/v2/r/x/blobs/{d}"));
    r.expect(307, None);
    let url = r.header("location").unwrap().to_string();
    assert!(url.contains("X-Amz-Signature"), "{url}");
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let whole = c.get(&url);
    whole.expect(200, None);
    assert!(whole.body == data);
    let part = c.call("GET", &url, &[("range", "bytes=1000-1999")], None);
    part.expect(206, None);
    assert_eq!(part.body, &data[1000..2000]);
    // HEAD answers from the node, without a redirect.
    let h = c.head(&format!("/v2/r/x/blobs/{d}"));
    h.expect(200, None);
    assert_eq!(h.header("content-length"), Some("300000"));
}

/// `registry-bench` pulls from a registry that sends blob reads to signed
/// URLs of its bucket, as a client does: it follows the redirects, checks
/// what they lead to, and counts no error.
#[test]
fn registry_bench_follows_blob_redirects_into_the_bucket() {
    let s = redirecting_server();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_registry-bench"))
        .args(["run", &s.url(""), "-s", "pull-1m,image-pull", "-c", "2"])
        .args(["-n", "24", "-d", "30s", "--warmup", "0s", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for sc in report["scenarios"].as_array().unwrap() {
        assert_eq!(sc["ops"].as_u64(), Some(24), "{sc}");
        assert_eq!(sc["errors"].as_u64(), Some(0), "{sc}");
    }
    // The pulls were redirected, not served by the node.
    let redirected = redirected_blob_gets(&s);
    assert!(redirected >= 24, "{redirected} redirected blob GETs");
}

/// How many blob GETs `s` answered with a redirect, from its `/metrics`.
fn redirected_blob_gets(s: &Server) -> u64 {
    let metrics = String::from_utf8(Client::new(s).get("/metrics").body).unwrap();
    metrics
        .lines()
        .filter(|l| l.contains(r#"route="blob",method="GET",status="307""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `registry-replicate` copies from a registry whose blob reads go to
/// signed URLs of its bucket: it follows them, and the copy is whole.
#[test]
fn registry_replicate_follows_blob_redirects_into_the_bucket() {
    let a = redirecting_server();
    let b = Server::start();
    let (ca, cb) = (Client::new(&a), Client::new(&b));
    let (manifest, _) = ca.push_image("r/x", "v1", "redirected");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("replication.yml");
    let yaml = format!(
        "peers:\n  a:\n    url: http://{}\n  b:\n    url: http://{}\nrules:\n  - source: a\n    target: b\n",
        a.addr, b.addr
    );
    std::fs::write(&file, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_registry-replicate"))
        .arg(&file)
        .args(["--once", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let copied = cb.get("/v2/r/x/manifests/v1");
    copied.expect(200, None);
    assert!(copied.body == manifest);
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    for l in m["layers"].as_array().unwrap() {
        blobs.push(l["digest"].as_str().unwrap().to_string());
    }
    for d in &blobs {
        let got = cb.get(&format!("/v2/r/x/blobs/{d}"));
        got.expect(200, None);
        assert_eq!(sha256(&got.body), *d);
    }
    // The source sent every blob read to its bucket.
    assert!(redirected_blob_gets(&a) >= blobs.len() as u64);
}

/// A config file for a server on `s3` with some keys changed.
fn write_config(
    dir: &std::path::Path,
    s3: &S3Target,
    endpoint: &str,
    bucket: &str,
    secret: &str,
) -> String {
    let path = dir.join(format!("bad-{}.yml", rand_suffix()));
    std::fs::write(
        &path,
        format!(
            "version: 0.1\nstorage:\n  s3:\n    accesskey: {}\n    secretkey: {secret}\n    region: us-east-1\n    regionendpoint: {endpoint}\n    bucket: {bucket}\n    secure: false\nhttp:\n  addr: 127.0.0.1:0\n",
            s3.access
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn wrong_keys_a_missing_bucket_or_no_endpoint_stop_the_start_clearly() {
    let s3 = S3Target::required();
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let cases = [
        (
            s3.endpoint.as_str(),
            s3.bucket.as_str(),
            "not-the-secret",
            "credentials were refused",
        ),
        (
            s3.endpoint.as_str(),
            "no-such-bucket-here",
            s3.secret.as_str(),
            "does not exist",
        ),
        (
            closed.as_str(),
            s3.bucket.as_str(),
            s3.secret.as_str(),
            "cannot reach the object store",
        ),
    ];
    for (endpoint, bucket, secret, says) in cases {
        let cfg = write_config(dir.path(), &s3, endpoint, bucket, secret);
        let started = std::time::Instant::now();
        let (code, err) = run_to_exit(&["serve", &cfg], &[]);
        assert_ne!(code, 0);
        assert!(err.contains(says), "{says:?} not in: {err}");
        assert!(
            err.lines().count() < 5,
            "one clear line, not a stack: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}

#[test]
fn unhonoured_keys_stop_the_start_naming_them() {
    let s3 = S3Target::required();
    let dir = tempfile::tempdir().unwrap();
    for (line, key) in [
        ("    encrypt: true\n", "storage.s3.encrypt"),
        ("    v4auth: false\n", "storage.s3.v4auth"),
        ("    storageclass: GLACIER\n", "storage.s3.storageclass"),
        ("    chunksize: 1048576\n", "storage.s3.chunksize"),
    ] {
        let path = dir.path().join(format!("c-{}.yml", rand_suffix()));
        std::fs::write(
            &path,
            format!(
                "version: 0.1\nstorage:\n  s3:\n    region: us-east-1\n    bucket: {}\n{line}http:\n  addr: 127.0.0.1:0\n",
                s3.bucket
            ),
        )
        .unwrap();
        let (code, err) = run_to_exit(&["serve", path.to_str().unwrap()], &[]);
        assert_ne!(code, 0);
        assert!(err.contains(key), "{key} not named in: {err}");
    }
}

/// A TCP gate in front of the object store that can be closed (every
/// connection refused at once and those open cut) and opened again, and
/// that can answer the first connections with S3's throttling answer.
struct Gate {
    addr: String,
    open: Arc<AtomicBool>,
    /// Connections still to be answered `503 SlowDown`.
    throttle: Arc<AtomicUsize>,
    throttled: Arc<AtomicUsize>,
}

impl Gate {
    fn start(upstream: &str) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let open = Arc::new(AtomicBool::new(true));
        let (throttle, throttled) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (flag, left, count) = (open.clone(), throttle.clone(), throttled.clone());
        let upstream = upstream.trim_start_matches("http://").to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { continue };
                if !flag.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                if left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    // Read the request head, answer as a busy S3 does, close.
                    let mut head = [0u8; 16384];
                    let _ = client.read(&mut head);
                    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                    let _ = write!(
                        client,
                        "HTTP/1.1 503 Slow Down\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        loop {
                            match from.read(&mut buf) {
                                Ok(n) if n > 0 && flag.load(Ordering::SeqCst) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                _ => break,
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Gate {
            addr: format!("http://{addr}"),
            open,
            throttle,
            throttled,
        }
    }

    /// A server on the bucket whose every request to it passes the gate.
    fn server(
        &self,
        s3: &S3Target,
        dir: &std::path::Path,
    ) -> (Stopped, String, std::sync::mpsc::Receiver<String>) {
        let root = dir.join("data");
        let through_gate = S3Target {
            endpoint: self.addr.clone(),
            bucket: s3.bucket.clone(),
            access: s3.access.clone(),
            secret: s3.secret.clone(),
        };
        let cfg = dir.join("gated.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nstorage:\n{}  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n",
                through_gate.driver(&root, false)
            ),
        )
        .unwrap();
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("serve").arg(&cfg);
        let (child, addr, log) = spawn_and_wait(cmd);
        (Stopped(child), addr, log)
    }
}

/// A server process killed when the test ends, passed or not.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn throttling_by_the_object_store_is_retried() {
    let s3 = S3Target::required();
    let gate = Gate::start(&s3.endpoint);
    let dir = tempfile::tempdir().unwrap();
    // The first connections the server opens to the object store are
    // answered 503 SlowDown and closed; each request is retried, with
    // backoff, on a new connection.
    gate.throttle.store(3, Ordering::SeqCst);
    let (_server, addr, _log) = gate.server(&s3, dir.path());
    let c = Client::for_addr(&addr);
    let (manifest, _) = c.push_image("busy/app", "v1", "busy");
    let got = c.get("/v2/busy/app/manifests/v1");
    got.expect(200, None);
    assert_eq!(got.body, manifest);
    assert_eq!(
        gate.throttled.load(Ordering::SeqCst),
        3,
        "throttled, then served"
    );
}

#[test]
fn an_object_store_that_goes_away_makes_answers_503_until_it_returns() {
    let s3 = S3Target::required();
    let gate = Gate::start(&s3.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr, log) = gate.server(&s3, dir.path());
    let c = Client::for_addr(&addr);
    let (_, digest) = c.push_image("away/app", "v1", "away");

    gate.open.store(false, Ordering::SeqCst);
    let r = c.get("/v2/away/app/manifests/v1");
    r.expect(503, Some("UNAVAILABLE"));
    assert!(r.header("retry-after").is_some());
    assert_eq!(raw_status(&addr, "GET", "/readyz"), 503);
    let start = c.call("POST", "/v2/away/app/blobs/uploads/", &[], None);
    assert_eq!(start.status, 503, "a write is refused, not half done");

    gate.open.store(true, Ordering::SeqCst);
    assert_eq!(raw_status(&addr, "GET", "/readyz"), 200);
    let r = c.get("/v2/away/app/manifests/v1");
    r.expect(200, None);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let lines: Vec<String> = log.try_iter().collect();
    assert!(
        lines.iter().any(|l| l.contains("object store unavailable")),
        "a log line says why: {lines:#?}"
    );
}

/// A manifest naming a blob that a collector has announced it will delete
/// (an intent under `_gc/deleting/`) waits for the collector's decision: if
/// the intent goes and the blob stays, the push goes on; if the blob went
/// with it, the push is refused, as for a blob never uploaded. Either way
/// the push first rewrote the blob's marker, which a collector that had
/// not yet written its intent would see.
#[test]
fn a_push_waits_for_a_collectors_intent_and_follows_its_decision() {
    let s3 = S3Target::required();
    let s = Server::start();
    let c = Client::new(&s);
    for (seed, collector_deletes) in [("kept", false), ("deleted", true)] {
        let repo = format!("waits/{seed}");
        let layer = format!("layer the collector decides about: {seed}");
        let config = format!(r#"{{"seed":"{seed}"}}"#);
        let (ld, cd) = (
            c.push_blob(&repo, layer.as_bytes()),
            c.push_blob(&repo, config.as_bytes()),
        );
        let hex = ld.trim_start_matches("sha256:").to_string();
        let intent = format!("_gc/deleting/sha256/{hex}/a-test-pass");
        s3.put(&s.root, &intent, b"");
        let decided = {
            let (root, hex, intent) = (s.root.clone(), hex.clone(), intent.clone());
            let s3 = S3Target::required();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1500));
                if collector_deletes {
                    s3.delete(&root, &format!("blobs/sha256/{}/{hex}/data", &hex[..2]));
                    s3.delete(
                        &root,
                        &format!("repositories/{repo}/_layers/sha256/{hex}/link"),
                    );
                }
                s3.delete(&root, &intent);
            })
        };
        let m = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None);
        let started = std::time::Instant::now();
        let r = c.put_manifest(&format!("waits/{seed}"), "t", OCI_MANIFEST, m.as_bytes());
        let waited = started.elapsed();
        decided.join().unwrap();
        assert!(
            waited >= Duration::from_millis(1200),
            "the push did not wait for the intent ({waited:?})"
        );
        if collector_deletes {
            r.expect(400, Some("MANIFEST_BLOB_UNKNOWN"));
        } else {
            r.expect(201, None);
            assert_eq!(
                c.get(&format!("/v2/waits/{seed}/blobs/{ld}")).body,
                layer.as_bytes()
            );
        }
        let marker = format!("_gc/used/sha256/{hex}");
        assert!(
            !s.stored_containing(&marker).is_empty(),
            "no marker of use at {marker}"
        );
    }
}

/// A collection in a bucket removes upload sessions idle longer than the
/// purge age, multipart upload and all, and leaves a fresh one alone.
#[test]
fn a_collection_in_a_bucket_removes_abandoned_uploads() {
    S3Target::required();
    let s = Server::start_with(Opts {
        storage: "  maintenance:\n    uploadpurging:\n      enabled: false\n      age: 2s\n".into(),
        ..Opts::default()
    });
    let c = Client::new(&s);
    let start = |repo: &str| {
        c.call(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            Some(b""),
        )
        .header("location")
        .unwrap()
        .to_string()
    };
    // More than a part's worth, so the session holds a multipart upload.
    let old = start("uploads/old");
    c.call("PATCH", &old, &[], Some(&vec![7u8; 11 << 20]))
        .expect(202, None);
    std::thread::sleep(Duration::from_secs(3));
    let fresh = start("uploads/fresh");
    c.call("PATCH", &fresh, &[], Some(b"just begun"))
        .expect(202, None);
    let (code, report, err) = run_gc(&s.config, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["uploads_deleted"], 1, "{report}");
    assert!(s.stored_containing("uploads/old/_uploads/").is_empty());
    assert!(!s.stored_containing("uploads/fresh/_uploads/").is_empty());
    c.get(&old).expect(404, Some("BLOB_UPLOAD_UNKNOWN"));
    c.get(&fresh).expect(204, None);
}

/// A collection in a bucket that meets a link or a manifest it cannot read
/// says which and deletes nothing.
#[test]
fn a_collection_in_a_bucket_that_cannot_read_everything_deletes_nothing() {
    let s3 = S3Target::required();
    let s = Server::start();
    let c = Client::new(&s);
    let (_, garbage) = c.push_image("r", "t", "to be collected");
    c.call("DELETE", &format!("/v2/r/manifests/{garbage}"), &[], None)
        .expect(202, None);
    let (_, other) = c.push_image("other", "t", "o");
    let blobs = || s.stored_containing("/blobs/sha256/").len();
    let before = blobs();
    s3.put(
        &s.root,
        "repositories/other/_manifests/tags/t/current/link",
        b"garbage",
    );
    let (code, _, err) = run_gc(&s.config, &["--grace", "0"]);
    assert_ne!(code, 0);
    assert!(err.contains("bad link"), "{err}");
    assert_eq!(blobs(), before, "nothing deleted");

    s3.put(
        &s.root,
        "repositories/other/_manifests/tags/t/current/link",
        other.as_bytes(),
    );
    let hex = other.trim_start_matches("sha256:");
    s3.put(
        &s.root,
        &format!("blobs/sha256/{}/{hex}/data", &hex[..2]),
        b"{not json",
    );
    let (code, _, err) = run_gc(&s.config, &["--grace", "0"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot be parsed"), "{err}");
    assert_eq!(blobs(), before, "nothing deleted");
}

/// In a bucket, what one node stored is listed by another at once, not
/// after a poll: the catalog, a tag list and the referrers of a subject
/// each catch up with the other nodes' notes before answering.
#[test]
fn listings_in_a_bucket_show_another_nodes_writes_at_once() {
    S3Target::required();
    let a = Server::start();
    let b = Server::start_at(&a.root, Opts::default());
    let (ca, cb) = (Client::new(&a), Client::new(&b));
    // B has answered each listing once, so each has something to go stale.
    let (subject, sd) = ca.push_image("at-once/app", "v1", "subject");
    let referrers = format!("/v2/at-once/app/referrers/{sd}");
    assert_eq!(
        cb.get(&referrers).json()["manifests"],
        serde_json::json!([])
    );
    assert_eq!(
        cb.get("/v2/at-once/app/tags/list").json()["tags"],
        serde_json::json!(["v1"])
    );
    cb.get("/v2/_catalog").expect(200, None);

    ca.push_image("at-once/other", "v1", "other");
    ca.push_image("at-once/app", "v2", "second");
    let cd = ca.push_blob("at-once/app", b"{}");
    let sig = image_manifest(&cd, 2, &[], Some((&sd, subject.len())));
    let sig_digest = sha256(sig.as_bytes());
    ca.put_manifest("at-once/app", &sig_digest, OCI_MANIFEST, sig.as_bytes())
        .expect(201, None);

    let catalog = cb.get("/v2/_catalog").json()["repositories"].clone();
    assert!(
        catalog
            .as_array()
            .is_some_and(|r| r.iter().any(|n| n == "at-once/other")),
        "{catalog}"
    );
    assert_eq!(
        cb.get("/v2/at-once/app/tags/list").json()["tags"],
        serde_json::json!(["v1", "v2"])
    );
    assert_eq!(
        cb.get(&referrers).json()["manifests"][0]["digest"],
        serde_json::json!(sig_digest)
    );
}
