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
/// in all). An upload costs O(frame), so the server's peak RSS stays under
/// 64 x 3 MiB + 32 MiB = 224 MiB; buffering blobs would need 4 GiB.
#[test]
fn sixty_four_concurrent_64_mib_uploads_stay_under_224_mib() {
    use std::io::{Read, Write};
    const CLIENTS: usize = 64;
    const SIZE: usize = 64 << 20;
    const BOUND_MIB: f64 = (CLIENTS * 3 + 32) as f64;
    let s = Server::start();
    let c = Client::new(&s);
    let frame: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    let digest = {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        for _ in 0..SIZE / frame.len() {
            h.update(&frame);
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    };
    let locations: Vec<String> = (0..CLIENTS)
        .map(|_| with_digest(&start_upload(&c, "mem/big"), &digest))
        .collect();
    let before = peak_rss_mib(s.pid());
    let go = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS + 1));
    let frame = std::sync::Arc::new(frame);
    let clients: Vec<_> = locations
        .into_iter()
        .map(|loc| {
            let (addr, go, frame) = (s.addr.clone(), go.clone(), frame.clone());
            std::thread::spawn(move || {
                let mut sock = std::net::TcpStream::connect(&addr).unwrap();
                go.wait();
                write!(
                    sock,
                    "PUT {loc} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                for _ in 0..SIZE / frame.len() {
                    sock.write_all(&frame).unwrap();
                }
                let mut reply = String::new();
                sock.read_to_string(&mut reply).unwrap();
                reply
            })
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
                if most >= CLIENTS as i64 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            most
        })
    };
    go.wait();
    for t in clients {
        let reply = t.join().unwrap();
        assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
    }
    let overlapping = watcher.join().unwrap();
    let peak = peak_rss_mib(s.pid());
    println!("peak RSS {peak:.1} MiB (before the uploads {before:.1} MiB), {overlapping} uploads at once");
    assert!(overlapping >= 48, "only {overlapping} uploads overlapped");
    assert!(
        peak < BOUND_MIB,
        "peak RSS {peak:.1} MiB, over the {BOUND_MIB} MiB bound"
    );
    assert_eq!(
        c.head(&format!("/v2/mem/big/blobs/{digest}"))
            .header("content-length"),
        Some(SIZE.to_string().as_str())
    );
}
