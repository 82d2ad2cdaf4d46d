//! Upload sessions: chunks, order, status, cancel, restart.

use crate::support::*;

fn start_upload(c: &Client, repo: &str) -> String {
    let r = c.call(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        Some(b""),
    );
    r.expect(202, None);
    assert_eq!(r.header("range"), Some("0-0"));
    assert!(r.header("docker-upload-uuid").is_some());
    r.header("location").unwrap().to_string()
}

fn patch(c: &Client, loc: &str, range: Option<&str>, data: &[u8]) -> Resp {
    let mut headers = vec![("content-type", "application/octet-stream")];
    if let Some(r) = range {
        headers.push(("content-range", r));
    }
    c.call("PATCH", loc, &headers, Some(data))
}

fn with_digest(loc: &str, d: &str) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}digest={d}")
}

#[test]
fn chunked_upload_in_order() {
    let s = Server::start();
    let c = Client::new(&s);
    let data: Vec<u8> = (0..30_000u32).map(|i| (i * 7) as u8).collect();
    let d = sha256(&data);
    let loc = start_upload(&c, "r");
    let r = patch(&c, &loc, Some("0-9999"), &data[..10_000]);
    r.expect(202, None);
    assert_eq!(r.header("range"), Some("0-9999"));
    let loc = r.header("location").unwrap().to_string();
    let r = patch(&c, &loc, Some("10000-19999"), &data[10_000..20_000]);
    assert_eq!(r.header("range"), Some("0-19999"));
    // Status.
    let st = c.get(&loc);
    st.expect(204, None);
    assert_eq!(st.header("range"), Some("0-19999"));
    // Out of order and overlapping chunks are refused with 416 and the
    // session is kept, with the Range to resume from.
    let r = patch(&c, &loc, Some("25000-29999"), &data[25_000..]);
    r.expect(416, Some("BLOB_UPLOAD_INVALID"));
    assert_eq!(r.header("range"), Some("0-19999"));
    let r = patch(&c, &loc, Some("10000-19999"), &data[10_000..20_000]);
    r.expect(416, None);
    // Content-Range that disagrees with the body length.
    patch(&c, &loc, Some("20000-20009"), &data[20_000..20_005]).expect(416, None);
    // The final chunk with the PUT.
    let r = c.call(
        "PUT",
        &with_digest(&loc, &d),
        &[("content-range", "20000-29999")],
        Some(&data[20_000..]),
    );
    r.expect(201, None);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(c.get(&format!("/v2/r/blobs/{d}")).body, data);
    // The session is gone.
    c.get(&loc).expect(404, Some("BLOB_UPLOAD_UNKNOWN"));
    patch(&c, &loc, None, b"more").expect(404, Some("BLOB_UPLOAD_UNKNOWN"));
}

#[test]
fn streamed_patch_then_empty_put() {
    let s = Server::start();
    let c = Client::new(&s);
    let data = vec![42u8; 3 << 20];
    let d = sha256(&data);
    let loc = start_upload(&c, "r");
    let r = patch(&c, &loc, None, &data);
    r.expect(202, None);
    assert_eq!(
        r.header("range"),
        Some(format!("0-{}", data.len() - 1).as_str())
    );
    c.call(
        "PUT",
        &with_digest(r.header("location").unwrap(), &d),
        &[],
        None,
    )
    .expect(201, None);
    assert_eq!(c.get(&format!("/v2/r/blobs/{d}")).body.len(), data.len());
}

#[test]
fn put_requires_valid_matching_digest() {
    let s = Server::start();
    let c = Client::new(&s);
    let loc = start_upload(&c, "r");
    patch(&c, &loc, None, b"abc").expect(202, None);
    c.call("PUT", &loc, &[], None)
        .expect(400, Some("DIGEST_INVALID"));
    c.call("PUT", &with_digest(&loc, "sha256:nothex"), &[], None)
        .expect(400, Some("DIGEST_INVALID"));
    let wrong = sha256(b"abd");
    c.call("PUT", &with_digest(&loc, &wrong), &[], None)
        .expect(400, Some("DIGEST_INVALID"));
    // A mismatch ends the session and removes its data.
    c.get(&loc).expect(404, Some("BLOB_UPLOAD_UNKNOWN"));
    assert!(s.stored_containing("/_uploads/").is_empty());
    assert!(!s.has_blob(&wrong));
}

#[test]
fn cancel_and_unknown_sessions() {
    let s = Server::start();
    let c = Client::new(&s);
    let loc = start_upload(&c, "r");
    patch(&c, &loc, None, b"partial").expect(202, None);
    c.call("DELETE", &loc, &[], None).expect(204, None);
    c.get(&loc).expect(404, Some("BLOB_UPLOAD_UNKNOWN"));
    c.call("DELETE", &loc, &[], None)
        .expect(404, Some("BLOB_UPLOAD_UNKNOWN"));
    assert!(s.stored_containing("/_uploads/").is_empty());
    c.get("/v2/r/blobs/uploads/00000000-0000-4000-8000-000000000000")
        .expect(404, Some("BLOB_UPLOAD_UNKNOWN"));
    c.get("/v2/r/blobs/uploads/..%2F..%2Fetc")
        .expect(404, Some("BLOB_UPLOAD_UNKNOWN"));
    // A session belongs to its repository.
    let loc = start_upload(&c, "mine");
    let id = loc.rsplit('/').next().unwrap();
    c.get(&format!("/v2/theirs/blobs/uploads/{id}"))
        .expect(404, Some("BLOB_UPLOAD_UNKNOWN"));
    c.get(&loc).expect(204, None);
}

#[test]
fn sha512_blobs() {
    let s = Server::start();
    let c = Client::new(&s);
    use sha2::Digest as _;
    let data = b"sha512 content";
    let d = format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)));
    c.call(
        "POST",
        &format!("/v2/r/blobs/uploads/?digest={d}"),
        &[],
        Some(data),
    )
    .expect(201, None);
    assert_eq!(c.get(&format!("/v2/r/blobs/{d}")).body, data);
}

#[test]
fn upload_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 13) as u8).collect();
    let d = sha256(&data);
    let loc;
    {
        let s = Server::start_at(&root, Opts::default());
        let c = Client::new(&s);
        loc = start_upload(&c, "r");
        patch(&c, &loc, Some("0-99999"), &data[..100_000]).expect(202, None);
    }
    let s = Server::start_at(&root, Opts::default());
    let c = Client::new(&s);
    let path = format!("/v2/r/blobs/uploads/{}", loc.rsplit('/').next().unwrap());
    let st = c.get(&path);
    st.expect(204, None);
    assert_eq!(st.header("range"), Some("0-99999"));
    patch(&c, &path, Some("100000-199999"), &data[100_000..]).expect(202, None);
    c.call("PUT", &with_digest(&path, &d), &[], None)
        .expect(201, None);
    assert_eq!(c.get(&format!("/v2/r/blobs/{d}")).body, data);
}

/// A session is one file (`_uploads/<id>`), gone once committed; a session
/// in Distribution's shape (a directory holding `data` and `startedat`,
/// left by Distribution on a shared directory or by an older version) is
/// continued, committed and removed all the same.
#[test]
fn sessions_are_one_file_and_distribution_shaped_ones_still_work() {
    let s = Server::start();
    let c = Client::new(&s);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 17) as u8).collect();
    let d = sha256(&data);

    let loc = start_upload(&c, "shape/ours");
    let id = loc
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let uploads = s
        .root
        .join("docker/registry/v2/repositories/shape/ours/_uploads");
    assert!(uploads.join(&id).is_file(), "one file per session");
    assert_eq!(std::fs::read_dir(&uploads).unwrap().count(), 1);
    patch(&c, &loc, Some("0-99999"), &data[..100_000]).expect(202, None);
    assert_eq!(std::fs::metadata(uploads.join(&id)).unwrap().len(), 100_000);
    c.call("PUT", &with_digest(&loc, &d), &[], Some(&data[100_000..]))
        .expect(201, None);
    assert_eq!(std::fs::read_dir(&uploads).unwrap().count(), 0);

    let legacy_id = "0f3c0b7e-6d4e-4b8e-9a51-5b0e7f2d1c9a";
    let legacy = s
        .root
        .join("docker/registry/v2/repositories/shape/theirs/_uploads")
        .join(legacy_id);
    std::fs::create_dir_all(&legacy).unwrap();
    std::fs::write(legacy.join("data"), &data[..123_456]).unwrap();
    std::fs::write(legacy.join("startedat"), "2026-11-30T10:00:00Z").unwrap();
    let path = format!("/v2/shape/theirs/blobs/uploads/{legacy_id}");
    let st = c.get(&path);
    st.expect(204, None);
    assert_eq!(st.header("range"), Some("0-123455"));
    patch(&c, &path, Some("123456-199999"), &data[123_456..200_000]).expect(202, None);
    c.call("PUT", &with_digest(&path, &d), &[], Some(&data[200_000..]))
        .expect(201, None);
    assert!(!legacy.exists(), "the session's directory is removed");
    assert_eq!(c.get(&format!("/v2/shape/theirs/blobs/{d}")).body, data);
}

#[test]
fn buffered_writes_store_exact_bytes() {
    // Direct writes are the default, which every other test uses.
    let s = Server::start_with(Opts {
        env: vec![(
            "REGISTRY_STORAGE_FILESYSTEM_DIRECTWRITES".into(),
            "false".into(),
        )],
        ..Opts::default()
    });
    let c = Client::new(&s);
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 241) as u8).collect();
    let d = sha256(&data);
    // Odd chunk boundaries exercise the unaligned head and tail.
    let loc = start_upload(&c, "r");
    let mut at = 0;
    let mut loc = loc;
    for n in [1usize, 4095, 1 << 20, 777_777, 3_000_000] {
        let end = (at + n).min(data.len());
        let r = patch(&c, &loc, Some(&format!("{at}-{}", end - 1)), &data[at..end]);
        r.expect(202, None);
        loc = r.header("location").unwrap().to_string();
        at = end;
    }
    c.call("PUT", &with_digest(&loc, &d), &[], Some(&data[at..]))
        .expect(201, None);
    assert_eq!(c.get(&format!("/v2/r/blobs/{d}")).body, data);
    let big = vec![5u8; 3 << 20];
    let bd = c.push_blob("r", &big);
    assert_eq!(c.get(&format!("/v2/r/blobs/{bd}")).body, big);
}

#[test]
fn hostile_content_ranges_and_digests_leave_nothing() {
    let s = Server::start();
    let c = Client::new(&s);
    let loc = start_upload(&c, "r");
    // Arithmetic at the edge of u64: refused, not a crash.
    patch(&c, &loc, Some("0-18446744073709551615"), b"x").expect(416, None);
    patch(&c, &loc, Some("5-2"), b"x").expect(416, None);
    patch(&c, &loc, Some("a-b"), b"x").expect(416, None);
    c.get(&loc).expect(204, None);
    c.call("DELETE", &loc, &[], None).expect(204, None);
    // A monolithic push with a malformed digest creates no session.
    c.call(
        "POST",
        "/v2/r/blobs/uploads/?digest=sha256:zz",
        &[],
        Some(b"data"),
    )
    .expect(400, Some("DIGEST_INVALID"));
    assert!(s.stored_containing("/_uploads/").is_empty());
}

#[test]
fn names_containing_endpoint_keywords() {
    let s = Server::start();
    let c = Client::new(&s);
    for repo in [
        "a/manifests/b",
        "x/blobs/y",
        "p/blobs/uploads/q",
        "t/tags/list/u",
        "r/referrers/s",
    ] {
        let (bytes, d) = c.push_image(repo, "v1", repo);
        assert_eq!(
            c.get(&format!("/v2/{repo}/manifests/v1")).body,
            bytes,
            "{repo}"
        );
        c.head(&format!("/v2/{repo}/manifests/{d}"))
            .expect(200, None);
        assert_eq!(
            c.get(&format!("/v2/{repo}/tags/list")).json()["tags"],
            serde_json::json!(["v1"])
        );
        c.get(&format!("/v2/{repo}/referrers/{d}"))
            .expect(200, None);
    }
    let names = c.get("/v2/_catalog").json()["repositories"].clone();
    assert_eq!(names.as_array().unwrap().len(), 5, "{names}");
}

/// Peak resident set of a process, from /proc (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// The memory bound: 64 clients each stream a 64 MiB blob at once (4 GiB
/// in all). Uploads share one pool of buffers (24 MiB by default), so the
/// server's peak RSS stays under 96 MiB; buffering blobs would need 4 GiB,
/// and two buffers per upload 128 MiB more.
#[test]
fn sixty_four_concurrent_64_mib_uploads_stay_under_96_mib() {
    concurrent_uploads_stay_under(64, 64 << 20, 96.0);
}

/// The same with 256 clients, each sending 16 MiB (4 GiB in all again, for
/// the disk's sake: the bound does not depend on the size), and half of
/// them pausing for a second after their first MiB: a client that pauses
/// holds no buffer. Under 128 MiB (two buffers per upload would be 512).
#[test]
fn two_hundred_fifty_six_concurrent_uploads_stay_under_128_mib() {
    concurrent_uploads_stay_under(256, 16 << 20, 128.0);
}

fn concurrent_uploads_stay_under(clients: usize, size: usize, bound_mib: f64) {
    use std::io::{Read, Write};
    let s = Server::start();
    let c = Client::new(&s);
    let frame: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    let digest = {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        for _ in 0..size / frame.len() {
            h.update(&frame);
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    };
    let locations: Vec<String> = (0..clients)
        .map(|_| with_digest(&start_upload(&c, "mem/big"), &digest))
        .collect();
    let before = peak_rss_mib(s.pid());
    let go = std::sync::Arc::new(std::sync::Barrier::new(clients + 1));
    let frame = std::sync::Arc::new(frame);
    let clients_done: Vec<_> = locations
        .into_iter()
        .enumerate()
        .map(|(n, loc)| {
            let (addr, go, frame) = (s.addr.clone(), go.clone(), frame.clone());
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
                    go.wait();
                    write!(
                        sock,
                        "PUT {loc} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
                    )
                    .unwrap();
                    for i in 0..size / frame.len() {
                        sock.write_all(&frame).unwrap();
                        if i == 0 && clients > 64 && n % 2 == 0 {
                            std::thread::sleep(std::time::Duration::from_secs(1));
                        }
                    }
                    let mut reply = String::new();
                    sock.read_to_string(&mut reply).unwrap();
                    reply
                })
                .unwrap()
        })
        .collect();
    // Watch the uploads overlap: the gauge counts requests streaming now.
    let watcher = {
        let c = Client::new(&s);
        std::thread::spawn(move || {
            let mut most = 0i64;
            for _ in 0..600 {
                let text = String::from_utf8(c.get("/metrics").body).unwrap();
                let now: i64 = text
                    .lines()
                    .find_map(|l| l.strip_prefix("registry_uploads_in_progress "))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                most = most.max(now);
                if most >= clients as i64 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            most
        })
    };
    go.wait();
    for t in clients_done {
        let reply = t.join().unwrap();
        assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
    }
    let overlapping = watcher.join().unwrap();
    let peak = peak_rss_mib(s.pid());
    println!("{clients} uploads of {} MiB: peak RSS {peak:.1} MiB (before the uploads {before:.1} MiB), {overlapping} at once", size >> 20);
    assert!(
        overlapping >= (clients * 3 / 4) as i64,
        "only {overlapping} uploads overlapped"
    );
    assert!(
        peak < bound_mib,
        "peak RSS {peak:.1} MiB, over the {bound_mib} MiB bound"
    );
    assert_eq!(
        c.head(&format!("/v2/mem/big/blobs/{digest}"))
            .header("content-length"),
        Some(size.to_string().as_str())
    );
}
