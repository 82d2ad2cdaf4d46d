//! Several nodes on one store (one bucket in the S3 pass, one directory in
//! the file-system pass), any node answering any request: what one writes
//! the other serves, an upload moves between them and survives the node
//! that began it, and listings follow within two seconds.

use std::time::{Duration, Instant};

use crate::support::*;

/// Two servers on one store; the first owns the temporary directory.
fn two_nodes() -> (Server, Server) {
    let a = Server::start();
    let b = Server::start_at(&a.root, Opts::default());
    (a, b)
}

/// Poll `check` until it holds, for at most `limit`; how long it took.
fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn what_one_node_writes_the_other_serves_at_once() {
    let (a, b) = two_nodes();
    let (ca, cb) = (Client::new(&a), Client::new(&b));
    let (manifest, digest) = ca.push_image("shared/app", "v1", "one");
    let got = cb.get("/v2/shared/app/manifests/v1");
    got.expect(200, None);
    assert_eq!(got.body, manifest);
    assert_eq!(got.header("docker-content-digest"), Some(digest.as_str()));
    cb.head(&format!("/v2/shared/app/manifests/{digest}"))
        .expect(200, None);

    // A tag moved on B is read on A at once; a tag deleted on A is gone on B.
    let (_, d2) = cb.push_image("shared/app", "v1", "two");
    let got = ca.get("/v2/shared/app/manifests/v1");
    assert_eq!(got.header("docker-content-digest"), Some(d2.as_str()));
    ca.call("DELETE", "/v2/shared/app/manifests/v1", &[], None)
        .expect(202, None);
    cb.get("/v2/shared/app/manifests/v1")
        .expect(404, Some("MANIFEST_UNKNOWN"));
    // The manifest itself stays, by digest.
    cb.get(&format!("/v2/shared/app/manifests/{d2}"))
        .expect(200, None);
}

#[test]
fn an_upload_moves_between_nodes_and_outlives_the_node_that_began_it() {
    let (mut a, b) = two_nodes();
    let (ca, cb) = (Client::new(&a), Client::new(&b));
    // Large enough for several parts of a multipart upload in a bucket
    // (10 MiB each by default), with pieces left over between requests.
    let data: Vec<u8> = (0..23_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let d = sha256(&data);
    let start = ca.call("POST", "/v2/moving/blob/blobs/uploads/", &[], None);
    start.expect(202, None);
    let mut loc = start.header("location").unwrap().to_string();
    let path = loc
        .split_once("/v2/")
        .map(|(_, p)| format!("/v2/{p}"))
        .unwrap();

    let cuts = [0usize, 3_000_000, 14_000_000, 15_000_000, 23_000_000];
    let nodes = [&cb, &ca, &cb];
    for (i, node) in nodes.iter().enumerate() {
        let (from, to) = (cuts[i], cuts[i + 1]);
        let range = format!("{from}-{}", to - 1);
        let r = node.call(
            "PATCH",
            &path,
            &[
                ("content-type", "application/octet-stream"),
                ("content-range", &range),
            ],
            Some(&data[from..to]),
        );
        r.expect(202, None);
        assert_eq!(r.header("range"), Some(format!("0-{}", to - 1).as_str()));
        loc = r.header("location").unwrap().to_string();
    }
    // The node that began the upload dies; the other knows where it is.
    a.kill9();
    let status = cb.get(&path);
    status.expect(204, None);
    assert_eq!(status.header("range"), Some("0-14999999"));
    let a = Server::start_at(&b.root, Opts::default());
    let ca = Client::new(&a);
    let r = ca.call(
        "PUT",
        &format!("{path}?digest={d}"),
        &[
            ("content-type", "application/octet-stream"),
            ("content-range", "15000000-22999999"),
        ],
        Some(&data[cuts[3]..]),
    );
    r.expect(201, None);
    assert!(loc.contains("/blobs/uploads/"));
    for c in [&ca, &cb] {
        let got = c.get(&format!("/v2/moving/blob/blobs/{d}"));
        got.expect(200, None);
        assert!(got.body == data, "the blob reads back whole");
    }
    assert!(b.has_blob(&d));
    assert!(
        b.stored_containing("/_uploads/").is_empty(),
        "nothing of the session is left"
    );
}

#[test]
fn listings_follow_another_node_within_two_seconds() {
    let (a, b) = two_nodes();
    let (ca, cb) = (Client::new(&a), Client::new(&b));
    let limit = Duration::from_secs(2);
    let catalog = |c: &Client| c.get("/v2/_catalog?n=1000").json()["repositories"].clone();
    let tags =
        |c: &Client, repo: &str| c.get(&format!("/v2/{repo}/tags/list")).json()["tags"].clone();

    ca.push_image("team/first", "v1", "first");
    let took = within(limit, || {
        catalog(&cb)
            .as_array()
            .is_some_and(|r| r.iter().any(|n| n == "team/first"))
    });
    assert!(
        took.is_some(),
        "a repository made on A is listed by B within 2 s"
    );
    assert!(within(limit, || tags(&cb, "team/first")
        == serde_json::json!(["v1"]))
    .is_some());

    cb.push_image("team/first", "v2", "second");
    assert!(within(limit, || tags(&ca, "team/first")
        == serde_json::json!(["v1", "v2"]))
    .is_some());
    cb.call("DELETE", "/v2/team/first/manifests/v1", &[], None)
        .expect(202, None);
    assert!(
        within(limit, || tags(&ca, "team/first")
            == serde_json::json!(["v2"]))
        .is_some(),
        "a tag deleted on B leaves A's list within 2 s"
    );

    // B has read the referrers of a subject; then A stores one.
    let (subject, sd) = ca.push_image("team/first", "signed", "subject");
    let listed = |c: &Client| {
        c.get(&format!("/v2/team/first/referrers/{sd}")).json()["manifests"]
            .as_array()
            .map(|m| m.len())
    };
    assert_eq!(listed(&cb), Some(0));
    let cd = ca.push_blob("team/first", b"{}");
    let sig = image_manifest(&cd, 2, &[], Some((&sd, subject.len())));
    ca.put_manifest(
        "team/first",
        &sha256(sig.as_bytes()),
        OCI_MANIFEST,
        sig.as_bytes(),
    )
    .expect(201, None);
    assert!(
        within(limit, || listed(&cb) == Some(1)).is_some(),
        "B lists the referrer A stored within 2 s"
    );
}
