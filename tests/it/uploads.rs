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
    assert!(s.files_containing("/_uploads/").is_empty());
    assert!(!s.blob_path(&wrong).exists());
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
    assert!(s.files_containing("/_uploads/").is_empty());
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
fn direct_writes_store_exact_bytes() {
    let s = Server::start_with(Opts {
        env: vec![(
            "REGISTRY_STORAGE_FILESYSTEM_DIRECTWRITES".into(),
            "true".into(),
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
    assert!(s.files_containing("/_uploads/").is_empty());
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
