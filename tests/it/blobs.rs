//! Blob GET/HEAD/DELETE, Range requests, mounts.

use crate::support::*;

#[test]
fn monolithic_push_then_pull_with_ranges() {
    let s = Server::start();
    let c = Client::new(&s);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let d = sha256(&data);
    let r = c.call(
        "POST",
        &format!("/v2/r/blobs/uploads/?digest={d}"),
        &[],
        Some(&data),
    );
    r.expect(201, None);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert!(r
        .header("location")
        .unwrap()
        .ends_with(&format!("/v2/r/blobs/{d}")));
    assert!(s.has_blob(&d), "Distribution's layout");

    let h = c.head(&format!("/v2/r/blobs/{d}"));
    h.expect(200, None);
    assert_eq!(h.header("content-length"), Some("100000"));
    assert_eq!(h.header("docker-content-digest"), Some(d.as_str()));
    let g = c.get(&format!("/v2/r/blobs/{d}"));
    g.expect(200, None);
    assert_eq!(g.body, data);

    let range = |spec: &str| c.call("GET", &format!("/v2/r/blobs/{d}"), &[("range", spec)], None);
    let r = range("bytes=10-19");
    r.expect(206, None);
    assert_eq!(r.body, &data[10..20]);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/100000"));
    let r = range("bytes=99990-");
    assert_eq!(r.body, &data[99990..]);
    let r = range("bytes=-5");
    assert_eq!(r.body, &data[99995..]);
    let r = range("bytes=100000-");
    r.expect(416, None);
    assert_eq!(r.header("content-range"), Some("bytes */100000"));
    // A form we may ignore serves the whole blob.
    assert_eq!(range("bytes=0-1,5-6").status, 200);
}

#[test]
fn unknown_blobs_and_bad_digests() {
    let s = Server::start();
    let c = Client::new(&s);
    let d = sha256(b"never pushed");
    c.get(&format!("/v2/r/blobs/{d}"))
        .expect(404, Some("BLOB_UNKNOWN"));
    let h = c.head(&format!("/v2/r/blobs/{d}"));
    assert_eq!(h.status, 404);
    for bad in [
        "sha256:abc",
        "sha256:ZZZ",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "nocolon",
    ] {
        c.get(&format!("/v2/r/blobs/{bad}"))
            .expect(400, Some("DIGEST_INVALID"));
    }
    // A blob pushed to one repository is not visible from another.
    let d = c.push_blob("one", b"private to one");
    c.get(&format!("/v2/other/blobs/{d}"))
        .expect(404, Some("BLOB_UNKNOWN"));
}

#[test]
fn digest_mismatch_leaves_nothing() {
    let s = Server::start();
    let c = Client::new(&s);
    let claimed = sha256(b"something else");
    c.call(
        "POST",
        &format!("/v2/r/blobs/uploads/?digest={claimed}"),
        &[],
        Some(b"actual bytes"),
    )
    .expect(400, Some("DIGEST_INVALID"));
    assert!(!s.has_blob(&claimed));
    assert!(!s.has_blob(&sha256(b"actual bytes")));
    assert!(
        s.stored_containing("/_uploads/").is_empty(),
        "upload data removed"
    );
    assert!(s.stored_containing("/_tmp/").is_empty());
}

#[test]
fn delete_unlinks_and_respects_config() {
    let s = Server::start();
    let c = Client::new(&s);
    let d = c.push_blob("r", b"to delete");
    let r = c.call("DELETE", &format!("/v2/r/blobs/{d}"), &[], None);
    r.expect(202, None);
    c.get(&format!("/v2/r/blobs/{d}"))
        .expect(404, Some("BLOB_UNKNOWN"));
    c.call("DELETE", &format!("/v2/r/blobs/{d}"), &[], None)
        .expect(404, Some("BLOB_UNKNOWN"));

    let s = Server::start_with(Opts {
        delete: false,
        ..Opts::default()
    });
    let c = Client::new(&s);
    let d = c.push_blob("r", b"kept");
    c.call("DELETE", &format!("/v2/r/blobs/{d}"), &[], None)
        .expect(405, Some("UNSUPPORTED"));
    let (_, md) = c.push_image("r", "t", "x");
    c.call("DELETE", &format!("/v2/r/manifests/{md}"), &[], None)
        .expect(405, Some("UNSUPPORTED"));
    c.call("DELETE", "/v2/r/manifests/t", &[], None)
        .expect(405, Some("UNSUPPORTED"));
    c.get(&format!("/v2/r/blobs/{d}")).expect(200, None);
}

#[test]
fn cross_repository_mount() {
    let s = Server::start();
    let c = Client::new(&s);
    let d = c.push_blob("src/repo", b"shared layer");
    // With from: linked without an upload.
    let r = c.call(
        "POST",
        &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo"),
        &[],
        Some(b""),
    );
    r.expect(201, None);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    c.get(&format!("/v2/dst/blobs/{d}")).expect(200, None);
    // From a repository that lacks it: an ordinary upload session instead.
    let r = c.call(
        "POST",
        &format!("/v2/dst2/blobs/uploads/?mount={d}&from=elsewhere"),
        &[],
        Some(b""),
    );
    r.expect(202, None);
    assert!(r
        .header("location")
        .unwrap()
        .contains("/v2/dst2/blobs/uploads/"));
    // Without from: mounted when the registry has the blob.
    c.call(
        "POST",
        &format!("/v2/dst3/blobs/uploads/?mount={d}"),
        &[],
        Some(b""),
    )
    .expect(201, None);
    let unknown = sha256(b"nobody has this");
    c.call(
        "POST",
        &format!("/v2/dst3/blobs/uploads/?mount={unknown}"),
        &[],
        Some(b""),
    )
    .expect(202, None);
    c.call(
        "POST",
        "/v2/dst3/blobs/uploads/?mount=sha256:bad&from=src/repo",
        &[],
        Some(b""),
    )
    .expect(400, Some("DIGEST_INVALID"));
}

#[test]
fn an_empty_blob_and_a_blob_pushed_twice_round_trip() {
    let s = Server::start();
    let c = Client::new(&s);
    let d = c.push_blob("r/empty", b"");
    let g = c.get(&format!("/v2/r/empty/blobs/{d}"));
    g.expect(200, None);
    assert!(g.body.is_empty());
    assert_eq!(g.header("content-length"), Some("0"));
    // The same content uploaded again in chunks, into another repository
    // (in a bucket: parts of a multipart upload that is then not needed).
    let data: Vec<u8> = (0..12_000_000u32).map(|i| (i % 253) as u8).collect();
    let d = c.push_blob("r/first", &data);
    let start = c.call("POST", "/v2/r/second/blobs/uploads/", &[], None);
    let loc = start.header("location").unwrap().to_string();
    let r = c.call(
        "PATCH",
        &loc,
        &[("content-type", "application/octet-stream")],
        Some(&data),
    );
    r.expect(202, None);
    let loc = r.header("location").unwrap().to_string();
    let sep = if loc.contains('?') { '&' } else { '?' };
    c.call("PUT", &format!("{loc}{sep}digest={d}"), &[], None)
        .expect(201, None);
    let g = c.get(&format!("/v2/r/second/blobs/{d}"));
    g.expect(200, None);
    assert!(g.body == data);
    assert!(s.stored_containing("/_uploads/").is_empty());
}

/// The value of one series in the server's `/metrics`.
fn metric(c: &Client, name: &str) -> u64 {
    let text = String::from_utf8(c.get("/metrics").body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Blob bodies on plain HTTP go from the page cache to the socket with
/// `sendfile` while other clients are connected: whole, in ranges across
/// the 8 MiB pieces, several on one kept-alive connection, a HEAD among
/// them. For a client alone they are copied through the server; with
/// `http.sendfile: false` they always are. The bytes are the same every way.
#[test]
fn big_blobs_sent_by_the_kernel_arrive_whole_and_in_ranges() {
    use std::io::Write;
    let data: Vec<u8> = {
        use rand::{RngCore, SeedableRng};
        let mut v = vec![0u8; 20 << 20];
        rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut v);
        v
    };
    for sendfile in [true, false] {
        let s = Server::start_with(Opts {
            // Buffered writes leave the blob in the page cache, as on a
            // server whose pulls are warm.
            env: vec![(
                "REGISTRY_STORAGE_FILESYSTEM_DIRECTWRITES".into(),
                "false".into(),
            )],
            extra: format!("  sendfile: {sendfile}\n"),
            ..Opts::default()
        });
        let c = Client::new(&s);
        let d = c.push_blob("big/one", &data);
        let path = format!("/v2/big/one/blobs/{d}");
        let by_kernel = || metric(&c, "registry_http_sendfile_bytes_total");
        let pulls = || {
            let mut bytes = 0u64;
            for _ in 0..2 {
                let g = c.get(&path);
                g.expect(200, None);
                assert!(g.body == data, "whole blob differs (sendfile {sendfile})");
                bytes += data.len() as u64;
                assert_eq!(c.head(&path).header("content-length"), Some("20971520"));
            }
            let mib = 1u64 << 20;
            for (start, end) in [
                (0, 9),
                (8 * mib - 3, 8 * mib + 2),
                (mib, 17 * mib),
                (20 * mib - 1, 20 * mib - 1),
            ] {
                let r = c.call(
                    "GET",
                    &path,
                    &[("range", &format!("bytes={start}-{end}"))],
                    None,
                );
                r.expect(206, None);
                assert!(
                    r.body[..] == data[start as usize..=end as usize],
                    "range {start}-{end} differs"
                );
                bytes += end - start + 1;
            }
            bytes
        };

        let before = by_kernel();
        pulls();
        assert_eq!(by_kernel(), before, "a client alone gets copies");

        // A download that stalls (its client reads nothing) runs beside
        // the pulls from now on.
        let mut stalled = std::net::TcpStream::connect(&s.addr).unwrap();
        write!(stalled, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut settled = by_kernel();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let now = by_kernel();
            if now == settled {
                break;
            }
            settled = now;
        }
        let expected = pulls();
        let sent = by_kernel() - settled;
        if sendfile {
            assert_eq!(
                sent, expected,
                "beside another download, every cached byte goes by sendfile"
            );
        } else {
            assert_eq!(sent, 0);
        }
        drop(stalled);
    }
}
