//! A start on a store that already holds thousands of repositories: the
//! server answers at once (its index of repositories is built in the
//! background), what is pushed while the index is being built is not lost
//! from the listings, and listings, once answered, hold everything.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

/// Write a store in Distribution's layout with `repos` repositories, each
/// with one tag `latest` naming the same small image.
fn write_store(root: &Path, repos: usize) -> String {
    let v2 = root.join("docker/registry/v2");
    let put = |rel: String, data: &[u8]| {
        let p = v2.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    let blob = |data: &[u8]| {
        let d = sha256(data);
        put(format!("blobs/sha256/{}/{}/data", &d[7..9], &d[7..]), data);
        d
    };
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"one layer for every repository";
    let (cd, ld) = (blob(config), blob(layer));
    let manifest = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None);
    let md = blob(manifest.as_bytes());
    for i in 0..repos {
        let repo = format!("repositories/many/r{i:05}");
        for d in [&cd, &ld] {
            put(
                format!("{repo}/_layers/sha256/{}/link", &d[7..]),
                d.as_bytes(),
            );
        }
        put(
            format!("{repo}/_manifests/revisions/sha256/{}/link", &md[7..]),
            md.as_bytes(),
        );
        put(
            format!("{repo}/_manifests/tags/latest/current/link"),
            md.as_bytes(),
        );
        put(
            format!(
                "{repo}/_manifests/tags/latest/index/sha256/{}/link",
                &md[7..]
            ),
            md.as_bytes(),
        );
    }
    md
}

#[test]
fn a_start_on_a_large_store_answers_at_once_and_loses_no_write_from_the_listings() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let n = 4000;
    let digest = write_store(&root, n);
    let started = Instant::now();
    let s = Server::start_at(&root, Opts::default());
    let c = Client::new(&s);
    // Pulls and pushes, while the index may still be being built.
    let r = c.get("/v2/many/r00007/manifests/latest");
    r.expect(200, None);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    c.get("/v2/many/r00007/manifests/nope")
        .expect(404, Some("MANIFEST_UNKNOWN"));
    c.get("/v2/many/none/manifests/latest")
        .expect(404, Some("NAME_UNKNOWN"));
    let manifest = c.get("/v2/many/r00002/manifests/latest").body;
    c.put_manifest("many/r00002", "pushed", OCI_MANIFEST, &manifest)
        .expect(201, None);
    c.put_manifest("fresh/repo", "1", OCI_MANIFEST, &manifest)
        .expect(400, Some("MANIFEST_BLOB_UNKNOWN"));
    c.push_image("fresh/repo", "1", "fresh");
    c.call("DELETE", "/v2/many/r00003/manifests/latest", &[], None)
        .expect(202, None);
    eprintln!("first answers within {:?} of the start", started.elapsed());
    let ready = c.get("/readyz");
    ready.expect(200, None);
    // Listings wait for the index, then hold everything: what was on disk
    // and what was written meanwhile.
    let mut repos = 0;
    let mut last = String::new();
    loop {
        let page = c.get(&format!("/v2/_catalog?n=1000&last={last}"));
        page.expect(200, None);
        let names = page.json()["repositories"].as_array().unwrap().clone();
        let Some(l) = names.last() else { break };
        repos += names.len();
        last = l.as_str().unwrap().to_string();
    }
    assert_eq!(repos, n + 1, "{repos} repositories listed");
    let tags = c.get("/v2/many/r00002/tags/list").json();
    assert_eq!(tags["tags"], serde_json::json!(["latest", "pushed"]));
    let tags = c.get("/v2/fresh/repo/tags/list").json();
    assert_eq!(tags["tags"], serde_json::json!(["1"]));
    let tags = c.get("/v2/many/r00003/tags/list").json();
    assert_eq!(tags["tags"], serde_json::json!([]), "{tags}");
    assert_eq!(
        String::from_utf8_lossy(&c.get("/readyz").body).trim(),
        "ready"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}
