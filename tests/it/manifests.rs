//! Manifests: put/get/head/delete, Accept, reference checks, tags, referrers.

use crate::support::*;

#[test]
fn put_get_by_tag_and_digest_verbatim() {
    let s = Server::start();
    let c = Client::new(&s);
    let (bytes, d) = c.push_image("a/b/c/d", "latest", "x");
    for reference in ["latest", d.as_str()] {
        let r = c.call(
            "GET",
            &format!("/v2/a/b/c/d/manifests/{reference}"),
            &[("accept", OCI_MANIFEST)],
            None,
        );
        r.expect(200, None);
        assert_eq!(r.body, bytes, "stored bytes returned verbatim");
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
        let h = c.head(&format!("/v2/a/b/c/d/manifests/{reference}"));
        h.expect(200, None);
        assert_eq!(
            h.header("content-length"),
            Some(bytes.len().to_string().as_str())
        );
        assert_eq!(h.header("docker-content-digest"), Some(d.as_str()));
    }
    // Whitespace and key order are the client's: a pretty-printed manifest keeps its digest.
    let cd = c.push_blob("p", b"{}");
    let pretty = format!(
        "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"{DOCKER_MANIFEST}\",\n  \"config\": {{\"mediaType\": \"application/vnd.docker.container.image.v1+json\", \"size\": 2, \"digest\": \"{cd}\"}},\n  \"layers\": []\n}}\n"
    );
    let r = c.put_manifest("p", "pretty", DOCKER_MANIFEST, pretty.as_bytes());
    r.expect(201, None);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(sha256(pretty.as_bytes()).as_str())
    );
    let g = c.get("/v2/p/manifests/pretty");
    assert_eq!(g.body, pretty.as_bytes());
    assert_eq!(g.header("content-type"), Some(DOCKER_MANIFEST));
}

#[test]
fn accept_negotiation() {
    let s = Server::start();
    let c = Client::new(&s);
    c.push_image("r", "t", "x");
    let get = |accept: &str| c.call("GET", "/v2/r/manifests/t", &[("accept", accept)], None);
    get(OCI_MANIFEST).expect(200, None);
    get(&format!("{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0.9")).expect(200, None);
    get("*/*").expect(200, None);
    c.get("/v2/r/manifests/t").expect(200, None);
    // An OCI manifest to a client that only takes Docker schema2: not found for it.
    get(DOCKER_MANIFEST).expect(404, Some("MANIFEST_UNKNOWN"));
}

#[test]
fn references_must_exist() {
    let s = Server::start();
    let c = Client::new(&s);
    let cd = c.push_blob("r", b"{}");
    let missing = sha256(b"missing layer");
    let m = image_manifest(&cd, 2, &[(&missing, 13)], None);
    c.put_manifest("r", "t", OCI_MANIFEST, m.as_bytes())
        .expect(400, Some("MANIFEST_BLOB_UNKNOWN"));
    let m = image_manifest(&missing, 13, &[], None);
    c.put_manifest("r", "t", OCI_MANIFEST, m.as_bytes())
        .expect(400, Some("MANIFEST_BLOB_UNKNOWN"));
    // A blob in another repository is not enough.
    let other = c.push_blob("other", b"layer elsewhere");
    let m = image_manifest(&cd, 2, &[(&other, 15)], None);
    c.put_manifest("r", "t", OCI_MANIFEST, m.as_bytes())
        .expect(400, Some("MANIFEST_BLOB_UNKNOWN"));
    // An index whose child is not in the repository.
    let idx = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{missing}","size":13}}]}}"#
    );
    c.put_manifest("r", "i", OCI_INDEX, idx.as_bytes())
        .expect(400, Some("MANIFEST_BLOB_UNKNOWN"));
    c.get("/v2/r/manifests/t")
        .expect(404, Some("MANIFEST_UNKNOWN"));
}

#[test]
fn invalid_manifests_are_refused_with_reasons() {
    let s = Server::start_with(Opts {
        extra: "  maxmanifestsize: 64KiB\n".into(),
        ..Opts::default()
    });
    let c = Client::new(&s);
    let cases: Vec<(String, &str, &str)> = vec![
        ("not json".into(), OCI_MANIFEST, "not valid JSON"),
        (
            r#"{"schemaVersion":1,"name":"r","tag":"t","fsLayers":[]}"#.into(),
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "schema1",
        ),
        (
            r#"{"schemaVersion":2,"mediaType":"application/x-nope"}"#.into(),
            "application/x-nope",
            "unsupported manifest media type",
        ),
        (r#"{"schemaVersion":2}"#.into(), OCI_MANIFEST, "no config"),
    ];
    for (body, ct, why) in cases {
        let r = c.put_manifest("r", "t", ct, body.as_bytes());
        r.expect(400, Some("MANIFEST_INVALID"));
        let msg = r.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(msg.contains(why), "{msg} should say {why}");
    }
    let big = format!(r#"{{"schemaVersion":2,"pad":"{}"}}"#, "x".repeat(70 * 1024));
    let (status, body) = raw_request(
        &s.addr,
        "PUT",
        "/v2/r/manifests/t",
        OCI_MANIFEST,
        big.as_bytes(),
    );
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("SIZE_INVALID") && body.contains("65536-byte limit"),
        "{body}"
    );
    // By digest: the body must hash to it.
    let (bytes, _) = c.push_image("r", "ok", "y");
    let wrong = sha256(b"other");
    c.put_manifest("r", &wrong, OCI_MANIFEST, &bytes)
        .expect(400, Some("DIGEST_INVALID"));
    c.put_manifest("r", &sha256(&bytes), OCI_MANIFEST, &bytes)
        .expect(201, None);
    // Tags that cannot exist.
    c.put_manifest("r", "-bad", OCI_MANIFEST, &bytes)
        .expect(400, Some("TAG_INVALID"));
    c.put_manifest("r", "has:colon", OCI_MANIFEST, &bytes)
        .expect(400, Some("DIGEST_INVALID"));
    c.get("/v2/r/manifests/.INVALID")
        .expect(404, Some("MANIFEST_UNKNOWN"));
    c.get(&format!("/v2/r/manifests/{}", "a".repeat(129)))
        .expect(404, Some("MANIFEST_UNKNOWN"));
}

#[test]
fn indexes_and_manifest_lists() {
    let s = Server::start();
    let c = Client::new(&s);
    let (a, da) = c.push_image("multi", "amd64", "a");
    let (b, db) = c.push_image("multi", "arm64", "b");
    for (media, tag) in [(OCI_INDEX, "oci"), (DOCKER_LIST, "docker")] {
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{media}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{da}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{db}","size":{},"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
            a.len(),
            b.len()
        );
        c.put_manifest("multi", tag, media, idx.as_bytes())
            .expect(201, None);
        let r = c.get(&format!("/v2/multi/manifests/{tag}"));
        assert_eq!(r.header("content-type"), Some(media));
        assert_eq!(r.body, idx.as_bytes());
    }
}

#[test]
fn delete_tag_keeps_manifest_delete_digest_removes_tags() {
    let s = Server::start();
    let c = Client::new(&s);
    let (_, d) = c.push_image("r", "one", "x");
    c.push_image("r", "two", "x"); // same content, second tag
    c.push_image("r", "other", "y");
    c.call("DELETE", "/v2/r/manifests/one", &[], None)
        .expect(202, None);
    c.get("/v2/r/manifests/one")
        .expect(404, Some("MANIFEST_UNKNOWN"));
    c.get("/v2/r/manifests/two").expect(200, None);
    c.get(&format!("/v2/r/manifests/{d}")).expect(200, None);
    assert_eq!(
        c.get("/v2/r/tags/list").json()["tags"],
        serde_json::json!(["other", "two"])
    );
    c.call("DELETE", "/v2/r/manifests/one", &[], None)
        .expect(404, Some("MANIFEST_UNKNOWN"));

    c.call("DELETE", &format!("/v2/r/manifests/{d}"), &[], None)
        .expect(202, None);
    c.get(&format!("/v2/r/manifests/{d}"))
        .expect(404, Some("MANIFEST_UNKNOWN"));
    c.get("/v2/r/manifests/two")
        .expect(404, Some("MANIFEST_UNKNOWN"));
    assert_eq!(
        c.get("/v2/r/tags/list").json()["tags"],
        serde_json::json!(["other"])
    );
    c.call("DELETE", &format!("/v2/r/manifests/{d}"), &[], None)
        .expect(404, Some("MANIFEST_UNKNOWN"));
    c.get("/v2/nobody/manifests/latest").expect(404, None);
}

#[test]
fn referrers() {
    let s = Server::start();
    let c = Client::new(&s);
    let (subject, sd) = c.push_image("r", "app", "subject");
    let empty = c.push_blob("r", b"{}");
    let referrer = |artifact: &str, seed: &str| {
        let layer = c.push_blob("r", seed.as_bytes());
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{artifact}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/octet-stream","digest":"{layer}","size":{}}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{sd}","size":{}}},"annotations":{{"org.example":"{seed}"}}}}"#,
            seed.len(),
            subject.len()
        );
        let r = c.put_manifest("r", &sha256(m.as_bytes()), OCI_MANIFEST, m.as_bytes());
        r.expect(201, None);
        assert_eq!(r.header("oci-subject"), Some(sd.as_str()));
        sha256(m.as_bytes())
    };
    let sig = referrer("application/vnd.example.sig", "sig");
    let sbom = referrer("application/vnd.example.sbom", "sbom");

    let r = c.get(&format!("/v2/r/referrers/{sd}"));
    r.expect(200, None);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    let list = r.json();
    let digests: Vec<&str> = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests.len(), 2);
    assert!(digests.contains(&sig.as_str()) && digests.contains(&sbom.as_str()));
    let r = c.get(&format!(
        "/v2/r/referrers/{sd}?artifactType=application/vnd.example.sbom"
    ));
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let m = &r.json()["manifests"];
    assert_eq!(m.as_array().unwrap().len(), 1);
    assert_eq!(m[0]["digest"], sbom.as_str());
    assert_eq!(m[0]["artifactType"], "application/vnd.example.sbom");
    assert_eq!(m[0]["annotations"]["org.example"], "sbom");
    // Unknown subject: an empty list, not an error.
    let r = c.get(&format!("/v2/r/referrers/{}", sha256(b"none")));
    r.expect(200, None);
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    c.get("/v2/r/referrers/sha256:bad")
        .expect(400, Some("DIGEST_INVALID"));
    // Deleting a referrer removes it from the list; a restart rebuilds the list from disk.
    c.call("DELETE", &format!("/v2/r/manifests/{sig}"), &[], None)
        .expect(202, None);
    let r = c.get(&format!("/v2/r/referrers/{sd}"));
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn referrers_rebuilt_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let (sd, rd);
    {
        let s = Server::start_at(&root, Opts::default());
        let c = Client::new(&s);
        let (subject, d) = c.push_image("r", "app", "subject");
        sd = d;
        let cd = c.push_blob("r", b"{}");
        let m = image_manifest(&cd, 2, &[], Some((&sd, subject.len())));
        c.put_manifest("r", "sig", OCI_MANIFEST, m.as_bytes())
            .expect(201, None);
        rd = sha256(m.as_bytes());
    }
    let s = Server::start_at(&root, Opts::default());
    let c = Client::new(&s);
    let r = c.get(&format!("/v2/r/referrers/{sd}"));
    assert_eq!(r.json()["manifests"][0]["digest"], rd.as_str());
}

#[test]
fn concurrent_put_and_delete_never_leave_a_dangling_tag() {
    let s = Server::start();
    let c = Client::new(&s);
    let (bytes, d) = c.push_image("r", "seed", "same content");
    let mut workers = vec![];
    for w in 0..8 {
        let (addr, bytes, d) = (s.addr.clone(), bytes.clone(), d.clone());
        workers.push(std::thread::spawn(move || {
            let c = Client::for_addr(&addr);
            for i in 0..200 {
                if w % 2 == 0 {
                    let r = c.put_manifest("r", &format!("t{}", i % 5), OCI_MANIFEST, &bytes);
                    assert_eq!(r.status, 201);
                } else {
                    let r = c.call("DELETE", &format!("/v2/r/manifests/{d}"), &[], None);
                    assert!(r.status == 202 || r.status == 404, "{}", r.status);
                }
            }
        }));
    }
    for w in workers {
        w.join().unwrap();
    }
    // Every tag still listed resolves to a manifest that is there.
    for tag in c.get("/v2/r/tags/list").json()["tags"].as_array().unwrap() {
        let tag = tag.as_str().unwrap();
        let r = c.get(&format!("/v2/r/manifests/{tag}"));
        assert_eq!(
            r.status, 200,
            "tag {tag} is listed but its manifest is gone"
        );
        let d = r.header("docker-content-digest").unwrap().to_string();
        c.get(&format!("/v2/r/manifests/{d}")).expect(200, None);
    }
}
